"""Claim: splitting CGE queries over 2 processes (1 thread each) is at least 1.7x faster than 1.

ResNet-20 (training mode) on a random CIFAR-shaped batch, a fixed set of coordinates
(``SparseMask.uniform``), feature reuse, queries one at a time. Two processes joined by
gloo time, in interleaved rounds: both ranks splitting the coordinates by stage cost
("2 ranks x 1 thread"); rank 0 alone in a group of its own while rank 1 waits
("1 rank x 1 thread"); and rank 0 alone with 2 threads ("1 rank x 2 threads"). Medians;
the estimates of both ways are checked to agree. Prints one JSON line.

    python benchmarks/zo_scaling.py
    python benchmarks/zo_scaling.py --quick      # smoke run (seconds)
"""

import argparse
import json
import statistics
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from timing import median_ms

import zo


def gradients(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def worker(rank, args, store, result_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    solo = dist.new_group([0])
    torch.manual_seed(0)
    model = zo.ResNet20()
    inputs = torch.randn(args.batch_size, 3, 32, 32)
    targets = torch.randint(0, 10, (args.batch_size,))
    mask = zo.SparseMask.uniform(model, args.coordinates, seed=0)
    shared = zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=1)
    alone = zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=1, group=solo)

    def run(estimator):
        model.zero_grad(set_to_none=True)
        estimator.estimate(inputs, targets)

    def on_rank0(threads):
        """Time rank 0 alone with ``threads`` threads; rank 1 waits at the barrier."""
        elapsed = None
        if rank == 0:
            torch.set_num_threads(threads)
            elapsed = median_ms(lambda: run(alone), args.repeats) / 1000
            torch.set_num_threads(1)
        dist.barrier()
        return elapsed

    def together():
        dist.barrier()
        return median_ms(lambda: (run(shared), dist.barrier()), args.repeats) / 1000

    run(shared)
    split = gradients(model)
    if rank == 0:
        run(alone)
        single = gradients(model)
    dist.barrier()
    times = {"2_ranks_x_1_thread": [], "1_rank_x_1_thread": [], "1_rank_x_2_threads": []}
    for _ in range(args.rounds):
        times["2_ranks_x_1_thread"].append(together())
        times["1_rank_x_1_thread"].append(on_rank0(1))
        times["1_rank_x_2_threads"].append(on_rank0(2))
    queries = [None, None]
    dist.all_gather_object(queries, shared.queries)
    if rank == 0:
        seconds = {name: statistics.median(values) for name, values in times.items()}
        result = {
            "benchmark": "zo_scaling",
            "batch_size": args.batch_size,
            "coordinates": args.coordinates,
            "queries_per_rank": queries,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "seconds_per_estimate": {k: round(v, 4) for k, v in seconds.items()},
            "speedup_2_ranks": round(
                seconds["1_rank_x_1_thread"] / seconds["2_ranks_x_1_thread"], 3
            ),
            "speedup_2_threads": round(
                seconds["1_rank_x_1_thread"] / seconds["1_rank_x_2_threads"], 3
            ),
            "max_gradient_difference": float((split - single).abs().max()),
        }
        result["target_1.7x_met"] = result["speedup_2_ranks"] >= 1.7
        with open(result_path, "w") as handle:
            json.dump(result, handle)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--coordinates", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.coordinates, args.rounds = 8, 16, 1
    with tempfile.TemporaryDirectory() as directory:
        result_path = f"{directory}/result.json"
        mp.spawn(worker, args=(args, f"{directory}/store", result_path), nprocs=2)
        with open(result_path) as handle:
            print(json.dumps(json.load(handle)))


if __name__ == "__main__":
    main()
