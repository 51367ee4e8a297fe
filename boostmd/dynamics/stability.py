"""When does an MD run collapse? Bond-topology checks on a trajectory.

A run has collapsed at the first frame where a covalent bond of the starting structure
deviates from its starting length by more than ``bond_tolerance`` (0.5 Å), or a hydrogen
is farther than ``hydrogen_distance`` (2.5 Å) from the atom it was bonded to (the criteria
of Fu et al., "Forces are not enough", TMLR 2023).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import natural_cutoffs, neighbor_list

__all__ = ["BondTopology", "first_collapse", "start_digest"]


@dataclass(frozen=True)
class BondTopology:
    """Covalent bonds ``(i, j)`` with ``i < j`` and their lengths in the starting frame."""

    pairs: np.ndarray
    lengths: np.ndarray
    hydrogen_pairs: np.ndarray
    symbols: tuple[str, ...]

    @classmethod
    def of(cls, atoms: Atoms, multiplier: float = 1.15) -> BondTopology:
        """Bonds from covalent radii (times ``multiplier``) of a reasonable structure."""
        i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=multiplier))
        keep = i < j
        pairs = np.stack([i[keep], j[keep]], axis=1)
        lengths = atoms.get_distances(pairs[:, 0], pairs[:, 1], mic=True, vector=False)
        is_h = atoms.numbers[pairs] == 1
        return cls(pairs, lengths, pairs[is_h.any(axis=1)], tuple(atoms.get_chemical_symbols()))


def _distances(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)


def first_collapse(
    positions: np.ndarray,
    topology: BondTopology,
    bond_tolerance: float = 0.5,
    hydrogen_distance: float = 2.5,
) -> tuple[int, str] | None:
    """First collapsed frame of ``positions`` (shape ``(T, n, 3)``) and why, or ``None``.

    Examples
    --------
    >>> from ase.build import molecule
    >>> water = molecule("H2O")
    >>> stretched = water.positions + [[0, 0, 0], [0, 0.8, 0], [0, 0, 0]]
    >>> first_collapse(np.stack([water.positions, stretched]), BondTopology.of(water))
    (1, 'bond O0-H1 is 0.70 Å off its starting length')
    """
    positions = np.asarray(positions, dtype=float)
    if not np.isfinite(positions).all():
        frame = int(np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)))[0])
        return frame, "non-finite positions"
    deviation = np.abs(_distances(positions, topology.pairs) - topology.lengths)
    broken = deviation > bond_tolerance
    h_far = _distances(positions, topology.hydrogen_pairs) > hydrogen_distance
    bad_frames = np.flatnonzero(broken.any(axis=1) | h_far.any(axis=1))
    if not len(bad_frames):
        return None
    frame = int(bad_frames[0])
    bond = int(np.argmax(deviation[frame]))
    return frame, (
        f"bond {_name(topology, bond)} is {deviation[frame, bond]:.2f} Å off its starting length"
    )


def _name(topology: BondTopology, bond: int) -> str:
    return "-".join(f"{topology.symbols[i]}{i}" for i in topology.pairs[bond])


def start_digest(atoms: Atoms) -> str:
    """Return a digest of a run's starting structure (its elements and positions to 1e-5 Å).

    Checkpoints carry it, stored reference runs and fits are keyed by it.
    """
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    positions = np.round(np.asarray(atoms.positions, dtype=float), 5)
    return hashlib.sha256(numbers.tobytes() + positions.tobytes()).hexdigest()[:16]
