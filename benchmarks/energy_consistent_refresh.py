"""Does BoostLangevin's energy-consistent refresh still help with the adaptive friction?

One run per setting on an unseen dipeptide (THR by default) with the shipped models:
300 steps at 20/ps, then ``--steps`` at 1/ps; centred frames, N = 10, tolerance inf (no
reruns, so both settings see every window), the adaptive friction at its default tau. For
each, with and without ``energy_consistent``: the refresh energy error's RMS and mean
(meV, after the first 30 windows), the windows over 3 kT, the mean kinetic temperature of
the hydrogens and of the heavy atoms at 1/ps, and the largest |xi| at the end. Prints one
JSON line.

    python benchmarks/energy_consistent_refresh.py --peptide THR --steps 1500
"""

import argparse
import json
import math

import numpy as np
from ase import units

from boostmd import BoostMDCalculator
from boostmd.dynamics.md import boost_langevin, group_temperatures, thermal_momenta
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained


def run(models, code, energy_consistent, steps, seed):
    atoms = capped_dipeptide(code)
    atoms.calc = calc = BoostMDCalculator(*models, interval=10, frame="centred", timestep_fs=1.0)
    rng = np.random.default_rng(seed)
    thermal_momenta(atoms, 300, rng)
    dynamics = boost_langevin(
        atoms, 300, 1.0, 20.0, rng=rng, energy_consistent=energy_consistent, tolerance_eV=math.inf
    )
    dynamics.run(300)
    dynamics.set_friction(0.001 / units.fs)
    temperatures = []

    def observe():
        temperatures.append(group_temperatures(atoms))

    dynamics.attach(observe, interval=1)
    dynamics.run(steps)
    errors = 1000 * np.asarray(calc.refresh_errors[30:])
    hydrogens, heavy = np.mean(temperatures, axis=0)
    return {
        "dE_rms_meV": round(float(np.sqrt((errors**2).mean())), 1),
        "dE_mean_meV": round(float(errors.mean()), 1),
        "windows_over_3kT": int((np.abs(errors) > 3000 * units.kB * 300).sum()),
        "windows": len(errors),
        "temperature_hydrogen_K": round(float(hydrogens), 1),
        "temperature_heavy_K": round(float(heavy), 1),
        "largest_xi_per_ps": round(float(np.abs(dynamics.xi).max() * 1000 * units.fs), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptide", default="THR")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    models = load_pretrained("dipeptides")
    results = {
        f"energy_consistent={consistent}": run(
            models, args.peptide, consistent, args.steps, args.seed
        )
        for consistent in (False, True)
    }
    print(json.dumps({"peptide": args.peptide, "steps": args.steps, **results}))


if __name__ == "__main__":
    main()
