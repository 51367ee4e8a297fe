"""xTB training data for the water reference: periodic liquid water and solvated dipeptides.

Each run builds a periodic cubic cell (:mod:`boostmd.forcefields.water`), relaxes its
packing contacts, and samples it with Langevin MD on **GFN1-xTB** at one temperature;
every sampled frame, and a share of randomly perturbed copies, is labelled with
**GFN2-xTB** (energy, forces and stress; tblite does both methods in 3D cells). GFN1 is
about seven times cheaper per step on these cells (16 waters: 0.15 s against 1.15 s on one
core), so it proposes the configurations and GFN2, the method of the dipeptide reference,
labels them. Pure-water cells are sampled at several densities so that the reference
learns the pressure around its own liquid density (what a barostat needs).

Each run is written atomically to its own extxyz file, so an interrupted generation
resumes at the first missing run; ``--systems`` and ``--temperatures`` split the runs
over processes.

    python -m boostmd.water_data --out data/water/xtb --systems water ALA --temperatures 300
"""

from __future__ import annotations

import argparse
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write
from ase.optimize import FIRE
from tqdm import tqdm

from boostmd.dynamics.md import langevin, thermal_momenta
from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.peptides import capped_dipeptide, residue_code
from boostmd.forcefields.water import solvated, water_box
from boostmd.training.xtb_data import labelled, xtb_calculator

__all__ = ["WATER", "SolventDataConfig", "SolventRun", "generate"]

logger = logging.getLogger(__name__)

WATER = "water"


@dataclass(frozen=True)
class SolventRun:
    """One sampled cell: pure water (``system == "water"``) or a dipeptide in water."""

    system: str
    waters: int
    density: float
    temperature: float

    @property
    def name(self) -> str:
        """File stem, ``water16_d1.00_300K`` or ``ALA_w26_300K``."""
        if self.system == WATER:
            return f"water{self.waters}_d{self.density:.2f}_{self.temperature:.0f}K"
        return f"{self.system}_w{self.waters}_{self.temperature:.0f}K"

    def build(self, seed: int) -> Atoms:
        """Build the starting cell (random insertion, not yet relaxed)."""
        if self.system == WATER:
            return water_box(self.waters, self.density, seed)
        return solvated(capped_dipeptide(self.system, seed=seed), self.waters, self.density, seed)


@dataclass
class SolventDataConfig:
    """Recipe of the water reference's training data (defaults reproduce the shipped one)."""

    out: Path = Path("data/water/xtb")
    water_molecules: int = 16
    water_densities: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    solutes: list[str] = field(default_factory=lambda: ["ALA", "SER"])
    solute_waters: int = 26
    temperatures: list[float] = field(default_factory=lambda: [300.0, 400.0])
    sampling_method: str = "GFN1-xTB"
    label_method: str = "GFN2-xTB"
    relax_steps: int = 20
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.02
    equilibration_steps: int = 300
    samples: int = 30
    sample_interval: int = 20
    perturbed_fraction: float = 0.25
    perturbation_A: float = 0.04
    seed: int = 0

    def runs(self) -> list[SolventRun]:
        """Every run of the recipe: water at each density, then each solute, per temperature."""
        waters = [
            SolventRun(WATER, self.water_molecules, float(d), float(t))
            for d in self.water_densities
            for t in self.temperatures
        ]
        solutes = [
            SolventRun(residue_code(s), self.solute_waters, 1.0, float(t))
            for s in self.solutes
            for t in self.temperatures
        ]
        return waters + solutes


def _label(atoms: Atoms, method: str, info: dict) -> Atoms | None:
    probe = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    probe.calc = xtb_calculator(method)
    try:
        return labelled(probe, info)
    except Exception as error:  # tblite raises a plain exception when the SCF fails
        logger.warning("%s: xTB label failed (%s); frame skipped", info.get("run"), error)
        return None


def sample_run(config: SolventDataConfig, run: SolventRun) -> list[Atoms]:
    """Relax, equilibrate and sample one cell; return its labelled frames."""
    seed = zlib.crc32(f"{run.name}-{config.seed}".encode())
    rng = np.random.default_rng(seed)
    atoms = run.build(seed % 2**31)
    atoms.calc = xtb_calculator(config.sampling_method)
    FIRE(atoms, logfile=None).run(fmax=0.5, steps=config.relax_steps)
    thermal_momenta(atoms, run.temperature, rng)
    dynamics = langevin(
        atoms, run.temperature, config.timestep_fs, 1000 * config.friction_per_fs, rng
    )
    dynamics.run(config.equilibration_steps)
    info = {
        "run": run.name,
        "residue": run.system,
        "temperature_K": run.temperature,
        "density_g_cm3": run.density,
    }
    frames = []
    for _ in tqdm(range(config.samples), desc=run.name, leave=False):
        dynamics.run(config.sample_interval)
        frames.append(_label(atoms, config.label_method, {**info, "kind": "md"}))
        if rng.random() < config.perturbed_fraction:
            probe = atoms.copy()
            probe.positions += rng.normal(0, config.perturbation_A, probe.positions.shape)
            frames.append(_label(probe, config.label_method, {**info, "kind": "perturbed"}))
    return [frame for frame in frames if frame is not None]


def _wanted(run: SolventRun, systems: list[str] | None, temperatures: list[float] | None):
    if systems is not None and run.system not in {
        WATER if s == WATER else residue_code(s) for s in systems
    }:
        return False
    return temperatures is None or run.temperature in {float(t) for t in temperatures}


def generate(
    config: SolventDataConfig,
    systems: list[str] | None = None,
    temperatures: list[float] | None = None,
) -> list[Path]:
    """Generate (or complete) the recipe's runs; return the files of all its runs.

    Parameters
    ----------
    config
        The recipe.
    systems, temperatures
        Make only the runs of these systems (``"water"``, residue codes) and temperatures
        (default all), to spread the runs over processes; the returned paths are still
        those of every run of the recipe.
    """
    config.out.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in tqdm(config.runs(), desc="xTB runs in water"):
        path = config.out / f"{run.name}.extxyz"
        paths.append(path)
        if path.exists() or not _wanted(run, systems, temperatures):
            continue
        frames = sample_run(config, run)
        partial = path.with_suffix(".partial")
        write(partial, frames, format="extxyz")
        partial.rename(path)
        logger.info("%s: %d frames", path, len(frames))
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command line: make (or complete) the runs of the water reference's data."""
    defaults = SolventDataConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument(
        "--systems", nargs="+", default=None, help="'water' and/or residue codes (default all)"
    )
    parser.add_argument(
        "--temperatures", nargs="+", type=float, default=None, help="only these (default all)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    start_command(logging.INFO, mace=False)
    config = SolventDataConfig(out=args.out, seed=args.seed)
    paths = generate(config, args.systems, args.temperatures)
    done = [p for p in paths if p.exists()]
    print(f"{len(done)} of {len(paths)} runs under {config.out}")


if __name__ == "__main__":
    main()
