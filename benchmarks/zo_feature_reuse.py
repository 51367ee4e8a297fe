"""Claim: feature reuse makes a ResNet-20 CGE estimate at least 2.5x faster than naive CGE.

ResNet-20 (training mode) on a random CIFAR-shaped batch; every variant estimates the
same fixed coordinates (drawn uniformly over all parameters, ``SparseMask.uniform``).
For each input batch size: seconds per estimate for naive CGE (a full forward per
coordinate), feature reuse (restart at the coordinate's stage, one query at a time), and
reuse with the default ``query_batch=None`` (each parameter's query batch measured on its
first query chunks, :mod:`zo.tuning`; timed once settled, after warm-up estimates) and
fixed query batches, which show what batching would do here. "Never slower" allows 5%
of timing noise: the default either runs queries one at a time (then it is the reuse
variant's code) or a batch measured to be at least 20% faster. Beside
the measured speedup: the theoretical saving of reuse for the same coordinates from the
per-stage cost profile (measured stage times, and FLOP counts). Variants are
interleaved in rounds, in reversed order every other round; medians. Prints one JSON line.

    python benchmarks/zo_feature_reuse.py                  # this CPU, 1 thread
    python benchmarks/zo_feature_reuse.py --device cuda    # a GPU
    python benchmarks/zo_feature_reuse.py --quick          # smoke run (seconds)
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from timing import device_sync, median_ms

import zo
from zo.stages import frozen_running_stats, locate_parameters, stage_inputs


def reuse_saving(costs, counts):
    """Naive over reuse cost of one estimate: one unperturbed forward, one query each."""
    total = sum(costs)
    naive = total * (1 + sum(counts))
    reuse = total + sum(n * sum(costs[k:]) for k, n in enumerate(counts))
    return naive / reuse


def measure(batch_size, args, device, sync):
    torch.manual_seed(0)
    model = zo.ResNet20().to(device)
    inputs = torch.randn(batch_size, 3, 32, 32, device=device)
    targets = torch.randint(0, 10, (batch_size,), device=device)
    mask = zo.SparseMask.uniform(model, args.coordinates, seed=0)
    stages = zo.model_stages(model)
    where = locate_parameters(model, stages)
    counts = [0] * len(stages)
    for name, count in mask.counts.items():
        counts[where[name][0]] += count

    def cge(reuse, query_batch):
        return zo.CGE(
            model, F.cross_entropy, feature_reuse=reuse, sparsity=mask, query_batch=query_batch
        )

    with torch.no_grad(), frozen_running_stats(stages):
        states = stage_inputs(stages, inputs)
    variants = {"naive": cge(False, 1), "reuse": cge(True, 1), "default": cge(True, None)}
    variants.update({f"batched_q{b}": cge(True, b) for b in args.query_batches})

    def run(estimator):
        model.zero_grad(set_to_none=True)
        estimator.estimate(inputs, targets)
        sync()

    tuning_estimates = 0
    while tuning_estimates == 0 or not variants["default"].query_batch_settled:
        run(variants["default"])  # measures the query batches on real queries
        tuning_estimates += 1
    for estimator in variants.values():  # warm-up: first calls of vmap are slow
        run(estimator)
    times = {name: [] for name in variants}
    for round_ in range(args.rounds):  # the order flips each round: no variant always follows
        order = list(variants.items())
        for name, estimator in order[::-1] if round_ % 2 else order:
            times[name].append(median_ms(lambda e=estimator: run(e), args.repeats) / 1000)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    stage_ms = [1000 * t for t in zo.stage_times(stages, states, repeats=5)]
    result = {f"{name}_s": round(value, 4) for name, value in seconds.items()}
    chosen = list(variants["default"].query_batches.values())
    result["default_query_batches"] = {b: chosen.count(b) for b in sorted(set(chosen))}
    result["default_tuning_estimates"] = tuning_estimates
    result["reuse_speedup"] = round(seconds["naive"] / seconds["reuse"], 3)
    for name in seconds:
        if name.startswith("batched") or name == "default":
            result[f"{name}_gain"] = round(seconds["reuse"] / seconds[name], 3)
    result["theoretical_saving_stage_times"] = round(reuse_saving(stage_ms, counts), 3)
    result["theoretical_saving_flops"] = round(
        reuse_saving(zo.stage_costs(stages, inputs), counts), 3
    )
    result["stage_ms"] = [round(t, 3) for t in stage_ms]
    result["coordinates_per_stage"] = counts
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 8])
    parser.add_argument("--coordinates", type=int, default=64)
    parser.add_argument("--query-batches", type=int, nargs="*", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.coordinates, args.query_batches = [8], 8, [4]
        args.rounds = args.repeats = 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = device_sync(device) or (lambda: None)
    results = {f"batch_{n}": measure(n, args, device, sync) for n in args.batch_sizes}
    speedups = [r["reuse_speedup"] for r in results.values()]
    gains = [r["default_gain"] for r in results.values()]
    print(
        json.dumps(
            {
                "benchmark": "zo_feature_reuse",
                "device": str(device),
                "threads": args.threads,
                "coordinates": args.coordinates,
                "rounds": args.rounds,
                "repeats": args.repeats,
                "results": results,
                "reuse_speedup_min": min(speedups),
                "reuse_target_2.5x_met": min(speedups) >= 2.5,
                "default_gain_min": min(gains),
                "default_never_slower": min(gains) >= 0.95,
            }
        )
    )


if __name__ == "__main__":
    main()
