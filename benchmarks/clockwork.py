"""Claim: Clockwork's distilled adaptor beats plain low-resolution reuse at equal full steps.

The shipped digits UNet (``python -m integrators.digits.train_unet``) samples
class-conditionally with guided DDIM (the steps its adaptor was distilled for), in three
ways, all from the same starting noise:

- uncached: every step runs the whole UNet;
- DeepCache(k): every ``k``-th step runs the whole UNet; the others run only the outer
  level, with the inner levels' output of the last full step;
- Clockwork(k): the same full steps; the others run the outer level with the shipped
  adaptor (``python -m integrators.digits.distill_clockwork``) predicting the inner
  levels' output.

Per setting: wall-clock speedup over uncached (runs interleaved with uncached ones,
medians), the fraction of uncached FLOPs (``torch.utils.flop_counter``, adaptor
included), PSNR and SSIM of the samples against the uncached ones, classifier accuracy,
and the Fréchet distance of the classifier's features to the real digits (lower is
better). The summary gives Clockwork's best setting (the fastest whose accuracy is within
0.05 of uncached) with DeepCache at the same interval beside it, and the Fréchet distance
of uncached samples from other starting noise (how far two equally good sample sets lie
apart at this sample size). Prints one JSON line per setting and a summary line.

    python benchmarks/clockwork.py            # the README's figures
    python benchmarks/clockwork.py --quick    # a few minutes
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from timing import median_ms
from torch.utils.flop_counter import FlopCounterMode

from integrators.diffusers import apply_cache, cache_stats, remove_cache
from integrators.digits import NUM_CLASSES, digits, load_classifier
from integrators.digits.distill_clockwork import GUIDANCE, SAMPLER_STEPS
from integrators.digits.metrics import score_samples
from integrators.digits.models import guided_ddim
from integrators.digits.unet import CLOCKWORK_DIR, UNET_DIR, load_unet
from integrators.methods import Clockwork, DeepCache
from integrators.methods.adaptor import load_adaptor


def generate(unet, labels, x_T, steps, method):
    """One guided DDIM generation, with ``method`` attached to the UNet (or none)."""
    if method is not None:
        apply_cache(unet, method)
    try:
        images = guided_ddim(unet, labels, x_T, steps, GUIDANCE)
        stats = cache_stats(unet)["default"] if method is not None else None
    finally:
        if method is not None:
            remove_cache(unet)
    return images, stats


def quality(images, reference, labels, classifier, real_features):
    scores = score_samples(images, labels, classifier, real_features, reference)
    return {
        "psnr_db": round(min(100.0, scores["psnr_db"]), 2),
        "ssim": round(scores["ssim"], 4),
        "accuracy": round(scores["accuracy"], 4),
        "frechet_distance": round(scores["frechet_distance"], 2),
    }


def generation_flops(unet, labels, x_T, steps, method):
    """FLOPs of one generation of the first ten samples (they scale with the batch)."""
    with FlopCounterMode(display=False) as counter:
        generate(unet, labels[:10], x_T[:10], steps, method)
    return counter.get_total_flops()


def measure(name, method, context, args, scoring, uncached_flops):
    """Interleaved timings against uncached, and the quality of the setting's samples."""
    unet, labels, x_T = context
    plain, timed = [], []
    for _ in range(args.repeats):
        plain.append(median_ms(lambda: generate(unet, labels, x_T, args.steps, None), 1))
        timed.append(median_ms(lambda: generate(unet, labels, x_T, args.steps, method), 1))
    images, stats = generate(unet, labels, x_T, args.steps, method)
    speedup = statistics.median(plain) / statistics.median(timed)
    flops = generation_flops(*context, args.steps, method) / uncached_flops
    record = {"setting": name, "speedup": round(speedup, 3), "flops_fraction": round(flops, 4)}
    if stats is not None:
        record["full_steps"], record["cheap_steps"] = stats.full_steps, stats.reuse_steps
    return record | quality(images, *scoring)


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=SAMPLER_STEPS, help="DDIM steps")
    parser.add_argument("--intervals", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unet", type=Path, default=UNET_DIR)
    parser.add_argument("--adaptor", type=Path, default=CLOCKWORK_DIR)
    parser.add_argument("--quick", action="store_true", help="fewer samples and settings")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.intervals, args.repeats = 50, [2, 3], 1
    return args


def summarise(records, other_seed_frechet):
    by_name = {r["setting"]: r for r in records}
    uncached = by_name["uncached"]
    clockworks = [r for r in records if r["setting"].startswith("Clockwork")]

    def deepcache(clockwork):
        return by_name[clockwork["setting"].replace("Clockwork", "DeepCache")]

    good = [r for r in clockworks if r["accuracy"] >= uncached["accuracy"] - 0.05] or clockworks
    best = max(good, key=lambda r: r["speedup"])
    plain = deepcache(best)
    wins = sum(r["psnr_db"] > deepcache(r)["psnr_db"] for r in clockworks)
    return {
        "summary": "clockwork",
        "best": best["setting"],
        "speedup": best["speedup"],
        "flops_fraction": best["flops_fraction"],
        "psnr_db": best["psnr_db"],
        "ssim": best["ssim"],
        "accuracy": best["accuracy"],
        "frechet_distance": best["frechet_distance"],
        "uncached_accuracy": uncached["accuracy"],
        "uncached_frechet_distance": uncached["frechet_distance"],
        "uncached_frechet_distance_other_noise": other_seed_frechet,
        "deepcache_speedup": plain["speedup"],
        "deepcache_flops_fraction": plain["flops_fraction"],
        "deepcache_psnr_db": plain["psnr_db"],
        "deepcache_accuracy": plain["accuracy"],
        "deepcache_frechet_distance": plain["frechet_distance"],
        "settings_beating_deepcache_on_psnr": f"{wins} of {len(clockworks)}",
    }


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    unet = load_unet(args.unet)
    adaptor = load_adaptor(args.adaptor, unet)
    classifier = load_classifier()
    labels = torch.arange(args.samples) % NUM_CLASSES
    x_T = torch.randn(args.samples, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        real_features = classifier.features(digits()[0])
    context = (unet, labels, x_T)
    reference, _ = generate(unet, labels, x_T, args.steps, None)
    scoring = (reference, labels, classifier, real_features)
    uncached_flops = generation_flops(*context, args.steps, None)
    record = measure("uncached", None, context, args, scoring, uncached_flops)
    records = [record]
    print(json.dumps(record), flush=True)
    for k in args.intervals:
        methods = {f"DeepCache({k})": DeepCache(k), f"Clockwork({k})": Clockwork(adaptor, k)}
        for name, method in methods.items():
            record = measure(name, method, context, args, scoring, uncached_flops)
            records.append(record)
            print(json.dumps(record), flush=True)
    other_x_T = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(1))
    other, _ = generate(unet, labels, other_x_T, args.steps, None)
    other_seed = quality(other, *scoring)["frechet_distance"]
    print(json.dumps(summarise(records, other_seed)), flush=True)


if __name__ == "__main__":
    main()
