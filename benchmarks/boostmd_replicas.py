"""Claim: batching replicas makes BoostMD's building blocks cheaper per replica.

For ``R`` alanine-dipeptide replicas (independent, slightly different geometries) with
the shipped models, float32: the reference call (``MACEReference.compute_many`` against
one ``compute`` per replica), the frame preparation (one ``Surrogate.prepare`` over all
replicas as one batch against one per replica) and the surrogate step (one batched
``energy_and_forces`` against one per replica). From these, the replica-steps per second
of a BoostMD window at ``N = 10`` (one reference call, one preparation, ``N - 1``
surrogate steps) both ways. These are the parts a batched integrator is made of, timed
here without one. Prints one JSON line per replica count and a summary line.

    python benchmarks/boostmd_replicas.py
    python benchmarks/boostmd_replicas.py --replicas 1 8 --repeats 1     # a quick look
"""

import argparse
import json

import numpy as np
import torch
from timing import median_ms

from boostmd.peptides import capped_dipeptide
from boostmd.pretrained import load_pretrained

INTERVAL = 10


def replicas(count, seed=0):
    base = capped_dipeptide("ALA")
    rng = np.random.default_rng(seed)
    systems = []
    for _ in range(count):
        atoms = base.copy()
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        systems.append(atoms)
    return systems


def prepare(surrogate, systems, results):
    with torch.no_grad():
        return surrogate.prepare_many(systems, results)


def measure(reference, surrogate, count, repeats):
    systems = replicas(count)
    results = reference.compute_many(systems)
    frames = [prepare(surrogate, [a], [r]) for a, r in zip(systems, results)]
    joined = prepare(surrogate, systems, results)
    moved = [a.positions + 0.01 for a in systems]
    moved_all = np.concatenate(moved)
    timings = {
        "reference": (
            lambda: [reference(a) for a in systems],
            lambda: reference.compute_many(systems),
        ),
        "prepare": (
            lambda: [prepare(surrogate, [a], [r]) for a, r in zip(systems, results)],
            lambda: prepare(surrogate, systems, results),
        ),
        "step": (
            lambda: [surrogate.energy_and_forces(f, p) for f, p in zip(frames, moved)],
            lambda: surrogate.energy_and_forces(joined, moved_all),
        ),
    }
    record = {"replicas": count}
    for name, (sequential, batched) in timings.items():
        record[f"{name}_sequential_ms"] = round(median_ms(sequential, repeats), 2)
        record[f"{name}_batched_ms"] = round(median_ms(batched, repeats), 2)
    for way in ("sequential", "batched"):
        window_ms = sum(
            record[f"{name}_{way}_ms"] * (INTERVAL - 1 if name == "step" else 1) for name in timings
        )
        record[f"replica_steps_per_s_{way}"] = round(1000 * count * INTERVAL / window_ms, 1)
    record["batching_gain"] = round(
        record["replica_steps_per_s_batched"] / record["replica_steps_per_s_sequential"], 3
    )
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference, surrogate = load_pretrained()
    records = []
    for count in args.replicas:
        records.append(measure(reference, surrogate, count, args.repeats))
        print(json.dumps(records[-1]), flush=True)
    summary = {
        "summary": "boostmd_replicas",
        "threads": torch.get_num_threads(),
        "interval": INTERVAL,
        "batching_gain": {r["replicas"]: r["batching_gain"] for r in records},
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
