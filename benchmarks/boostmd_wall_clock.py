"""Claim: BoostMD's default sampler is several times faster than the reference alone.

Wall-clock speedup of ``boostmd.dynamics.md.boost_langevin`` (checked windows, per-atom adaptive
friction, energy-consistent refresh; centred frames, N = 10) over ASE's ``Langevin`` with
the reference alone, 300 K, 1 fs, 1/ps, shipped models, one CPU thread, every call
counted (reruns, frame prediction, refresh errors). Each system is timed in interleaved
segments (reference, BoostMD, reference, BoostMD, ...) after 100 warm-up steps of each,
so that load on the machine hits both alike; the speedup is the ratio of the summed
times. Prints one JSON line.

    python benchmarks/boostmd_wall_clock.py --peptides ALA THR ILE GLN --steps 300
"""

import argparse
import json
import time

import numpy as np
import torch

from boostmd import BoostMDCalculator
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import boost_langevin, langevin, thermal_momenta
from boostmd.forcefields.pretrained import load_pretrained
from boostmd.validation.validate import starting_dipeptide

NAMES = ("reference", "boostmd")


def dynamics(models, code, boosted, seed):
    atoms = starting_dipeptide(code)  # the validation's start (main phi basin)
    if boosted:
        atoms.calc = BoostMDCalculator(*models, interval=10, frame="centred", timestep_fs=1.0)
    else:
        atoms.calc = ReferenceCalculator(models[0])
    thermal_momenta(atoms, 300.0, np.random.default_rng(seed))
    make = boost_langevin if boosted else langevin
    kwargs = {"energy_consistent": True} if boosted else {}
    return make(atoms, 300.0, 1.0, 1.0, rng=seed + 1, **kwargs)


def timed(run, steps):
    start = time.perf_counter()
    run.run(steps)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptides", nargs="+", default=["ALA", "THR", "ILE", "GLN"])
    parser.add_argument("--steps", type=int, default=300, help="steps per segment")
    parser.add_argument("--segments", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_pretrained("dipeptides")
    results = {}
    for code in args.peptides:
        runs = {name: dynamics(models, code, name == "boostmd", 0) for name in NAMES}
        for run in runs.values():
            run.run(100)  # warm-up: TorchScript specialisation, the first windows
        seconds = dict.fromkeys(runs, 0.0)
        for _ in range(args.segments):
            for name, run in runs.items():
                seconds[name] += timed(run, args.steps)
        calc = runs["boostmd"].atoms.calc
        results[code] = {
            "reference_s_per_step": round(seconds["reference"] / (args.segments * args.steps), 4),
            "boostmd_s_per_step": round(seconds["boostmd"] / (args.segments * args.steps), 4),
            "speedup": round(seconds["reference"] / seconds["boostmd"], 2),
            "reference_calls_per_step": round(calc.stats.full_steps / runs["boostmd"].nsteps, 3),
            "rollbacks": runs["boostmd"].rollbacks,
        }
    print(json.dumps({"steps_per_segment": args.steps, "segments": args.segments, **results}))


if __name__ == "__main__":
    main()
