"""Training data for a surrogate: reference MD trajectories and (frame, frame + k) pairs.

The reference model runs Langevin MD itself (the teacher is the reference). Every frame
keeps its energy and forces; every ``stride``-th frame is a candidate reference frame and
also keeps its node features. A training pair is a reference frame ``r`` and the frame
``r + k`` for ``k = 1..max_k``, labelled with the reference's energy and forces there.

With ``--surrogate`` and ``--windows-from``, the data are *on-policy windows* instead
(:mod:`boostmd.windows`): single BoostMD windows driven by the surrogate from frames of
existing reference runs, labelled by the reference, to fine-tune on (``python -m
boostmd.train --init``) in the spirit of DAgger.

Files per (structure, temperature) run, written atomically so generation resumes:
``NAME.extxyz`` (positions, ``REF_energy``, ``REF_forces`` of every frame) and
``NAME.npz`` (``reference_steps`` and their ``node_features``; no pickles).

    python -m boostmd.data --reference REFERENCE.pt --out data/pairs --peptides ALA GLY
"""

from __future__ import annotations

import argparse
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.io import read, write
from tqdm import tqdm

from boostmd.calculator import ReferenceCalculator
from boostmd.cli import start
from boostmd.graph import pair_forces, radius_graph
from boostmd.md import langevin, thermal_momenta
from boostmd.reference import MACEReference
from boostmd.surrogate import Surrogate

__all__ = ["PairDataConfig", "Trajectory", "generate_trajectories", "load_trajectories"]

logger = logging.getLogger(__name__)

ENERGY_KEY, FORCES_KEY = "REF_energy", "REF_forces"


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


@dataclass
class Trajectory:
    """One reference MD run, in memory, with per-reference-frame precomputations."""

    name: str
    numbers: np.ndarray
    positions: np.ndarray  # (T, n, 3)
    energies: np.ndarray  # (T,)
    forces: np.ndarray  # (T, n, 3)
    reference_steps: np.ndarray  # (R,)
    node_features: np.ndarray  # (R, n, F)
    cutoff: float
    window: int = 0  # > 0: independent windows of this many steps after each reference frame
    edges: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.edges:
            for step in self.reference_steps:
                edge_index, _ = radius_graph(self.positions[step], self.cutoff)
                edge_index = torch.as_tensor(edge_index)
                g = pair_forces(
                    torch.as_tensor(self.positions[step]),
                    torch.as_tensor(self.forces[step]),
                    edge_index,
                    torch.zeros(edge_index.shape[1], 3, dtype=torch.float64),
                )
                self.edges.append((edge_index, g))

    def pairs(self, max_k: int, steps: slice | None = None) -> list[tuple[int, int]]:
        """All ``(reference index, k)`` with ``k <= max_k`` inside the run (or ``steps``).

        In a file of windows, ``k`` also stays within the reference frame's own window.
        """
        last = len(self.positions) - 1
        if self.window:
            max_k = min(max_k, self.window)
        start, stop = (0, last + 1) if steps is None else (steps.start or 0, steps.stop)
        return [
            (i, k)
            for i, step in enumerate(self.reference_steps)
            if start <= step < stop
            for k in range(1, max_k + 1)
            if step + k < min(stop, last + 1)
        ]


def labelled_frame(atoms: Atoms, results: dict) -> Atoms:
    """Return a bare copy of ``atoms`` labelled with a calculator's energy and forces."""
    frame = Atoms(atoms.numbers, atoms.positions)
    frame.info[ENERGY_KEY] = float(results["energy"])
    frame.arrays[FORCES_KEY] = results["forces"].copy()
    return frame


def _run_name(residue_or_name: str, temperature: float) -> str:
    return f"{residue_or_name}_{temperature:.0f}K"


def _simulate(
    reference: MACEReference, atoms: Atoms, temperature: float, config: PairDataConfig, name: str
) -> tuple[list[Atoms], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(f"{name}-{config.seed}".encode()))
    atoms = atoms.copy()
    atoms.calc = ReferenceCalculator(reference)
    thermal_momenta(atoms, temperature, rng)
    dynamics = langevin(atoms, temperature, config.timestep_fs, config.friction_per_ps, rng)
    dynamics.run(config.equilibration_steps)
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


def write_run(
    path: Path,
    frames: list[Atoms],
    reference_steps: np.ndarray,
    node_features: np.ndarray,
    reference: MACEReference,
    window: int = 0,
) -> None:
    """Write a run's ``.extxyz`` and ``.npz`` atomically (``.partial`` files, then renames).

    ``window > 0`` marks a file of independent windows (:mod:`boostmd.windows`).
    """
    partial = path.with_suffix(".partial")
    with open(path.with_suffix(".npz.partial"), "wb") as handle:
        np.savez_compressed(
            handle,
            reference_steps=reference_steps,
            node_features=node_features,
            fingerprint=np.array(reference.fingerprint),
            window=np.array(window),
        )
    write(partial, frames, format="extxyz")
    path.with_suffix(".npz.partial").rename(path.with_suffix(".npz"))
    partial.rename(path)


def load_trajectories(paths: list[Path], cutoff: float, fingerprint: str) -> list[Trajectory]:
    """Read runs written by :func:`generate_trajectories`.

    Raises
    ------
    FileNotFoundError
        If a run's ``.extxyz`` or ``.npz`` is missing.
    ValueError
        If a run was made with a different reference model.
    """
    trajectories = []
    for path in tqdm(paths, desc="loading trajectories", leave=False):
        path = Path(path)
        arrays_path = path.with_suffix(".npz")
        for needed in (path, arrays_path):
            if not needed.is_file():
                raise FileNotFoundError(
                    f"missing {needed}; generate it with python -m boostmd.data"
                )
        with np.load(arrays_path, allow_pickle=False) as arrays:
            made_with = str(arrays["fingerprint"])
            if made_with != fingerprint:
                raise ValueError(
                    f"{path} was made with reference {made_with}, not {fingerprint}; "
                    "regenerate the data with this reference"
                )
            steps, features = arrays["reference_steps"], arrays["node_features"]
            window = int(arrays["window"]) if "window" in arrays else 0
        frames = read(path, index=":")
        trajectories.append(
            Trajectory(
                name=path.stem,
                numbers=frames[0].numbers,
                positions=np.stack([f.positions for f in frames]),
                energies=np.array([f.info[ENERGY_KEY] for f in frames]),
                forces=np.stack([f.arrays[FORCES_KEY] for f in frames]),
                reference_steps=steps,
                node_features=features,
                cutoff=cutoff,
                window=window,
            )
        )
    return trajectories


def main(argv: list[str] | None = None) -> None:
    """Command line: generate reference MD runs for capped dipeptides."""
    from boostmd.peptides import capped_dipeptide, residue_code

    defaults = PairDataConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="reference MACE weights (boostmd.mace_io format)",
    )
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--peptides", nargs="+", default=defaults.peptides)
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
    start(logging.INFO)
    reference = MACEReference.load(args.reference)
    if (args.surrogate is None) != (args.windows_from is None):
        raise SystemExit("on-policy windows need both --surrogate and --windows-from")
    if args.surrogate is not None:
        _generate_windows(reference, args)
        return
    config = PairDataConfig(
        out=args.out,
        peptides=args.peptides,
        temperatures=args.temperatures,
        steps=args.steps,
        stride=args.stride,
        seed=args.seed,
        friction_per_ps=args.friction,
        equilibration_steps=args.equilibration_steps,
    )
    structures = {residue_code(p): capped_dipeptide(p) for p in config.peptides}
    paths = generate_trajectories(reference, structures, config)
    print(f"{len(paths)} runs under {config.out}")


def _generate_windows(reference: MACEReference, args: argparse.Namespace) -> None:
    from boostmd.calculator import check_compatible
    from boostmd.windows import WindowConfig, generate_windows

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
