"""Training data for a surrogate: reference MD trajectories and (frame, frame + k) pairs.

The reference model runs Langevin MD itself (the teacher is the reference). Every frame
keeps its energy and forces; every ``stride``-th frame is a candidate reference frame and
also keeps its node features. A training pair is a reference frame ``r`` and the frame
``r + k`` for ``k = 1..max_k``, labelled with the reference's energy and forces there.

With ``--surrogate`` and ``--windows-from``, the data are *on-policy windows* instead
(:mod:`boostmd.training.windows`): single BoostMD windows driven by the surrogate from frames of
existing reference runs, labelled by the reference, to fine-tune on (``python -m
boostmd.training.train --init``) in the spirit of DAgger.

Files per (structure, temperature) run, written atomically so generation resumes:
``NAME.extxyz`` (positions, ``REF_energy``, ``REF_forces`` of every frame) and
``NAME.npz`` (``reference_steps`` and their ``node_features``; no pickles).

    python -m boostmd.data --reference REFERENCE.pt --out data/pairs --peptides ALA GLY
    python -m boostmd.data --reference dipeptides --out data/aspirin --structure aspirin.xyz
"""

from __future__ import annotations

import argparse
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from tqdm import tqdm

from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import langevin, thermal_momenta
from boostmd.dynamics.periodic import whole_molecules
from boostmd.forcefields.elements import element_indices
from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.pretrained import load_reference
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import Surrogate
from boostmd.training.run_files import labelled_frame, write_run

__all__ = ["PairDataConfig", "generate_trajectories"]

logger = logging.getLogger(__name__)


@dataclass
class PairDataConfig:
    """Recipe of a surrogate's training trajectories."""

    out: Path = Path("data/pairs")
    peptides: list[str] = field(default_factory=lambda: ["ALA"])
    temperatures: list[float] = field(default_factory=lambda: [300.0, 500.0])
    steps: int = 2000
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    equilibration_steps: int = 200
    stride: int = 5
    seed: int = 0
    # friction (1/ps) of the equilibration steps; None: friction_per_ps. At 1/ps a run
    # from a minimum with 300 K momenta needs about a picosecond to fill its potential
    # energy, so a short equilibration at 1/ps leaves the first frames too cold.
    equilibration_friction_per_ps: float | None = None


def _run_name(residue_or_name: str, temperature: float) -> str:
    return f"{residue_or_name}_{temperature:.0f}K"


def _simulate(
    reference: MACEReference, atoms: Atoms, temperature: float, config: PairDataConfig, name: str
) -> tuple[list[Atoms], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(f"{name}-{config.seed}".encode()))
    atoms = atoms.copy()
    atoms.calc = ReferenceCalculator(reference)
    thermal_momenta(atoms, temperature, rng)
    equilibration = config.equilibration_friction_per_ps or config.friction_per_ps
    langevin(atoms, temperature, config.timestep_fs, equilibration, rng).run(
        config.equilibration_steps
    )
    dynamics = langevin(atoms, temperature, config.timestep_fs, config.friction_per_ps, rng)
    frames, reference_steps, features = [], [], []
    for step in tqdm(range(config.steps), desc=name, leave=False):
        if step:
            dynamics.run(1)
        atoms.get_forces()
        labels = atoms.calc.results
        frames.append(labelled_frame(atoms, labels))
        if step % config.stride == 0:
            reference_steps.append(step)
            features.append(labels["node_features"])
    return frames, np.asarray(reference_steps), np.asarray(features, dtype=np.float32)


def generate_trajectories(
    reference: MACEReference, structures: dict[str, Atoms], config: PairDataConfig
) -> list[Path]:
    """Run (or finish running) reference MD for every structure and temperature.

    Parameters
    ----------
    reference
        The reference model (the teacher).
    structures
        Starting structures by name.
    config
        The recipe.

    Returns
    -------
    list of Path
        The ``.extxyz`` file of each run (its ``.npz`` lies beside it).
    """
    config.out.mkdir(parents=True, exist_ok=True)
    paths = []
    jobs = [
        (name, atoms, float(t)) for name, atoms in structures.items() for t in config.temperatures
    ]
    for name, atoms, temperature in tqdm(jobs, desc="reference MD runs"):
        run = _run_name(name, temperature)
        path = config.out / f"{run}.extxyz"
        paths.append(path)
        if path.exists() and path.with_suffix(".npz").exists():
            continue
        frames, steps, features = _simulate(reference, atoms, temperature, config, run)
        write_run(path, frames, steps, features, reference)
    return paths


def read_structures(paths: list[Path], reference: MACEReference) -> dict[str, Atoms]:
    """Read structure files by name (each file's stem), checked against the reference.

    Raises
    ------
    FileNotFoundError
        For a missing file.
    ValueError
        For a file ASE cannot read, two files of one name, NaN positions, a periodic axis
        without a cell vector, or an element the reference does not know.

    Molecules split across a periodic cell's faces (a wrapped file) are made whole
    (:func:`~boostmd.dynamics.periodic.whole_molecules`).
    """
    structures = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"structure file {path} does not exist")
        try:
            atoms = read(path)
        except Exception as error:
            raise ValueError(
                f"ASE cannot read {path} ({error}); give a structure file ASE reads (xyz, "
                "extxyz, pdb, cif, ...)"
            ) from error
        if path.stem in structures:
            raise ValueError(f"two structure files are named {path.stem}: rename one")
        if not np.isfinite(atoms.positions).all():
            raise ValueError(f"{path} has NaN or infinite positions")
        periodic = atoms.pbc
        if periodic.any() and np.linalg.matrix_rank(atoms.cell[periodic]) < periodic.sum():
            raise ValueError(
                f"{path} is periodic along {np.flatnonzero(periodic).tolist()} but has no "
                "cell vectors there; give the cell (an extxyz Lattice, a cif) or pbc False"
            )
        element_indices(atoms.numbers, reference.atomic_numbers, f"the reference ({path})")
        structures[path.stem] = whole_molecules(atoms)  # no molecule split across a face
    return structures


def main(argv: list[str] | None = None) -> None:
    """Command line: generate reference MD runs for capped dipeptides or structure files."""
    from boostmd.forcefields.peptides import capped_dipeptide, residue_code

    defaults = PairDataConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference",
        required=True,
        help="the reference: a shipped name (dipeptides), a weights file "
        "(boostmd.forcefields.mace_io format), or with --pickled-reference a mace-torch .model",
    )
    parser.add_argument(
        "--pickled-reference",
        action="store_true",
        help="--reference is a mace-torch .model (a pickle: loading it runs code from the "
        "file; trust it)",
    )
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument(
        "--peptides", nargs="+", default=None, help="capped dipeptides by amino-acid code"
    )
    parser.add_argument(
        "--structure",
        type=Path,
        nargs="+",
        default=[],
        help="structure files ASE reads (xyz, extxyz, pdb, cif); runs are named after "
        "each file's stem",
    )
    parser.add_argument("--temperatures", nargs="+", type=float, default=defaults.temperatures)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--stride", type=int, default=defaults.stride)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--equilibration-steps", type=int, default=defaults.equilibration_steps)
    parser.add_argument("--friction", type=float, default=defaults.friction_per_ps, help="1/ps")
    parser.add_argument(
        "--surrogate",
        type=Path,
        default=None,
        help="on-policy windows: this surrogate drives single windows from the frames of "
        "--windows-from, the reference labels every frame",
    )
    parser.add_argument(
        "--windows-from", type=Path, default=None, help="directory of reference runs"
    )
    parser.add_argument("--window", type=int, default=12, help="surrogate steps per window")
    parser.add_argument("--every", type=int, default=12, help="a window every this many frames")
    args = parser.parse_args(argv)
    start_command(logging.INFO)
    reference = load_reference(args.reference, pickled=args.pickled_reference)
    if (args.surrogate is None) != (args.windows_from is None):
        raise SystemExit("on-policy windows need both --surrogate and --windows-from")
    if args.surrogate is not None:
        _generate_windows(reference, args)
        return
    peptides = args.peptides if args.peptides is not None else ([] if args.structure else ["ALA"])
    config = PairDataConfig(
        out=args.out,
        peptides=peptides,
        temperatures=args.temperatures,
        steps=args.steps,
        stride=args.stride,
        seed=args.seed,
        friction_per_ps=args.friction,
        equilibration_steps=args.equilibration_steps,
    )
    structures = {residue_code(p): capped_dipeptide(p) for p in config.peptides}
    structures.update(read_structures(args.structure, reference))
    paths = generate_trajectories(reference, structures, config)
    print(f"{len(paths)} runs under {config.out}")


def _generate_windows(reference: MACEReference, args: argparse.Namespace) -> None:
    from boostmd.dynamics.calculator import check_compatible
    from boostmd.training.windows import WindowConfig, generate_windows

    sources = sorted(Path(args.windows_from).glob("*.extxyz"))
    if not sources:
        raise SystemExit(f"--windows-from {args.windows_from} holds no runs (*.extxyz)")
    surrogate = Surrogate.load(args.surrogate, dtype=reference.dtype)
    check_compatible(reference, surrogate)
    config = WindowConfig(
        window=args.window,
        every=args.every,
        friction_per_ps=args.friction,
        seed=args.seed,
    )
    paths = generate_windows(reference, surrogate, sources, args.out, config)
    print(f"{len(paths)} window files under {args.out}")


if __name__ == "__main__":
    main()
