r"""How stiff the surrogate is along each bond, against the reference: a noise-free check.

A surrogate that is too soft along a bond lets that bond spread wider than the reference
does, and no thermostat can see it: the kinetic temperatures stay right. MD statistics
find it only through the bond-length spread, whose scatter at 1/ps over a few ps is as
large as the error sought (see :mod:`boostmd.training.fit_check`). The curvature along a
bond's stretch, the second derivative of the energy as its two atoms move apart, is a
property of the two models at one frame and needs no sampling:

.. math::

    k_b = -\frac{(F(R + h d_b) - F(R - h d_b)) \cdot d_b}{2 h}

with ``d_b`` the unit stretch of bond ``b`` (its atoms moving apart along the bond, each by
``h / sqrt 2``), the reference's forces at both displaced frames and the surrogate's forces
with its reference frame at ``R`` (as a window framed there sees them). Over thermal
frames, the ratio ``k_surrogate / k_reference`` of a bond group is how stiff the surrogate
is there: a harmonic bond's spread scales as ``1 / sqrt(k)``, so a ratio of 0.83 is a
bond 10% too wide once the window is long against the bond's period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.io import read
from tqdm import tqdm

from boostmd.dynamics.model_calls import ModelCalls
from boostmd.dynamics.stability import BondTopology
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate

__all__ = [
    "BondStiffness",
    "bond_stiffness",
    "bonds_at_frames",
    "reference_curvatures",
    "stiffness_labels_path",
    "stretch_directions",
    "surrogate_curvatures",
    "write_stiffness_labels",
]

STIFFNESS_SUFFIX = ".stiffness.npz"
# bonds labelled per frame at most: 80 reference graphs a frame on any system
LABELLED_BONDS_PER_FRAME = 40
STRETCH_STEP = 0.01  # Å, h above: small against a bond's thermal stretch (0.03-0.05 Å)


@dataclass(frozen=True)
class BondStiffness:
    """Bond-stretch curvatures (eV/Å²) of the reference and the surrogate, per frame and bond.

    ``reference`` and ``surrogate`` have shape ``(frames, bonds)``, ``nan`` where a bond
    was not measured at a frame; ``hydrogen`` marks the X-H bonds.
    """

    reference: np.ndarray
    surrogate: np.ndarray
    hydrogen: np.ndarray

    def ratio(self, group: str) -> float:
        """Return the summed surrogate over reference curvature of ``"xh"`` or ``"heavy"`` bonds.

        ``nan`` for a group without bonds.
        """
        chosen = self.hydrogen if group == "xh" else ~self.hydrogen
        if not chosen.any():
            return math.nan
        return float(np.nansum(self.surrogate[:, chosen]) / np.nansum(self.reference[:, chosen]))

    def spread_ratio(self, group: str) -> float:
        """Return the spread this stiffness implies for a harmonic bond, ``ratio ** -0.5``."""
        ratio = self.ratio(group)
        return ratio**-0.5 if ratio > 0 else math.inf

    def bond_ratios(self) -> np.ndarray:
        """Return each bond's ratio, summed over the frames that measured it, ``(bonds,)``."""
        measured = np.isfinite(self.reference).any(axis=0)
        ratios = np.nansum(self.surrogate, axis=0) / np.nansum(self.reference, axis=0)
        return np.where(measured, ratios, np.nan)

    def as_dict(self) -> dict[str, float]:
        """Return each group's stiffness ratio and implied spread ratio, JSON-ready."""
        return {
            f"{group}_{name}": value
            for group in ("xh", "heavy")
            for name, value in (
                ("stiffness", self.ratio(group)),
                ("implied_spread", self.spread_ratio(group)),
            )
        }


def bonds_at_frames(bonds: int, frames: int, per_frame: int | None) -> list[np.ndarray]:
    """Return the indices of the bonds measured at each frame.

    All of them with ``per_frame`` ``None`` or at least ``bonds``; else ``per_frame`` at a
    time, each frame taking up where the last left off (cycling), so that every bond is
    measured about equally often while a frame costs at most ``2 * per_frame`` reference
    graphs, whatever the system's size.
    """
    if per_frame is None or per_frame >= bonds:
        return [np.arange(bonds)] * frames
    return [(f * per_frame + np.arange(per_frame)) % bonds for f in range(frames)]


def stretch_directions(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Return the unit stretch of each bond, shape ``(bonds, n, 3)``.

    Atom ``i`` of bond ``(i, j)`` moves along ``r_i - r_j`` and ``j`` the opposite way,
    each by ``1 / sqrt 2``: each direction has norm 1, moves no centre of mass and lengthens
    its bond by ``sqrt 2`` per unit step (bonds sharing one of its atoms change by less).
    Molecules only: positions are not unwrapped across periodic boundaries.
    """
    vectors = positions[pairs[:, 0]] - positions[pairs[:, 1]]
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    directions = np.zeros((len(pairs), len(positions), 3))
    bonds = np.arange(len(pairs))
    directions[bonds, pairs[:, 0]] = units / math.sqrt(2)
    directions[bonds, pairs[:, 1]] = -units / math.sqrt(2)
    return directions


def _curvatures(forces_plus, forces_minus, directions, step) -> np.ndarray:
    difference = np.asarray(forces_plus) - np.asarray(forces_minus)
    return -np.einsum("bnk,bnk->b", difference, directions) / (2 * step)


def _displaced(atoms: Atoms, positions: np.ndarray) -> Atoms:
    return Atoms(atoms.numbers, positions, cell=atoms.cell, pbc=atoms.pbc)


def _stretched(probe: np.ndarray, pairs: np.ndarray, step: float):
    directions = stretch_directions(probe, pairs)
    return directions, [*(probe + step * directions), *(probe - step * directions)]


def reference_curvatures(
    reference: MACEReference,
    atoms: Atoms,
    pairs: np.ndarray,
    probe: np.ndarray | None = None,
    step: float = STRETCH_STEP,
) -> np.ndarray:
    """Return the reference's curvatures (eV/Å²) along the bonds' stretches at ``probe``.

    ``probe`` defaults to ``atoms.positions``; one batched reference call of
    ``2 * bonds`` graphs.
    """
    probe = atoms.positions if probe is None else np.asarray(probe, dtype=np.float64)
    directions, displaced = _stretched(probe, pairs, step)
    results = reference.compute_many([_displaced(atoms, p) for p in displaced])
    forces = np.stack([r.forces.double().cpu().numpy() for r in results])
    return _curvatures(forces[: len(pairs)], forces[len(pairs) :], directions, step)


def surrogate_curvatures(
    frame: ReferenceFrame,
    surrogate: Surrogate,
    pairs: np.ndarray,
    probe: np.ndarray,
    step: float = STRETCH_STEP,
    training: bool = False,
) -> torch.Tensor:
    """Return the surrogate's bond-stretch curvatures at ``probe``, framed at ``frame``.

    One surrogate pass over ``2 * bonds`` copies of the frame; with ``training`` the result
    is differentiable in the surrogate's parameters (for a loss on it).
    """
    directions, displaced = _stretched(np.asarray(probe, dtype=np.float64), pairs, step)
    dtype = frame.positions.dtype
    device = frame.positions.device
    positions = torch.as_tensor(np.concatenate(displaced), dtype=dtype, device=device)
    copies = frame.tile(len(displaced))
    _, forces = surrogate.energy_and_forces(copies, positions, training=training)
    forces = forces.reshape(len(displaced), *probe.shape)
    difference = forces[: len(pairs)] - forces[len(pairs) :]
    units = torch.as_tensor(directions, dtype=dtype, device=forces.device)
    return -(difference * units).sum(dim=(1, 2)) / (2 * step)


def bond_stiffness(
    reference: MACEReference,
    surrogate: Surrogate,
    frames: Sequence[Atoms],
    probes: Sequence[np.ndarray] | None = None,
    topology: BondTopology | None = None,
    step: float = STRETCH_STEP,
    bonds_per_frame: int | None = None,
) -> BondStiffness:
    """Measure the bond-stretch curvature of both models at each of ``frames``.

    Parameters
    ----------
    reference, surrogate
        The models; the surrogate is framed at each frame by one reference call there.
    frames
        Thermal frames of one system (for example from the reference's own MD): the
        surrogate's reference frames.
    probes
        Positions ``(n, 3)``, one per frame, where both curvatures are measured (default:
        the frames themselves). A window's later steps, for example the positions a few MD
        steps after each frame, measure the surrogate as a window sees it away from its frame.
    topology
        The bonds (default: those of the first frame).
    step
        Å: the finite-difference step ``h``.
    bonds_per_frame
        Measure at most this many bonds at each frame (:func:`bonds_at_frames`; default
        all): bounds the cost on large systems.

    Returns
    -------
    BondStiffness
        Two reference graphs per measured bond and frame (one batched call per frame),
        surrogate calls on top.
    """
    if not len(frames):
        raise ValueError("bond_stiffness needs at least one frame")
    if probes is None:
        probes = [atoms.positions for atoms in frames]
    if len(probes) != len(frames):
        raise ValueError(f"got {len(probes)} probes for {len(frames)} frames; give one each")
    pairs = (topology or BondTopology.of(frames[0])).pairs
    calls = ModelCalls(reference, surrogate)
    measured = {name: np.full((len(frames), len(pairs)), np.nan) for name in ("ref", "sur")}
    chosen = bonds_at_frames(len(pairs), len(frames), bonds_per_frame)
    for index, (atoms, probe, bonds) in enumerate(zip(frames, probes, chosen, strict=True)):
        probe = np.asarray(probe, dtype=np.float64)
        measured["ref"][index, bonds] = reference_curvatures(
            reference, atoms, pairs[bonds], probe, step
        )
        frame = calls.frame(atoms, calls.reference(atoms))
        with torch.no_grad():
            curvatures = surrogate_curvatures(frame, surrogate, pairs[bonds], probe, step)
        measured["sur"][index, bonds] = curvatures.double().cpu().numpy()
    hydrogen = (np.asarray(frames[0].numbers)[pairs] == 1).any(axis=1)
    return BondStiffness(measured["ref"], measured["sur"], hydrogen)


def stiffness_labels_path(run: Path) -> Path:
    """Return where a run's (``NAME.extxyz``) stiffness labels live: ``NAME.stiffness.npz``."""
    return Path(run).with_suffix(STIFFNESS_SUFFIX)


def write_stiffness_labels(
    reference: MACEReference,
    run: Path,
    frames: int = 8,
    step: float = STRETCH_STEP,
    bonds_per_frame: int | None = LABELLED_BONDS_PER_FRAME,
) -> Path:
    """Label ``frames`` of a run's reference frames with the reference's bond curvatures.

    The frames are spread evenly over the run's reference frames; the file (beside the
    run, :func:`stiffness_labels_path`; written atomically, kept if present) holds their
    ``reference_indices``, the bond ``pairs``, the ``curvatures`` ``(frames, bonds)`` in
    eV/Å² (``nan`` for a bond not labelled at a frame: at most ``bonds_per_frame`` are,
    :func:`bonds_at_frames`), the ``step`` and the reference's ``fingerprint``. Training
    (:class:`~boostmd.training.train.TrainConfig` ``stiffness_weight``) fits the
    surrogate's curvatures to them. Costs ``2 * min(bonds, bonds_per_frame)`` reference
    graphs per frame (TRP's 37 bonds, all labelled: 12 s a frame on this 2-core CPU).
    """
    path = stiffness_labels_path(run)
    if path.is_file():
        return path
    with np.load(Path(run).with_suffix(".npz"), allow_pickle=False) as arrays:
        steps = arrays["reference_steps"]
    indices = np.unique(np.linspace(0, len(steps) - 1, min(frames, len(steps))).round()).astype(int)
    trajectory = read(run, index=":")
    pairs = BondTopology.of(trajectory[0]).pairs
    curvatures = np.full((len(indices), len(pairs)), np.nan)
    chosen = bonds_at_frames(len(pairs), len(indices), bonds_per_frame)
    labelled = tqdm(indices, desc=f"stiffness labels {Path(run).stem}", leave=False)
    for row, (index, bonds) in enumerate(zip(labelled, chosen, strict=True)):
        atoms = trajectory[int(steps[index])]
        curvatures[row, bonds] = reference_curvatures(reference, atoms, pairs[bonds], step=step)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(
        partial,
        reference_indices=indices,
        pairs=pairs,
        curvatures=curvatures,
        step=np.array(step),
        fingerprint=np.array(reference.fingerprint),
    )
    partial.replace(path)
    return path
