"""Claim: integrating a window's surrogate steps on the models' device speeds BoostMD up.

Alanine dipeptide with the shipped models (float32), ``BoostLangevin`` at ``N = 10`` and
1/ps, three ways in one run, interleaved: with device windows (the default: the surrogate
steps of a window integrated at once where the models run, one copy back per window;
:mod:`boostmd.dynamics.device_window`), without them (every step through ASE, positions to the
device and forces back each step), and the reference alone (ASE's ``Langevin``). Prints
one JSON line: steps per second of each, the surrogate's share of a window per step
(wall time of the window less its reference call, per surrogate step), and the MD
speedups over the reference alone (every rerun window's reference calls included; the
rollbacks are reported).

    python benchmarks/boostmd_device_window.py
    python benchmarks/boostmd_device_window.py --device cuda      # where a GPU is lent
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
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

INTERVAL = 10
FRICTION = 1.0 / (1000 * units.fs)


def system():
    atoms = capped_dipeptide("ALA")
    thermal_momenta(atoms, 300, np.random.default_rng(0))
    return atoms


def runs(reference, surrogate):
    made = {}
    for name, device_windows in (("device_windows", True), ("ase_steps", False)):
        atoms = system()
        atoms.calc = BoostMDCalculator(reference, surrogate, interval=INTERVAL)
        made[name] = BoostLangevin(
            atoms, units.fs, 300, FRICTION, rng=0, device_windows=device_windows
        )
    atoms = system()
    atoms.calc = ReferenceCalculator(reference)
    made["reference"] = Langevin(
        atoms, units.fs, temperature_K=300, friction=FRICTION, rng=np.random.default_rng(0)
    )
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=10, help="timed windows per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference, surrogate = load_pretrained(device=args.device)
    dynamics = runs(reference, surrogate)
    steps = {"device_windows": args.windows * INTERVAL, "ase_steps": args.windows * INTERVAL}
    steps["reference"] = max(1, args.windows)
    seconds = dict.fromkeys(dynamics, 0.0)
    reference_seconds = dict.fromkeys(dynamics, 0.0)
    surrogate_steps = dict.fromkeys(dynamics, 0)
    for run in dynamics.values():
        run.run(INTERVAL)  # warm-up: the first window and the start's reference call
    for _ in range(args.repeats):
        for name, run in dynamics.items():
            stats = getattr(run.atoms.calc, "stats", None)
            before = stats and (stats.full_time_s, stats.reuse_steps)
            start = time.perf_counter()
            run.run(steps[name])  # each window ends with results copied to the host
            seconds[name] += time.perf_counter() - start
            if stats is not None:
                reference_seconds[name] += stats.full_time_s - before[0]
                surrogate_steps[name] += stats.reuse_steps - before[1]
    rate = {name: args.repeats * steps[name] / seconds[name] for name in dynamics}
    record = {
        "benchmark": "boostmd_device_window",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "interval": INTERVAL,
        **{f"{name}_steps_per_s": round(value, 2) for name, value in rate.items()},
        "device_window_gain": round(rate["device_windows"] / rate["ase_steps"], 3),
    }
    for name in ("device_windows", "ase_steps"):
        per_step = (seconds[name] - reference_seconds[name]) / surrogate_steps[name]
        record[f"{name}_surrogate_ms_per_step"] = round(1000 * per_step, 3)
        record[f"{name}_md_speedup"] = round(rate[name] / rate["reference"], 2)
        record[f"{name}_rollbacks"] = f"{dynamics[name].rollbacks} of {dynamics[name].windows}"
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
