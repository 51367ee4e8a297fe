"""Claim: replicas advanced together (ReplicaBatch) run more replica-steps per second.

``R`` alanine-dipeptide replicas (independent seeds and slightly different geometries) with
the shipped models, float32, are run by real integrators two ways: one after the other
(each its own calculator), and together in a :class:`boostmd.dynamics.replicas.ReplicaBatch` (one
batched reference call per window, one batched surrogate call per step). Both for BoostMD
(``BoostLangevin``, ``N = 10``, checked windows) and for the reference alone (ASE's
``Langevin``). Every run first integrates its first window (untimed: the start's extra
reference call and the models' warm-up), then ``--windows`` windows (``--reference-steps``
steps of the reference alone) are timed, ``--repeats`` times, the two ways taking turns.

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

from boostmd.dynamics.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.dynamics.integrator import BoostLangevin
from boostmd.dynamics.md import thermal_momenta
from boostmd.dynamics.replicas import ReplicaBatch
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

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
            return batch.boostmd_calculator(interval=INTERVAL, frame="start")
        return batch.reference_calculator()
    if kind == "boostmd":
        return BoostMDCalculator(reference, surrogate, interval=INTERVAL, frame="start")
    return ReferenceCalculator(reference)


class Sequential:
    """``count`` runs, each with its own calculator, advanced one after the other."""

    def __init__(self, kind, count, reference, surrogate):
        self.runs = [
            dynamics(kind, i, calculator(kind, reference, surrogate)) for i in range(count)
        ]

    def advance(self, steps):
        for run in self.runs:
            run.run(steps)


class Batched:
    """``count`` runs advanced together by a ReplicaBatch."""

    def __init__(self, kind, count, reference, surrogate):
        self.batch = ReplicaBatch(reference, surrogate)
        self.runs = [
            dynamics(kind, i, calculator(kind, reference, surrogate, self.batch))
            for i in range(count)
        ]

    def advance(self, steps):
        self.batch.run([lambda run=run: run.run(steps) for run in self.runs])


def measure(count, args, reference, surrogate):
    """Both ways for BoostMD and the reference alone, timed in interleaved repeats."""
    record = {"replicas": count}
    for kind in ("boostmd", "reference"):
        steps = args.windows * INTERVAL if kind == "boostmd" else args.reference_steps
        ways = {
            "sequential": Sequential(kind, count, reference, surrogate),
            "batched": Batched(kind, count, reference, surrogate),
        }
        for way in ways.values():  # warm-up: the first window and the start's reference call
            way.advance(INTERVAL if kind == "boostmd" else 1)
        batch = ways["batched"].batch
        batch.batched_calls.clear()
        batch.requests.clear()
        batch.model_seconds = 0.0
        seconds = dict.fromkeys(ways, 0.0)
        for _ in range(args.repeats):
            for name, way in ways.items():
                start = time.perf_counter()
                way.advance(steps)
                seconds[name] += time.perf_counter() - start
        for name in ways:
            rate = args.repeats * count * steps / seconds[name]
            record[f"{kind}_{name}_steps_per_s"] = round(rate, 2)
        record[f"{kind}_batching_gain"] = round(seconds["sequential"] / seconds["batched"], 3)
        record[f"{kind}_mean_batch"] = {
            name: round(batch.requests[name] / calls, 1)
            for name, calls in batch.batched_calls.items()
        }
        record[f"{kind}_outside_model_calls"] = round(
            1 - batch.model_seconds / seconds["batched"], 3
        )
        if kind == "boostmd":
            record["boostmd_rollbacks"] = sum(
                run.rollbacks for way in ways.values() for run in way.runs
            )
    for way in ("sequential", "batched"):
        record[f"md_speedup_{way}"] = round(
            record[f"boostmd_{way}_steps_per_s"] / record[f"reference_{way}_steps_per_s"], 2
        )
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--windows", type=int, default=2, help="timed BoostMD windows per repeat")
    parser.add_argument(
        "--reference-steps", type=int, default=3, help="timed reference-only steps per repeat"
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved timing repeats")
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
