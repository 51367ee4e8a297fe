"""Claim: BoostMD's default sampler is over 10x faster than the reference alone.

Wall-clock speedup of ``boostmd.dynamics.md.boost_langevin`` with the calculator's defaults
(checked windows, per-atom adaptive friction, energy-consistent refresh; centred frames,
N = 10 or the interval a fit stored with the surrogate, the validated settings) over ASE's
``Langevin`` with the reference alone, 300 K, 1 fs, 1/ps, shipped models, every call
counted (reruns, frame prediction, refresh errors). Each system is timed in interleaved
segments (reference, BoostMD, reference, BoostMD, ...) after warm-up steps of each (5 of
the reference, ``--warm-up`` of BoostMD), so that load on the machine hits both alike;
the speedup is the ratio of the summed times per step.

Per system the JSON line also gives where BoostMD's time goes (``shares``: the reference
calls, the surrogate steps and evaluations, the frame preparations and the rest: the
integrator, checks and bookkeeping), the surrogate evaluations per checked window (a
rerun window's included) and the reference calls per step. ``--box 3`` adds 27 alanine
dipeptides on a 12 Å grid (594 atoms, one connected graph; ``boostmd_scaling.box``).
``--interval N`` and ``--frame`` override the window length and frame. ``--structure
FILE`` times a structure file (periodic ones in their cell; ``--repeat NX NY NZ`` tiles
it) with ``--reference`` and ``--surrogate`` (a fit's), for example water boxes with the
water reference. Prints one JSON line.

    python benchmarks/boostmd_wall_clock.py --peptides ALA GLN
    python benchmarks/boostmd_wall_clock.py --peptides ALA GLN --threads 2
    python benchmarks/boostmd_wall_clock.py --peptides --box 3 --steps 60 --reference-steps 6 \\
        --segments 2 --warm-up 21
    python benchmarks/boostmd_wall_clock.py --peptides --reference water \\
        --surrogate fit-water64/surrogate.pt --structure examples/structures/water64.extxyz
"""

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read
from boostmd_scaling import box

from boostmd import BoostMDCalculator
from boostmd.dynamics.calculator import FRAMES, ReferenceCalculator
from boostmd.dynamics.md import boost_langevin, langevin, thermal_momenta
from boostmd.dynamics.model_calls import ModelCalls
from boostmd.dynamics.periodic import whole_molecules
from boostmd.forcefields.pretrained import load_pretrained, load_reference
from boostmd.forcefields.surrogate import Surrogate
from boostmd.validation.validate import starting_dipeptide

NAMES = ("reference", "boostmd")
# What each kind of model call is, in the shares of BoostMD's time.
PARTS = {
    "reference": "reference",
    "surrogate": "surrogate_steps",
    "window": "surrogate_steps",
    "frame": "frame_preparation",
}


class TimedCalls(ModelCalls):
    """The calculator's model calls, timed by kind, with the surrogate evaluations counted."""

    def __init__(self, reference, surrogate):
        super().__init__(reference, surrogate)
        self.seconds = collections.Counter()
        self.evaluations = 0

    def many(self, kind, calls):
        start = time.perf_counter()
        result = super().many(kind, calls)
        self.seconds[PARTS[kind]] += time.perf_counter() - start
        if kind == "surrogate":
            self.evaluations += len(calls)
        elif kind == "window":
            self.evaluations += sum(len(call[-1]) for call in calls)
        return result


def dynamics(models, atoms, calls=None, seed=0, interval=None, frame=None):
    """Langevin MD with the reference alone, or with BoostMD making ``calls``."""
    atoms = atoms.copy()
    boosted = calls is not None
    if boosted:
        atoms.calc = BoostMDCalculator(*models, calls=calls, interval=interval, **_frame(frame))
    else:
        atoms.calc = ReferenceCalculator(models[0])
    thermal_momenta(atoms, 300.0, np.random.default_rng(seed))
    make = boost_langevin if boosted else langevin
    return make(atoms, 300.0, 1.0, 1.0, rng=seed + 1)


def _frame(frame: str | None) -> dict:
    """The calculator's keyword for ``--frame`` (none: the calculator's default)."""
    return {} if frame is None else {"frame": frame}


def timed(run, steps):
    start = time.perf_counter()
    run.run(steps)
    return time.perf_counter() - start


def measure(models, atoms, args):
    calls = TimedCalls(*models)
    runs = {
        "reference": dynamics(models, atoms),
        "boostmd": dynamics(models, atoms, calls, interval=args.interval, frame=args.frame),
    }
    runs["reference"].run(min(args.warm_up, 5))  # TorchScript specialisation
    runs["boostmd"].run(args.warm_up)  # and the first windows
    calc = runs["boostmd"].atoms.calc
    windows_before = runs["boostmd"].windows
    calls.seconds.clear()
    calls.evaluations = 0
    steps = {"reference": args.reference_steps or args.steps, "boostmd": args.steps}
    seconds = dict.fromkeys(runs, 0.0)
    for _ in range(args.segments):
        for name, run in runs.items():
            seconds[name] += timed(run, steps[name])
    per_step = {name: seconds[name] / (args.segments * steps[name]) for name in NAMES}
    windows = runs["boostmd"].windows - windows_before  # checked windows, rerun ones too
    parts = sorted(set(PARTS.values()))
    shares = {part: calls.seconds[part] / seconds["boostmd"] for part in parts}
    shares["rest"] = 1 - sum(shares.values())
    return {
        "atoms": len(atoms),
        "reference_s_per_step": round(per_step["reference"], 4),
        "boostmd_s_per_step": round(per_step["boostmd"], 5),
        "speedup": round(per_step["reference"] / per_step["boostmd"], 2),
        "reference_calls_per_step": round(calc.stats.full_steps / runs["boostmd"].nsteps, 3),
        "rollbacks": runs["boostmd"].rollbacks,
        "surrogate_evaluations_per_window": round(calls.evaluations / max(windows, 1), 1),
        "shares": {part: round(share, 3) for part, share in shares.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptides", nargs="*", default=["ALA", "GLN"])
    parser.add_argument("--box", type=int, nargs="*", default=[], help="sides of ALA boxes")
    parser.add_argument("--steps", type=int, default=300, help="BoostMD steps per segment")
    parser.add_argument(
        "--reference-steps", type=int, help="reference steps per segment (default: --steps)"
    )
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument(
        "--warm-up", type=int, default=100, help="untimed BoostMD steps (the reference: 5)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--interval", type=int, help="window length (default: the calculator's)")
    parser.add_argument("--frame", choices=FRAMES, help="window frame (default: the calculator's)")
    parser.add_argument("--structure", nargs="*", type=Path, default=[], help="structure files")
    parser.add_argument("--repeat", nargs=3, type=int, default=(1, 1, 1), help="tile them")
    parser.add_argument("--reference", default="dipeptides", help="a shipped name or a file")
    parser.add_argument("--surrogate", type=Path, help="the reference's surrogate (a fit's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.surrogate is None:
        models = load_pretrained(args.reference)
    else:
        reference = load_reference(args.reference)
        models = reference, Surrogate.load(args.surrogate, dtype=reference.dtype)
    systems = {code: starting_dipeptide(code) for code in args.peptides}
    systems.update({f"ALA-box-{side}": box(side) for side in args.box})
    for path in args.structure:
        tiled = whole_molecules(read(path)).repeat(tuple(args.repeat))
        name = path.stem if tuple(args.repeat) == (1, 1, 1) else f"{path.stem}-{len(tiled)}-atoms"
        systems[name] = tiled
    results = {name: measure(models, atoms, args) for name, atoms in systems.items()}
    calc = BoostMDCalculator(*models, interval=args.interval, **_frame(args.frame))
    print(
        json.dumps(
            {
                "threads": args.threads,
                "interval": calc.schedule.every,
                "frame": calc.frame,
                "steps_per_segment": args.steps,
                "segments": args.segments,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
