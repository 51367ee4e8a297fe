"""Claim: on a DiT-XL/2-shaped model our caches reach their ideal speedup as diffusers' do.

A diffusers ``DiTTransformer2DModel`` with DiT-XL/2's shape (28 blocks, width 1152, 16
heads, patch 2, 4 latent channels at 32x32) and random weights: the figures are timing
and overhead only (random weights say nothing about quality). DDIM (``--steps``, 50),
class-conditional with classifier-free guidance (the batch doubled), bfloat16 on GPUs and
float32 on CPUs. At each interval ``k`` every method computes in full about one step in
``k`` after the same 2 warm-up steps:

- ours, output level: ``FORA(k)`` through the sampler's ``cache=`` (the transformer is
  not called on reuse steps);
- ours, hooked on the block stack (``integrators.diffusers.apply_cache``):
  ``BlockStack(FORA(k))`` and ``BlockStack(TaylorSeer(order=1, interval=k))``;
- diffusers: ``TaylorSeerCache(cache_interval=k)`` on every transformer block, order 0
  (plain reuse) and 1.

Per method: the measured fraction of steps on which the last block's attention ran
(``full_fraction``), the speedup over uncached generation (timings interleaved with
uncached ones after warm-up; on a GPU read after ``torch.cuda.synchronize``), the ideal
speedup ``1 / full_fraction``, ``efficiency = speedup / ideal`` (1 means no overhead),
and the overhead per step in milliseconds, ``(t - full_fraction t_uncached) / steps``.
Prints one JSON line per method and a summary line.

    python benchmarks/diffusion_dit_xl.py --device cuda                # the GPU figures
    python benchmarks/diffusion_dit_xl.py --layers 4 --sample-size 16  # a CPU-sized run
    python benchmarks/diffusion_dit_xl.py --quick                      # a smoke run
"""

import argparse
import json
import statistics

import torch
from diffusers import DiTTransformer2DModel
from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
from diffusers.utils import logging as diffusers_logging
from diffusion_cache import Denoiser, Method, Run, timed, with_method
from timing import device_sync

from integrators.diffusers import apply_cache
from integrators.methods import FORA, BlockStack, TaylorSeer
from integrators.samplers import spaced_timesteps

WARMUP_STEPS = 2
BLOCKS = [r"transformer_blocks\.\d+"]


def dit_xl(layers, sample_size, device, dtype):
    """DiT-XL/2's shape with ``layers`` blocks and random weights, in eval mode."""
    torch.manual_seed(0)
    model = DiTTransformer2DModel(
        num_attention_heads=16,
        attention_head_dim=72,
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        sample_size=sample_size,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )
    return model.to(device=device, dtype=dtype).eval()


def methods(intervals, dtype):
    out = []
    for k in intervals:
        out.append(Method(f"FORA(interval={k})", "ours", "output", FORA(k, warmup=WARMUP_STEPS)))
        for name, config in (
            (f"BlockStack(FORA(interval={k}))", FORA(k, warmup=WARMUP_STEPS)),
            (
                f"BlockStack(TaylorSeer(order=1, interval={k}))",
                TaylorSeer(order=1, interval=k, warmup=WARMUP_STEPS),
            ),
        ):
            attach = lambda m, c=config: apply_cache(m, BlockStack(c))  # noqa: E731
            out.append(Method(name, "ours", "stack", attach=attach, ours_hooks=True))
        for order in (0, 1):
            config = TaylorSeerCacheConfig(
                cache_interval=k,
                max_order=order,
                disable_cache_before_step=WARMUP_STEPS,
                taylor_factors_dtype=dtype,
                cache_identifiers=BLOCKS,
            )
            attach = lambda m, c=config: apply_taylorseer_cache(m, c)  # noqa: E731
            name = f"diffusers TaylorSeerCache(interval={k}, order={order})"
            out.append(Method(name, "diffusers", "blocks", attach=attach))
    return out


class FullSteps:
    """Counts the calls of the last block's attention: the steps computed in full."""

    def __init__(self, transformer):
        self.calls = 0
        attention = transformer.transformer_blocks[-1].attn1
        attention.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))

    def fraction(self, run, method):
        self.calls = 0
        with_method(method, run, lambda: run.generate(method.cache))
        return self.calls / len(run.timesteps)


def measure(method, run, counter, args):
    fraction = counter.fraction(run, method)
    plain_ms, cached_ms, _, _ = timed(method, run, args.repeats, args.warmup)
    speedup = plain_ms / cached_ms
    ideal = 1 / fraction
    return {
        "method": method.name,
        "family": method.family,
        "level": method.level,
        "full_fraction": round(fraction, 4),
        "uncached_s": round(plain_ms / 1000, 4),
        "time_s": round(cached_ms / 1000, 4),
        "speedup": round(speedup, 3),
        "ideal_speedup": round(ideal, 3),
        "efficiency": round(speedup / ideal, 3),
        "overhead_ms_per_step": round((cached_ms - fraction * plain_ms) / len(run.timesteps), 3),
    }


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--sample-size", type=int, default=32, help="latent side (32: 256 px)")
    parser.add_argument("--batch", type=int, default=8, help="images (doubled by guidance)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--intervals", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed pairs per method")
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    args = parser.parse_args()
    if args.dtype is None:
        args.dtype = "bfloat16" if torch.device(args.device).type == "cuda" else "float32"
    if args.quick:
        args.layers, args.sample_size, args.batch, args.steps = 2, 8, 1, 8
        args.intervals, args.repeats, args.warmup = [3], 1, 0
    return args


def main():
    args = parse()
    diffusers_logging.set_verbosity_error()  # its note on casting with .to(): no module here
    dtype = getattr(torch, args.dtype)
    transformer = dit_xl(args.layers, args.sample_size, args.device, dtype)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 4, args.sample_size, args.sample_size)
    x_T = torch.randn(shape, generator=generator).to(args.device, dtype)
    labels = (torch.arange(args.batch) % 1000).to(args.device)
    timesteps = spaced_timesteps(args.steps)
    run = Run(Denoiser(transformer), x_T, labels, timesteps, 4.0, device_sync(args.device))
    counter = FullSteps(transformer)
    settings = {
        "device": args.device,
        "dtype": args.dtype,
        "layers": args.layers,
        "tokens": (args.sample_size // 2) ** 2,
        "batch": args.batch,
        "steps": args.steps,
    }
    records = []
    for method in methods(args.intervals, dtype):
        records.append({**measure(method, run, counter, args), **settings})
        print(json.dumps(records[-1]), flush=True)
    efficiency = {
        family: [r["efficiency"] for r in records if r["family"] == family]
        for family in ("ours", "diffusers")
    }
    summary = {
        "summary": "diffusion_dit_xl",
        **settings,
        "uncached_s": statistics.median(r["uncached_s"] for r in records),
        "median_efficiency": {k: round(statistics.median(v), 3) for k, v in efficiency.items()},
        "best_speedup": max(records, key=lambda r: r["speedup"])["method"],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
