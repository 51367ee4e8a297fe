"""Claim: with a surrogate from ``python -m boostmd.fit``, BoostMD pays on the fitted molecule.

BoostMD's default sampler (``BoostLangevin``: centred frames, checked windows, per-atom
adaptive friction, energy-consistent refresh; N from the fit unless ``--interval``) on
the structure, 300 steps at 20/ps to reach the bath, then ``--steps`` at 1/ps, 300 K,
1 fs: windows rerun, reference calls per step, force-guard fallbacks, refresh error dE.
Then the wall-clock speedup over the reference alone from the run's last frame, every
call counted, in interleaved segments (``boostmd.training.fit_check.measure_speedup``).
Prints one JSON line.

    python benchmarks/boostmd_fitted.py --structure examples/structures/aspirin.xyz \\
        --surrogate fit-aspirin/surrogate.pt --steps 3000
"""

import argparse
import json

import numpy as np
from ase.io import read

from boostmd import BoostMDCalculator, Surrogate
from boostmd.dynamics.md import boost_langevin, thermal_momenta
from boostmd.forcefields.pretrained import load_reference
from boostmd.training.fit_check import measure_speedup


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", required=True)
    parser.add_argument("--surrogate", required=True)
    parser.add_argument("--reference", default="dipeptides")
    parser.add_argument("--interval", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--speedup-steps", type=int, default=300)
    args = parser.parse_args()
    reference = load_reference(args.reference)
    surrogate = Surrogate.load(args.surrogate, dtype=reference.dtype)
    atoms = read(args.structure)
    atoms.calc = BoostMDCalculator(reference, surrogate, interval=args.interval)
    thermal_momenta(atoms, 300.0, np.random.default_rng(0))
    boost_langevin(atoms, 300.0, 1.0, 20.0, rng=1).run(300)
    atoms.calc = calc = BoostMDCalculator(reference, surrogate, interval=args.interval)
    dynamics = boost_langevin(atoms, 300.0, 1.0, 1.0, rng=2)
    dynamics.warn_misfit = False
    dynamics.run(args.steps)
    summary = dynamics.summary()
    speedup = measure_speedup(
        reference,
        surrogate,
        atoms,
        interval=calc.schedule.every,
        temperature_K=300.0,
        steps=args.speedup_steps,
    )
    print(
        json.dumps(
            {
                "structure": args.structure,
                "interval": calc.schedule.every,
                "steps": summary.steps,
                "windows": summary.windows,
                "windows_rerun": summary.windows_rerun,
                "rerun_percent": round(100 * summary.rerun_fraction, 2),
                "fallbacks": summary.fallbacks,
                "reference_calls_per_step": round(summary.reference_calls_per_step, 4),
                "steps_per_reference_call": round(1 / summary.reference_calls_per_step, 2),
                "refresh_error_rms_meV": round(summary.refresh_error_rms_meV, 1),
                "refresh_error_mean_meV": round(summary.refresh_error_mean_meV, 1),
                "wall_clock_speedup": round(speedup["speedup"], 2),
                "speedup_steps_timed": speedup["steps_timed"],
            }
        )
    )


if __name__ == "__main__":
    main()
