"""Claims: diffusion caching, our methods against diffusers' own, on the shipped digits DiT.

Same model, seeds, sampler (DDIM), step count and guidance for every method:
- ours: FORA, AB-Cache, TaylorSeer, TeaCache, ERTACache, HyCa and the CFG cache through
  the sampler's ``cache=``; BWCache, Sortblock, FirstBlockCache and ProfilingDiT through
  ``integrators.diffusers.apply_cache``;
- diffusers: FirstBlockCache, TaylorSeerCache (on whole blocks), MagCache,
  PyramidAttentionBroadcast and FasterCache on the same transformer.

Figures per method: fraction of full evaluations (ours), fraction of the uncached FLOPs,
wall-clock speedup (timings interleaved with uncached runs), PSNR and SSIM against the
uncached samples, classifier accuracy and Fréchet distance in the classifier's features
against the real digits. Calibrations (ERTACache, HyCa, TeaCache, ProfilingDiT, MagCache)
use a separate batch of seeds. Target: at PSNR >= 30 dB our best method is >= 2.5x faster
than uncached and at least as fast as every diffusers method reaching that PSNR.

Prints one JSON line per method and a summary line; writes them to ``OUT/results.jsonl``
and the Pareto plot (PSNR against speedup) to ``OUT/pareto.png``.

Timings: each method's generations alternate with uncached ones (``--repeats`` pairs,
medians), after ``--warmup`` untimed pairs (default 1 on a GPU, whose clocks and kernel
caches need it, 0 on a CPU); on a GPU the clock is read after ``torch.cuda.synchronize``.

    python benchmarks/diffusion_cache.py                 # the README's figures
    python benchmarks/diffusion_cache.py --quick         # a short check of the script
    python benchmarks/diffusion_cache.py --device cuda   # on a GPU
"""

import argparse
import itertools
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    HookRegistry,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
    apply_faster_cache,
    apply_first_block_cache,
    apply_mag_cache,
    apply_pyramid_attention_broadcast,
    apply_taylorseer_cache,
)
from diffusers.models.cache_utils import CacheMixin
from timing import device_sync, median_ms
from torch.utils.flop_counter import FlopCounterMode

from integrators.diffusers import apply_cache, cache_stats, find_blocks, remove_cache
from integrators.digits import (
    NULL_CLASS,
    NUM_CLASSES,
    denoiser,
    digits,
    frechet_distance,
    load_classifier,
    load_dit,
    noise_schedule,
    psnr,
    ssim,
)
from integrators.digits.models import CLASSIFIER_FILE, DIT_DIR
from integrators.methods import (
    FORA,
    ABCache,
    BlockRecorder,
    BlockStack,
    BWCache,
    CFGCache,
    ERTACache,
    FirstBlockCache,
    HyCa,
    ProfilingDiT,
    Sortblock,
    TaylorSeer,
    TeaCache,
)
from integrators.samplers import DDIM, Recorder, spaced_timesteps

CONTEXT = "cond"  # diffusers' block caches need a cache context; the batch holds both branches
PSNR_CAP = 100.0  # reported for samples identical to the uncached ones


class Denoiser:
    """The DiT as the sampler's model: one batched call per step, in one cache context."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.model_fn = denoiser(transformer)
        self.timestep = 999.0

    def __call__(self, x, t, labels):
        self.timestep = t
        with CacheMixin.cache_context(self.transformer, CONTEXT):
            return self.model_fn(x, t, labels)


@dataclass
class Run:
    """One batch of seeds and labels, sampled with the same settings for every method."""

    denoiser: Denoiser
    x_T: torch.Tensor
    labels: torch.Tensor
    timesteps: list
    scale: float
    sync: Callable | None = None

    def generate(self, cache=None):
        HookRegistry.check_if_exists_or_initialize(self.denoiser.transformer).reset_stateful_hooks()
        sampler = DDIM(noise_schedule())
        with torch.no_grad():
            images = sampler.sample(
                self.denoiser,
                self.x_T,
                self.timesteps,
                cache=cache,
                cond=self.labels,
                uncond=torch.full_like(self.labels, NULL_CLASS),
                guidance_scale=self.scale,
            )
        return images.clamp(-1, 1), sampler.stats


@dataclass
class Method:
    name: str
    family: str
    level: str
    cache: object = None  # a sampler cache (ours, output and guidance level)
    attach: Callable | None = None  # hooks on the transformer
    ours_hooks: bool = False


def make_run(transformer, samples, steps, scale, seed):
    device = next(transformer.parameters()).device
    labels = (torch.arange(samples) % NUM_CLASSES).to(device)
    size = transformer.config.sample_size
    x_T = torch.randn(samples, 1, size, size, generator=torch.Generator().manual_seed(seed))
    timesteps = spaced_timesteps(steps)
    return Run(Denoiser(transformer), x_T.to(device), labels, timesteps, scale, device_sync(device))


def mag_ratios(calibration):
    """MagCache's per-step ratio of the block stack's residual norms (its calibration)."""
    blocks = [block for _, block in find_blocks(calibration.denoiser.transformer)]
    inputs, residuals = [], []
    first = blocks[0].register_forward_pre_hook(
        lambda m, args, kw: inputs.append(args[0] if args else kw["hidden_states"]),
        with_kwargs=True,
    )
    last = blocks[-1].register_forward_hook(lambda m, args, out: residuals.append(out - inputs[-1]))
    calibration.generate()
    first.remove()
    last.remove()
    ratios = [1.0]
    for previous, current in itertools.pairwise(residuals):
        norms = current.norm(dim=-1) / (previous.norm(dim=-1) + 1e-8)
        ratios.append(float(norms.mean()))
    return ratios


def calibrate(calibration):
    """Everything our calibrated methods and diffusers' MagCache need, from one batch."""
    outputs = Recorder()  # the guided denoiser outputs, for methods in the sampler
    calibration.generate(outputs)
    stack = BlockRecorder()  # per-block profile and the block stack's residuals
    transformer = calibration.denoiser.transformer
    apply_cache(transformer, stack)
    calibration.generate()
    remove_cache(transformer)
    return {"outputs": outputs, "stack": stack, "mag_ratios": mag_ratios(calibration)}


def output_configs(inputs, outputs, times):
    """Output-level methods, calibrated (where they need it) on one recorded trajectory."""
    rescale = TeaCache.fit_rescale(inputs, outputs, degree=2)
    return (
        [(f"FORA(interval={k})", FORA(k)) for k in (2, 3)]
        + [
            (f"ABCache(order={o}, interval={k})", ABCache(o, k, warmup=o))
            for o, k in ((2, 2), (2, 3), (2, 4), (3, 3), (3, 4))
        ]
        + [
            (f"TaylorSeer(order={o}, interval={k})", TaylorSeer(o, k, warmup=o + 1))
            for o, k in ((1, 3), (2, 3), (2, 4))
        ]
        + [
            (f"TeaCache(threshold={tol})", TeaCache(tol, rescale=rescale))
            for tol in (0.05, 0.1, 0.2, 0.4)
        ]
        + [
            (f"ERTACache(tol={tol})", ERTACache.calibrate(outputs, times, tol))
            for tol in (0.03, 0.06, 0.1, 0.15)
        ]
        + [(f"HyCa(interval={k})", HyCa.calibrate(outputs, times, k, warmup=2)) for k in (3, 4)]
    )


def block_configs(scores):
    return (
        [(f"BWCache(tol={tol})", BWCache(tol)) for tol in (0.05, 0.1, 0.2)]
        + [(f"FirstBlockCache(tol={tol})", FirstBlockCache(tol)) for tol in (0.05, 0.1, 0.2)]
        + [(f"Sortblock(fraction={f})", Sortblock(f, refresh=5)) for f in (0.2, 0.5)]
        + [
            (f"ProfilingDiT(fraction={f})", ProfilingDiT.from_profile(scores, f, interval=3))
            for f in (0.2, 0.5)
        ]
    )


def our_methods(calibrated, quick):
    sampled, stack = calibrated["outputs"], calibrated["stack"]
    out = [
        Method(name, "ours", "output", config)
        for name, config in output_configs(sampled.inputs, sampled.outputs, sampled.times)
    ]
    out += [
        Method(f"CFGCache(interval={k})", "ours", "guidance", CFGCache(k, warmup=2)) for k in (2, 3)
    ]
    hooked = [
        (f"BlockStack({name})", "stack", BlockStack(config))
        for name, config in output_configs(stack.inputs, stack.residuals, stack.times)
    ] + [(name, "blocks", config) for name, config in block_configs(stack.scores())]
    out += [
        Method(name, "ours", level, attach=lambda m, c=config: apply_cache(m, c), ours_hooks=True)
        for name, level, config in hooked
    ]
    return out[::4] if quick else out


def diffusers_methods(calibrated, run, steps, quick):
    now = lambda: run.denoiser.timestep  # noqa: E731
    out = [
        Method(
            f"diffusers FirstBlockCache(threshold={tol})",
            "diffusers",
            "blocks",
            attach=lambda m, t=tol: apply_first_block_cache(m, FirstBlockCacheConfig(threshold=t)),
        )
        for tol in (0.05, 0.1, 0.2)
    ]
    out += [
        Method(
            f"diffusers TaylorSeerCache(interval={k})",
            "diffusers",
            "blocks",
            attach=lambda m, k=k: apply_taylorseer_cache(
                m,
                TaylorSeerCacheConfig(
                    cache_interval=k,
                    max_order=1,
                    disable_cache_before_step=3,
                    taylor_factors_dtype=torch.float32,
                    cache_identifiers=[r"transformer_blocks\.\d+"],
                ),
            ),
        )
        for k in (3, 5)
    ]
    out += [
        Method(
            f"diffusers MagCache(threshold={tol})",
            "diffusers",
            "blocks",
            attach=lambda m, t=tol: apply_mag_cache(
                m,
                MagCacheConfig(
                    threshold=t,
                    max_skip_steps=3,
                    retention_ratio=0.2,
                    num_inference_steps=steps,
                    mag_ratios=calibrated["mag_ratios"],
                ),
            ),
        )
        for tol in (0.06, 0.12, 0.24)
    ]
    out += [
        Method(
            f"diffusers PyramidAttentionBroadcast(skip={k})",
            "diffusers",
            "attention",
            attach=lambda m, k=k: apply_pyramid_attention_broadcast(
                m,
                PyramidAttentionBroadcastConfig(
                    spatial_attention_block_skip_range=k,
                    spatial_attention_timestep_skip_range=(100, 800),
                    current_timestep_callback=now,
                ),
            ),
        )
        for k in (2, 3)
    ]
    out += [
        Method(
            f"diffusers FasterCache(uncond_skip={k})",
            "diffusers",
            "guidance",
            attach=lambda m, k=k: apply_faster_cache(
                m,
                FasterCacheConfig(
                    spatial_attention_block_skip_range=2,
                    spatial_attention_timestep_skip_range=(-1, 681),
                    unconditional_batch_skip_range=k,
                    unconditional_batch_timestep_skip_range=(-1, 781),
                    attention_weight_callback=lambda _: 0.5,
                    tensor_format="BCHW",
                    current_timestep_callback=now,
                    _unconditional_conditional_input_kwargs_identifiers=[
                        "hidden_states",
                        "timestep",
                        "class_labels",
                    ],
                ),
            ),
        )
        for k in (2, 3)
    ]
    return out[::3] if quick else out


def strip_hooks(transformer):
    """Remove every hook from the transformer and its modules (ours and diffusers')."""
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            for name in list(registry.hooks)[::-1]:
                registry.remove_hook(name, recurse=False)


def flops(run, cache):
    with FlopCounterMode(display=False) as counter:
        run.generate(cache)
    return counter.get_total_flops()


def with_method(method, run, fn):
    """Call ``fn()`` with the method's hooks on the transformer, then strip every hook."""
    transformer = run.denoiser.transformer
    if method.attach is not None:
        method.attach(transformer)
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    try:
        return fn()
    finally:
        strip_hooks(transformer)


def cached_generation(method, run):
    """One timed generation with the method: milliseconds, images, cache statistics."""
    result = {}

    def generate():
        result["images"], result["stats"] = run.generate(method.cache)
        if method.ours_hooks:
            result["stats"] = cache_stats(run.denoiser.transformer)[CONTEXT]

    milliseconds = median_ms(generate, repeats=1, sync=run.sync)
    return milliseconds, result["images"], result["stats"]


def timed(method, run, repeats, warmup=0):
    """Median wall times of generations without and with the method, interleaved.

    The first ``warmup`` pairs are run and not counted.
    """
    plain, cached = [], []
    for _ in range(warmup + repeats):
        plain.append(median_ms(run.generate, repeats=1, sync=run.sync))
        milliseconds, images, stats = with_method(
            method, run, lambda: cached_generation(method, run)
        )
        cached.append(milliseconds)
    plain, cached = plain[warmup:], cached[warmup:]
    return statistics.median(plain), statistics.median(cached), images, stats


@dataclass
class Quality:
    reference: torch.Tensor
    classifier: torch.nn.Module
    labels: torch.Tensor
    real_features: torch.Tensor = field(repr=False)

    def __call__(self, images):
        images = images.float().cpu()
        with torch.no_grad():
            logits = self.classifier(images)
            features = self.classifier.features(images)
        to_unit = lambda z: (z + 1) / 2  # noqa: E731
        return {
            "psnr_db": min(PSNR_CAP, psnr(to_unit(images), to_unit(self.reference))),
            "ssim": ssim(to_unit(images), to_unit(self.reference)),
            "accuracy": float((logits.argmax(1) == self.labels).float().mean()),
            "frechet": frechet_distance(features, self.real_features),
        }


def measure(method, run, quality, baseline_flops, args):
    used = with_method(method, run, lambda: flops(run, method.cache)) if args.flops else math.nan
    plain_ms, cached_ms, images, stats = timed(method, run, args.repeats, args.warmup)
    return {
        "method": method.name,
        "family": method.family,
        "level": method.level,
        "full_fraction": None if stats is None else round(stats.full_fraction, 4),
        "flops_fraction": round(used / baseline_flops, 4) if args.flops else None,
        "time_s": round(cached_ms / 1000, 3),
        "speedup": round(plain_ms / cached_ms, 3),
        **{k: round(v, 4) for k, v in quality(images).items()},
    }


def summary(records, min_psnr, target):
    def best(family):
        ok = [r for r in records if r["family"] == family and r["psnr_db"] >= min_psnr]
        return max(ok, key=lambda r: r["speedup"], default=None)

    ours, theirs = best("ours"), best("diffusers")
    ours_speed = ours["speedup"] if ours else 0.0
    theirs_speed = theirs["speedup"] if theirs else 0.0
    return {
        "summary": f"best at PSNR >= {min_psnr} dB",
        "ours": ours and ours["method"],
        "ours_speedup": ours_speed,
        "diffusers": theirs and theirs["method"],
        "diffusers_speedup": theirs_speed,
        "target_met": ours_speed >= target and ours_speed >= theirs_speed,
    }


def pareto_front(points):
    """The points no other point beats in both speedup and PSNR, by increasing speedup."""
    front, best = [], -math.inf
    for point in sorted(points, key=lambda p: (-p[0], -p[1])):
        if point[1] > best:
            front.append(point)
            best = point[1]
    return front[::-1]


def pareto_plot(records, path, min_psnr):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [r["psnr_db"] for r in records if r["psnr_db"] < PSNR_CAP]
    ceiling = max(finite, default=40.0) + 5  # where samples identical to uncached are drawn
    fig, ax = plt.subplots(figsize=(9, 6))
    for family, marker, color in (("ours", "o", "C0"), ("diffusers", "s", "C1")):
        points = [
            (r["speedup"], min(r["psnr_db"], ceiling), r["method"].removeprefix("diffusers "))
            for r in records
            if r["family"] == family
        ]
        if not points:
            continue
        ax.scatter(
            *zip(*[p[:2] for p in points]), marker=marker, color=color, alpha=0.5, label=family
        )
        front = pareto_front(points)
        ax.plot(*zip(*[p[:2] for p in front]), color=color, alpha=0.8)
        for x, y, name in front:
            ax.annotate(
                name, (x, y), fontsize=7, color=color, xytext=(4, 4), textcoords="offset points"
            )
    ax.axhline(min_psnr, color="gray", linestyle="--", linewidth=1)
    ax.axhline(ceiling, color="gray", linestyle=":", linewidth=1)
    ax.text(ax.get_xlim()[0], ceiling, " identical to uncached", fontsize=7, va="bottom")
    ax.set_xlabel("wall-clock speedup over uncached")
    ax.set_ylabel("PSNR against uncached (dB)")
    ax.set_title(
        "Diffusion caching on the digits DiT (DDIM, same seeds); labels on the Pareto fronts"
    )
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DIT_DIR)
    parser.add_argument("--classifier", type=Path, default=CLASSIFIER_FILE)
    parser.add_argument("--out", type=Path, default=Path("runs/diffusion_cache"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--calibration-samples", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-psnr", type=float, default=30.0)
    parser.add_argument("--target-speedup", type=float, default=2.5)
    parser.add_argument("--no-flops", dest="flops", action="store_false")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed pairs per method (1 on GPUs, 0 on CPUs)"
    )
    parser.add_argument("--quick", action="store_true", help="few samples, steps and methods")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 1 if torch.device(args.device).type == "cuda" else 0
    if args.quick:
        args.steps, args.samples, args.calibration_samples, args.repeats = 10, 10, 4, 1
    return args


def main():
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformer = load_dit(args.model).to(args.device)
    classifier = load_classifier(args.classifier)  # quality is scored on the CPU
    run = make_run(transformer, args.samples, args.steps, args.guidance, seed=0)
    calibration = make_run(transformer, args.calibration_samples, args.steps, args.guidance, seed=1)
    real_images, _ = digits()
    with torch.no_grad():
        real_features = classifier.features(real_images)
    reference, _ = run.generate()
    reference = reference.float().cpu()
    quality = Quality(reference, classifier, run.labels.cpu(), real_features)
    baseline_flops = flops(run, None) if args.flops else math.nan
    calibrated = calibrate(calibration)
    methods = our_methods(calibrated, args.quick) + diffusers_methods(
        calibrated, run, args.steps, args.quick
    )
    settings = {
        "device": args.device,
        "sampler": "DDIM",
        "steps": args.steps,
        "samples": args.samples,
        "guidance": args.guidance,
    }
    uncached = {
        "method": "uncached",
        "family": "reference",
        "level": "-",
        "full_fraction": 1.0,
        "flops_fraction": 1.0,
        "time_s": None,
        "speedup": 1.0,
        **quality(reference),
        **settings,
    }
    print(json.dumps(uncached), flush=True)
    records = []
    for method in methods:
        record = {**measure(method, run, quality, baseline_flops, args), **settings}
        records.append(record)
        print(json.dumps(record), flush=True)
    final = summary(records, args.min_psnr, args.target_speedup)
    print(json.dumps(final), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in [uncached, *records, final]]
    (args.out / "results.jsonl").write_text("\n".join(lines) + "\n")
    pareto_plot(records, args.out / "pareto.png", args.min_psnr)


if __name__ == "__main__":
    main()
