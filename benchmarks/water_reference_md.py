"""Claim: the water reference runs stable NVT and NPT MD, and is as accurate on its own MD.

The held-out errors of ``make_reference --model water`` are on configurations that
GFN1-xTB proposed; MD with the reference samples its own. This runs the shipped water
reference alone on a periodic box of ``--waters`` waters at 300 K (0.5 fs): NVT (ASE's
``LangevinBAOAB``, ``T_tau`` 100 fs) and NPT at 1 bar (the same integrator with its
hydrostatic Langevin-Hoover barostat, ``P_tau`` 1 ps), each ``--steps`` steps after ``--warmup``,
and labels ``--labels`` frames of each run's second half with GFN2-xTB, the reference's
own labels: force, energy and pressure errors on the reference's own configurations.
Also the density under NPT (mean and standard error over blocks of its second half)
and whether every water stayed whole (O-H under 1.3 Å). Prints one JSON line::

    python benchmarks/water_reference_md.py --waters 32 --steps 2000 --labels 8
"""

import argparse
import json

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import FIRE
from tqdm import tqdm

from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.forcefields.pretrained import load_reference
from boostmd.forcefields.water import density, water_box
from boostmd.training.xtb_data import ENERGY_KEY, FORCES_KEY, STRESS_KEY, labelled, xtb_calculator

TIMESTEP_FS, TEMPERATURE_K = 0.5, 300.0


def longest_oh(atoms: Atoms) -> float:
    """Longest O-H bond of any water (O, H, H per molecule) in Å."""
    d = atoms.get_all_distances(mic=True)
    oxygens = np.arange(0, len(atoms), 3)
    return float(max(d[oxygens, oxygens + 1].max(), d[oxygens, oxygens + 2].max()))


def run(start: Atoms, reference, steps: int, warmup: int, barostat: bool, seed: int):
    """MD with the reference; returns every frame of the second half and the densities."""
    atoms = start.copy()
    atoms.calc = ReferenceCalculator(reference)
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(seed)
    )
    barostat_kwargs = {"externalstress": -1.0 * units.bar, "hydrostatic": True} if barostat else {}
    dynamics = LangevinBAOAB(
        atoms,
        TIMESTEP_FS * units.fs,
        temperature_K=TEMPERATURE_K,
        T_tau=100 * units.fs,
        P_tau=1000 * units.fs,
        rng=seed,
        **barostat_kwargs,
    )
    frames, densities, oh = [], [], []
    for step in tqdm(range(warmup + steps), desc="NPT" if barostat else "NVT"):
        dynamics.run(1)
        if step >= warmup:
            densities.append(density(atoms))
            if step >= warmup + steps // 2:
                frames.append(atoms.copy())
            if (step - warmup) % 50 == 0:
                oh.append(longest_oh(atoms))
    return frames, np.array(densities), max(oh)


def block_mean(values: np.ndarray, blocks: int = 5) -> tuple[float, float]:
    """Mean and its standard error over ``blocks`` consecutive blocks."""
    means = np.array([b.mean() for b in np.array_split(values, blocks)])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(blocks))


def on_policy_errors(frames: list[Atoms], reference, labels: int) -> dict:
    """Errors of the reference against GFN2-xTB at ``labels`` evenly spaced frames."""
    chosen = [frames[i] for i in np.linspace(0, len(frames) - 1, labels).astype(int)]
    force_errors, energy_errors, pressure_errors = [], [], []
    for frame in tqdm(chosen, desc="GFN2 labels"):
        result = reference(frame)
        probe = frame.copy()
        probe.calc = xtb_calculator()
        label = labelled(probe, {})
        force_errors.append(result.forces.double().numpy() - label.arrays[FORCES_KEY])
        energy_errors.append((float(result.energy) - label.info[ENERGY_KEY]) / len(frame))
        stress = result.stress.double().numpy().reshape(3, 3)
        pressure_errors.append(-np.trace(stress - label.info[STRESS_KEY]) / 3)
    energies = np.array(energy_errors) - np.mean(energy_errors)
    return {
        "frames": labels,
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(np.square(force_errors)))),
        "energy_rmse_meV_per_atom_offset_removed": 1000 * float(np.sqrt(np.mean(energies**2))),
        "pressure_rmse_GPa": float(np.sqrt(np.mean(np.square(pressure_errors))) / units.GPa),
        "pressure_mean_error_GPa": float(np.mean(pressure_errors) / units.GPa),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waters", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--labels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = load_reference("water")
    start = water_box(args.waters, seed=args.seed)
    start.calc = ReferenceCalculator(reference)
    FIRE(start, logfile=None).run(fmax=0.5, steps=50)
    report = {"waters": args.waters, "steps": args.steps, "timestep_fs": TIMESTEP_FS}
    for name, barostat in (("nvt", False), ("npt", True)):
        frames, densities, oh = run(start, reference, args.steps, args.warmup, barostat, args.seed)
        report[name] = {
            "longest_OH_A": round(oh, 3),
            "errors_vs_gfn2_xtb": on_policy_errors(frames, reference, args.labels),
        }
        if barostat:
            mean, error = block_mean(densities[len(densities) // 2 :])
            report[name]["density_g_cm3"] = {"mean": mean, "standard_error": error}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
