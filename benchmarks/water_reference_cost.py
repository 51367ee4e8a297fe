"""Claim: the shipped water reference runs a 64-water box at a few MD steps a second here.

Langevin MD (300 K, 0.5 fs, 1/ps) with the shipped ``water`` reference alone, each step's
energy, forces and stress (what an NPT run asks), on one thread: a periodic box of
``--waters`` waters at 1 g/cm^3 and alanine dipeptide solvated in ``--solvent`` waters.
The dipeptide reference on the same 64-water box is timed in the same run, for the ratio
(it knows no liquid: its forces there are only a cost figure). Prints one JSON line::

    python benchmarks/water_reference_cost.py --waters 64 --solvent 100 --steps 20
"""

import argparse
import json
import time

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin

from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_reference
from boostmd.forcefields.water import solvated, water_box


def seconds_per_step(atoms: Atoms, reference, steps: int) -> float:
    """Wall seconds per Langevin step (energy, forces and stress every step)."""
    atoms = atoms.copy()
    atoms.calc = ReferenceCalculator(reference)
    rng = np.random.default_rng(0)
    dynamics = Langevin(
        atoms, 0.5 * units.fs, temperature_K=300, friction=0.001 / units.fs, rng=rng
    )
    dynamics.attach(atoms.get_stress)
    dynamics.run(2)  # warm-up: graph building, first-call allocations
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waters", type=int, default=64)
    parser.add_argument("--solvent", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    water = load_reference("water")
    box = water_box(args.waters, seed=0)
    peptide = solvated(capped_dipeptide("ALA"), args.solvent, seed=0)
    box_s = seconds_per_step(box, water, args.steps)
    peptide_s = seconds_per_step(peptide, water, args.steps)
    dipeptide_reference_s = seconds_per_step(box, load_reference("dipeptides"), args.steps)
    print(
        json.dumps(
            {
                "threads": 1,
                "water_box": {
                    "atoms": len(box),
                    "s_per_step": round(box_s, 4),
                    "steps_per_s": round(1 / box_s, 2),
                },
                "solvated_ALA": {
                    "atoms": len(peptide),
                    "s_per_step": round(peptide_s, 4),
                    "steps_per_s": round(1 / peptide_s, 2),
                },
                "dipeptide_reference_on_water_box_s_per_step": round(dipeptide_reference_s, 4),
                "water_reference_cheaper_by": round(dipeptide_reference_s / box_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
