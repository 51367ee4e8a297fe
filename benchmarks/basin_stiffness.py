"""Claim: on the reference's own ALA trajectories the surrogate is as stiff as it in both basins.

At N = 20 BoostMD's hydrogens read about 8% hotter (configurational) on ALA's C7eq side
(phi -120..-60 degrees) than on its C5 side (phi < -120), which shifts the phi
population (``benchmarks/torsion_shift.py``). If the cause were the surrogate's accuracy,
it would show on the reference's own configurations: this script frames the surrogate at
every tenth frame ``x_t`` of reference Langevin runs (300 K, 1/ps, the reference alone) and
evaluates it ``k = +-N/2`` steps away, where a centred window reaches. Per basin of
``phi(x_t)`` and per group (hydrogens, heavy atoms) it prints the stiffness ratio along
the actual displacement ``d = x_{t+k} - x_t``::

    sum (F_ref(x_{t+k}) - F_ref(x_t)) . d  /  sum (F_sur(x_{t+k}) - F_ref(x_t)) . d

(above 1: the surrogate is softer than the reference) and the mean energy error
``E_ref - E_sur`` at ``x_{t+k}`` (meV, with its standard error). The reference runs are
made once and kept in ``--cache`` (positions, energies and forces of every step).
Prints one JSON line::

    python benchmarks/basin_stiffness.py --steps 4000 --seeds 1 2
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import langevin, thermal_momenta
from boostmd.dynamics.model_calls import ModelCalls
from boostmd.forcefields.pretrained import load_pretrained
from boostmd.validation.dihedrals import backbone_dihedrals, dihedral_angles
from boostmd.validation.validate import starting_dipeptide

C7EQ, C5 = (-120.0, -60.0), (-180.0, -120.0)


def reference_run(calls: ModelCalls, start: Atoms, seed: int, steps: int, path: Path) -> dict:
    """Reference Langevin MD of ALA (300 steps at 20/ps, then ``steps`` at 1/ps), cached."""
    if path.exists():
        return dict(np.load(path))
    atoms = start.copy()
    atoms.calc = ReferenceCalculator(calls.reference_model, calls)
    rng = np.random.default_rng(seed)
    thermal_momenta(atoms, 300.0, rng)
    frames = {"positions": [], "energy": [], "forces": []}

    def record() -> None:
        frames["positions"].append(atoms.positions.copy())
        frames["energy"].append(atoms.get_potential_energy())
        frames["forces"].append(atoms.get_forces())

    langevin(atoms, 300.0, friction_per_ps=20.0, rng=rng).run(300)
    dynamics = langevin(atoms, 300.0, friction_per_ps=1.0, rng=rng)
    dynamics.attach(record, interval=1)
    dynamics.run(steps)
    run = {key: np.asarray(value) for key, value in frames.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **run)
    return run


def displacement_terms(calls: ModelCalls, start: Atoms, run: dict, half: int) -> np.ndarray:
    """Per framed step and ``k = +-half``: phi, the energy error and the four stiffness sums."""
    atoms = start.copy()
    hydrogen = atoms.numbers == 1
    phi_atoms, _ = backbone_dihedrals(atoms)
    positions, energy, forces = run["positions"], run["energy"], run["forces"]
    phi = dihedral_angles(positions, phi_atoms)
    rows = []
    for t in range(half, len(positions) - half, 10):
        atoms.positions = positions[t]
        frame = calls.frame(atoms, calls.reference(atoms))
        for k in (-half, half):
            surrogate_energy, surrogate_forces, _ = calls.surrogate(frame, positions[t + k], 1.0)
            moved = positions[t + k] - positions[t]
            exact = ((forces[t + k] - forces[t]) * moved).sum(axis=1)
            own = ((np.asarray(surrogate_forces, dtype=float) - forces[t]) * moved).sum(axis=1)
            rows.append(
                (
                    phi[t],
                    energy[t + k] - float(surrogate_energy),
                    exact[hydrogen].sum(),
                    own[hydrogen].sum(),
                    exact[~hydrogen].sum(),
                    own[~hydrogen].sum(),
                )
            )
    return np.array(rows)


def by_basin(rows: np.ndarray) -> dict:
    """Frames, mean energy error (meV, +- error) and stiffness ratios per side of phi."""
    figures = {}
    for name, (low, high) in {"c7eq": C7EQ, "c5": C5}.items():
        chosen = rows[(rows[:, 0] > low) & (rows[:, 0] <= high)]
        error = 1000 * chosen[:, 1]
        figures[name] = {
            "frames": len(chosen),
            "energy_error_meV": round(float(error.mean()), 2),
            "energy_error_se_meV": round(float(error.std() / np.sqrt(len(error))), 2),
            "stiffness_ratio_hydrogen": round(float(chosen[:, 2].sum() / chosen[:, 3].sum()), 4),
            "stiffness_ratio_heavy": round(float(chosen[:, 4].sum() / chosen[:, 5].sum()), 4),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--interval", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--cache", type=Path, default=Path("runs/basin-stiffness"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    calls = ModelCalls(*load_pretrained("dipeptides"))
    start = starting_dipeptide("ALA")
    runs = [
        reference_run(calls, start, seed, args.steps, args.cache / f"ala-{seed}-{args.steps}.npz")
        for seed in args.seeds
    ]
    figures = {"steps": args.steps, "seeds": args.seeds}
    for interval in args.interval:
        half = interval // 2
        rows = np.concatenate([displacement_terms(calls, start, run, half) for run in runs])
        figures[f"N={interval}"] = by_basin(rows)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
