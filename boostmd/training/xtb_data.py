"""GFN2-xTB training data for the reference MACE: dipeptide MD at several temperatures.

For each capped dipeptide and temperature, Langevin MD with GFN2-xTB (tblite) samples
configurations; a share of them is also perturbed by Gaussian noise and relabelled, to
cover strained geometries. Each (peptide, temperature) run is written atomically to its
own extxyz file with ``REF_energy`` / ``REF_forces``, so an interrupted generation resumes
where it stopped.

    python -m boostmd.xtb_data --out data/xtb --peptides ALA GLY SER --temperatures 300 600
"""

from __future__ import annotations

import argparse
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write
from tqdm import tqdm

from boostmd.dynamics.md import langevin, thermal_momenta
from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.peptides import capped_dipeptide, residue_code

__all__ = ["XTBDataConfig", "generate", "labelled", "xtb_calculator"]

logger = logging.getLogger(__name__)

ENERGY_KEY, FORCES_KEY, STRESS_KEY = "REF_energy", "REF_forces", "REF_stress"


@dataclass
class XTBDataConfig:
    """Recipe of the reference training data (defaults reproduce the shipped model)."""

    out: Path = Path("data/xtb")
    peptides: list[str] = field(
        default_factory=lambda: [
            "ALA",
            "GLY",
            "SER",
            "VAL",
            "LEU",
            "PHE",
            "ASN",
            "ASP",
            "LYS",
            "MET",
            "THR",
            "ILE",
            "GLN",
            "TRP",
        ]
    )
    temperatures: list[float] = field(default_factory=lambda: [300.0, 450.0, 600.0])
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.02
    equilibration_steps: int = 200
    samples: int = 60
    sample_interval: int = 20
    perturbed_fraction: float = 0.25
    perturbation_A: float = 0.04
    seed: int = 0


def xtb_calculator(method: str = "GFN2-xTB"):
    """Return a quiet tblite calculator (``GFN2-xTB`` or ``GFN1-xTB``; both do 3D cells)."""
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise ImportError("xTB labels need tblite: pip install 'boostmd[data]'") from error
    return TBLite(method=method, verbosity=0)


def labelled(atoms: Atoms, info: dict) -> Atoms:
    """Return a copy of ``atoms`` with its calculator's energy and forces under the REF_ keys.

    A cell periodic along all three vectors keeps its cell and gets ``REF_stress`` too
    (eV/Å^3, ASE's sign), which the reference is trained on for barostats.
    """
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update(info, **{ENERGY_KEY: atoms.get_potential_energy()})
    frame.arrays[FORCES_KEY] = atoms.get_forces()
    if atoms.pbc.all():
        frame.info[STRESS_KEY] = atoms.get_stress(voigt=False)
    return frame


def _run(config: XTBDataConfig, residue: str, temperature: float) -> list[Atoms]:
    seed = zlib.crc32(f"{residue}-{temperature}-{config.seed}".encode())
    rng = np.random.default_rng(seed)
    atoms = capped_dipeptide(residue, seed=config.seed)
    atoms.calc = xtb_calculator()
    thermal_momenta(atoms, temperature, rng)
    dynamics = langevin(atoms, temperature, config.timestep_fs, 1000 * config.friction_per_fs, rng)
    dynamics.run(config.equilibration_steps)
    info = {"residue": residue, "temperature_K": temperature}
    frames = []
    for _ in range(config.samples):
        dynamics.run(config.sample_interval)
        frames.append(labelled(atoms, {**info, "kind": "md"}))
        if rng.random() < config.perturbed_fraction:
            probe = Atoms(
                atoms.numbers,
                atoms.positions + rng.normal(0, config.perturbation_A, atoms.positions.shape),
            )
            probe.calc = xtb_calculator()
            frames.append(labelled(probe, {**info, "kind": "perturbed"}))
    return frames


def generate(config: XTBDataConfig) -> list[Path]:
    """Generate (or complete) the dataset; returns the per-run extxyz files."""
    config.out.mkdir(parents=True, exist_ok=True)
    jobs = [(residue_code(p), float(t)) for p in config.peptides for t in config.temperatures]
    paths = []
    for residue, temperature in tqdm(jobs, desc="xTB MD runs"):
        path = config.out / f"{residue}_{temperature:.0f}K.extxyz"
        paths.append(path)
        if path.exists():
            continue
        frames = _run(config, residue, temperature)
        partial = path.with_suffix(".partial")
        write(partial, frames, format="extxyz")
        partial.rename(path)
    return paths


def load(paths: list[Path]) -> list[Atoms]:
    """Read the frames of several runs."""
    return [frame for path in paths for frame in read(path, index=":")]


def main(argv: list[str] | None = None) -> None:
    """Command line: map arguments onto :class:`XTBDataConfig` and generate."""
    defaults = XTBDataConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--peptides", nargs="+", default=defaults.peptides)
    parser.add_argument("--temperatures", nargs="+", type=float, default=defaults.temperatures)
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--sample-interval", type=int, default=defaults.sample_interval)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    start_command(logging.INFO, mace=False)
    config = XTBDataConfig(
        out=args.out,
        peptides=args.peptides,
        temperatures=args.temperatures,
        samples=args.samples,
        sample_interval=args.sample_interval,
        seed=args.seed,
    )
    paths = generate(config)
    print(
        f"{sum(len(read(p, index=':')) for p in paths)} frames in {len(paths)} files "
        f"under {config.out}"
    )


if __name__ == "__main__":
    main()
