"""Claim: under a barostat BoostMD's frames follow the cell: NPT costs one reference call a window.

ASE's ``NPTBerendsen`` (300 K, 1 bar) on alanine dipeptides on a periodic grid, with the
shipped models: BoostMD at its defaults (its frames follow the strained cell, and the
stress of a surrogate step is its own plus the reference's offset at the frame) against
the reference alone, each for ``--steps`` MD steps from the same start, every call
counted. Also BoostMD under ``NVTBerendsen`` for the same steps, which asks for no stress:
the ratio of the two is the stress's cost. Had a cell change forced a new frame, every
force evaluation would be a reference call (``reference_calls_per_evaluation`` 1).
Prints one JSON line::

    python benchmarks/boostmd_npt.py --side 2 --steps 60
"""

import argparse
import json
import time

import numpy as np
import torch
from ase import Atoms, units
from ase.md.nptberendsen import NPTBerendsen, NVTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from boostmd import BoostMDCalculator
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

TIMESTEP_FS = 0.5


def periodic_box(side: int, spacing: float) -> Atoms:
    """``side**3`` alanine dipeptides on a grid, in a periodic cell of ``side * spacing``."""
    base = capped_dipeptide("ALA")
    centred = base.get_positions() - base.get_positions().mean(0)
    cells = [(i, j, k) for i in range(side) for j in range(side) for k in range(side)]
    positions = np.concatenate([centred + spacing * (np.array(c) + 0.5) for c in cells])
    atoms = Atoms(numbers=np.tile(base.numbers, len(cells)), positions=positions)
    atoms.set_cell([side * spacing] * 3)
    atoms.pbc = True
    return atoms


def run(atoms: Atoms, calc, steps: int, barostat: bool) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    common = {"temperature_K": 300, "taut": 100 * units.fs}
    if barostat:
        dynamics = NPTBerendsen(
            atoms,
            TIMESTEP_FS * units.fs,
            pressure_au=1.0 * units.bar,
            taup=500 * units.fs,
            compressibility_au=4.5e-5 / units.bar,
            **common,
        )
    else:
        dynamics = NVTBerendsen(atoms, TIMESTEP_FS * units.fs, **common)
    volume = atoms.get_volume()
    start = time.perf_counter()
    dynamics.run(steps)
    seconds = time.perf_counter() - start
    figures = {"s_per_step": round(seconds / steps, 4)}
    stats = getattr(calc, "stats", None)
    if stats is not None:
        figures["evaluations"] = stats.total_steps
        figures["reference_calls"] = stats.full_steps
        figures["reference_calls_per_evaluation"] = round(stats.full_steps / stats.total_steps, 3)
    figures["volume_change"] = round(atoms.get_volume() / volume - 1, 6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2, help="dipeptides per cell edge")
    parser.add_argument("--spacing", type=float, default=10.0, help="Å between dipeptides")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference, surrogate = load_pretrained()
    atoms = periodic_box(args.side, args.spacing)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))

    def boostmd():
        return BoostMDCalculator(reference, surrogate, timestep_fs=TIMESTEP_FS)

    boost_npt = run(atoms, boostmd(), args.steps, barostat=True)
    boost_nvt = run(atoms, boostmd(), args.steps, barostat=False)
    reference_npt = run(atoms, ReferenceCalculator(reference), args.steps, barostat=True)
    print(
        json.dumps(
            {
                "atoms": len(atoms),
                "steps": args.steps,
                "threads": args.threads,
                "start_volume_A3": round(atoms.get_volume(), 1),
                "boostmd_npt": boost_npt,
                "boostmd_nvt": boost_nvt,
                "reference_npt": reference_npt,
                "speedup_npt": round(reference_npt["s_per_step"] / boost_npt["s_per_step"], 2),
                "stress_cost": round(boost_npt["s_per_step"] / boost_nvt["s_per_step"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
