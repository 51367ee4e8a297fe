"""The files of a training run: a reference MD run or a file of on-policy windows.

Per run, written atomically so that generation resumes: ``NAME.extxyz`` (positions,
``REF_energy`` and ``REF_forces`` of every frame) and ``NAME.npz`` (``reference_steps``,
their ``node_features``, the reference's ``fingerprint`` and ``window``; no pickles), and
optionally ``NAME.stiffness.npz``, the reference's bond curvatures at some of its
reference frames (:func:`boostmd.training.stiffness.write_stiffness_labels`).
:func:`write_run` writes them (:mod:`boostmd.training.data`,
:mod:`boostmd.training.windows`), :func:`load_trajectories` reads them for training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.io import read, write
from tqdm import tqdm

from boostmd.dynamics.periodic import minimum_image
from boostmd.forcefields.graph import NonCentralForces, pair_forces, radius_graph
from boostmd.forcefields.reference import MACEReference

__all__ = ["Trajectory", "labelled_frame", "load_trajectories", "unwrapped", "write_run"]

ENERGY_KEY, FORCES_KEY = "REF_energy", "REF_forces"


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
    # the run's cell (rows, Å) and periodicity; a molecule by default (NVT: one cell a run)
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    # reference bond curvatures: (reference indices (L,), pairs (B, 2), eV/Å² (L, B), step Å)
    stiffness: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
    # per reference frame: (edge_index, pair forces g, image shifts in Å)
    edges: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=list, repr=False
    )
    # where reference forces that are not central pair forces are reported (once)
    noncentral: NonCentralForces | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.pbc = np.asarray(self.pbc, dtype=bool)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        if self.pbc.any():
            self.positions = unwrapped(self.positions, self.cell, self.pbc)
        if not self.edges:
            for step in self.reference_steps:
                edge_index, shifts = radius_graph(
                    self.positions[step], self.cutoff, self.cell, self.pbc
                )
                edge_index = torch.as_tensor(edge_index)
                shifts = torch.as_tensor(shifts, dtype=torch.float64)
                g = pair_forces(
                    torch.as_tensor(self.positions[step]),
                    torch.as_tensor(self.forces[step]),
                    edge_index,
                    shifts,
                    report=self.noncentral,
                )
                self.edges.append((edge_index, g, shifts))

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


def unwrapped(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Return frames ``(T, n, 3)`` moved by whole cell vectors so that no atom jumps.

    Each frame's atoms are taken in the images nearest to where they were the frame
    before (an integrator or a writer may have wrapped them), so the displacement from a
    reference frame to ``k`` frames later is the atoms' own motion.
    """
    out = np.array(positions, dtype=np.float64, copy=True)
    for t in range(1, len(out)):
        out[t] = out[t - 1] + minimum_image(out[t] - out[t - 1], cell, pbc)
    return out


def labelled_frame(atoms: Atoms, results: dict) -> Atoms:
    """Return a bare copy of ``atoms`` (with its cell) labelled with energy and forces."""
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info[ENERGY_KEY] = float(results["energy"])
    frame.arrays[FORCES_KEY] = results["forces"].copy()
    return frame


def write_run(
    path: Path,
    frames: list[Atoms],
    reference_steps: np.ndarray,
    node_features: np.ndarray,
    reference: MACEReference,
    window: int = 0,
) -> None:
    """Write a run's ``.extxyz`` and ``.npz`` atomically (``.partial`` files, then renames).

    ``window > 0`` marks a file of independent windows (:mod:`boostmd.training.windows`).
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
    trajectories, noncentral = [], NonCentralForces()
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
                cell=np.array(frames[0].cell),
                pbc=frames[0].pbc,
                stiffness=_stiffness_labels(path, fingerprint),
                noncentral=noncentral,
            )
        )
    return trajectories


def _stiffness_labels(path: Path, fingerprint: str):
    """Return the run's stiffness labels (``NAME.stiffness.npz``), if it has them."""
    labels = path.with_suffix(".stiffness.npz")
    if not labels.is_file():
        return None
    with np.load(labels, allow_pickle=False) as arrays:
        if str(arrays["fingerprint"]) != fingerprint:
            raise ValueError(
                f"{labels} was made with reference {arrays['fingerprint']}, not {fingerprint}; "
                "delete it to label the run again with this reference"
            )
        return (
            arrays["reference_indices"],
            arrays["pairs"],
            arrays["curvatures"],
            float(arrays["step"]),
        )
