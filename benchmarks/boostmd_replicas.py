"""Claim: replicas advanced together (ReplicaBatch) run more replica-steps per second.

``R`` alanine-dipeptide replicas (independent seeds and slightly different geometries) with
the shipped models, float32, are run by real integrators two ways: one after the other
(each its own calculator), and together in a :class:`boostmd.replicas.ReplicaBatch` (one
batched reference call per window, one batched surrogate call per step). Both for BoostMD
(``BoostLangevin``, ``N = 10``, checked windows) and for the reference alone (ASE's
``Langevin``). Every run first integrates its first window (untimed: the start's extra
reference call and the models' warm-up), then ``--windows`` windows are timed.

Prints one JSON line per replica count (replica-steps per second each way, the gains, the
MD speedup of BoostMD over the reference at equal replicas, the batched calls' mean
sizes, and the share of the batched run spent outside the model calls: the integrators'
Python work, which runs one replica after the other) and a summary line.

    python benchmarks/boostmd_replicas.py
    python benchmarks/boostmd_replicas.py --replicas 1 8 --windows 1     # a quick look
"""

import argparse
import json
import time

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin

from boostmd.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.integrator import BoostLangevin
from boostmd.md import thermal_momenta
from boostmd.peptides import capped_dipeptide
from boostmd.pretrained import load_pretrained
from boostmd.replicas import ReplicaBatch

INTERVAL = 10
TEMPERATURE = 300.0
FRICTION = 1.0 / (1000 * units.fs)  # 1/ps


def replica(seed):
    atoms = capped_dipeptide("ALA")
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
    thermal_momenta(atoms, TEMPERATURE, rng)
    return atoms


def dynamics(kind, seed, calculator):
    atoms = replica(seed)
    atoms.calc = calculator
    if kind == "boostmd":
        return BoostLangevin(atoms, 1 * units.fs, TEMPERATURE, FRICTION, rng=seed)
    rng = np.random.default_rng(seed)
    return Langevin(atoms, 1 * units.fs, temperature_K=TEMPERATURE, friction=FRICTION, rng=rng)


def calculator(kind, reference, surrogate, batch=None):
    if batch is not None:
        if kind == "boostmd":
            return batch.boostmd_calculator(interval=INTERVAL)
        return batch.reference_calculator()
    if kind == "boostmd":
        return BoostMDCalculator(reference, surrogate, interval=INTERVAL)
    return ReferenceCalculator(reference)


class ModelClock:
    """Seconds a ReplicaBatch spends in its batched model calls."""

    def __init__(self, batch):
        self.seconds = 0.0
        execute = batch._execute

        def timed(kind, group):
            start = time.perf_counter()
            execute(kind, group)
            self.seconds += time.perf_counter() - start

        batch._execute = timed


def sequential(kind, count, steps, reference, surrogate):
    runs = [dynamics(kind, i, calculator(kind, reference, surrogate)) for i in range(count)]
    for run in runs:
        run.run(INTERVAL)
    start = time.perf_counter()
    for run in runs:
        run.run(steps)
    return count * steps / (time.perf_counter() - start)


def batched(kind, count, steps, reference, surrogate):
    batch = ReplicaBatch(reference, surrogate)
    runs = [dynamics(kind, i, calculator(kind, reference, surrogate, batch)) for i in range(count)]
    batch.run([lambda run=run: run.run(INTERVAL) for run in runs])
    batch.batched_calls.clear()
    batch.requests.clear()
    clock = ModelClock(batch)
    start = time.perf_counter()
    batch.run([lambda run=run: run.run(steps) for run in runs])
    seconds = time.perf_counter() - start
    sizes = {
        name: round(batch.requests[name] / calls, 1) for name, calls in batch.batched_calls.items()
    }
    rollbacks = sum(getattr(run, "rollbacks", 0) for run in runs)
    return count * steps / seconds, sizes, 1 - clock.seconds / seconds, rollbacks


def measure(count, args, reference, surrogate):
    record = {"replicas": count}
    for kind, windows in (("boostmd", args.windows), ("reference", args.reference_steps)):
        steps = windows * INTERVAL if kind == "boostmd" else windows
        alone = sequential(kind, count, steps, reference, surrogate)
        together, sizes, outside, rollbacks = batched(kind, count, steps, reference, surrogate)
        record[f"{kind}_sequential_steps_per_s"] = round(alone, 2)
        record[f"{kind}_batched_steps_per_s"] = round(together, 2)
        record[f"{kind}_batching_gain"] = round(together / alone, 3)
        record[f"{kind}_mean_batch"] = sizes
        record[f"{kind}_outside_model_calls"] = round(outside, 3)
        if kind == "boostmd":
            record["boostmd_rollbacks"] = rollbacks
    for way in ("sequential", "batched"):
        record[f"md_speedup_{way}"] = round(
            record[f"boostmd_{way}_steps_per_s"] / record[f"reference_{way}_steps_per_s"], 2
        )
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--windows", type=int, default=2, help="timed BoostMD windows")
    parser.add_argument(
        "--reference-steps", type=int, default=5, help="timed steps of the reference alone"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference, surrogate = load_pretrained()
    records = []
    for count in args.replicas:
        records.append(measure(count, args, reference, surrogate))
        print(json.dumps(records[-1]), flush=True)
    summary = {
        "summary": "boostmd_replicas",
        "threads": torch.get_num_threads(),
        "interval": INTERVAL,
        "boostmd_batching_gain": {r["replicas"]: r["boostmd_batching_gain"] for r in records},
        "reference_batching_gain": {r["replicas"]: r["reference_batching_gain"] for r in records},
        "md_speedup_batched": {r["replicas"]: r["md_speedup_batched"] for r in records},
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
