"""Bond angles and intermolecular pair distances: what a liquid's validation compares.

Bond lengths (:class:`~boostmd.dynamics.stability.BondTopology`) say whether a sampler
keeps each molecule's vibrations right; a solvent needs two more statistics, both
configurational, so no thermostat sets them by construction:

- **bond angles** (every two bonds of the starting structure that share an atom: water's
  H-O-H, a peptide's backbone and side-chain angles), in degrees;
- **intermolecular pair distances**: distances between heavy atoms of different molecules
  (water's O-O) up to :func:`pair_cutoff`, binned every :data:`PAIR_BIN` Å, under the
  minimum image in a periodic cell. Their histogram is the radial distribution function
  up to a known factor (:func:`radial_distribution`), and the Wasserstein distance
  between two runs' pooled distances (:func:`histogram_w1`) is the validation's metric.

Molecules are the connected components of the starting structure's bonds. Angles come
from raw position differences, right for the unwrapped trajectories ASE's integrators
make (each molecule stays whole).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from boostmd.dynamics.stability import BondTopology

__all__ = [
    "PAIR_BIN",
    "PAIR_EVERY",
    "PAIR_MAX",
    "IntermolecularPairs",
    "bond_angle_triples",
    "bond_angles",
    "histogram_rows",
    "histogram_w1",
    "radial_distribution",
]

PAIR_BIN = 0.05  # Å
PAIR_MAX = 6.0  # Å: the first two O-O shells of water
PAIR_EVERY = 10  # frames between histograms (a liquid's structure decorrelates over ps)


def bond_angle_triples(pairs: np.ndarray) -> np.ndarray:
    """Return every ``(i, centre, k)`` with bonds ``i-centre`` and ``centre-k``, ``i < k``.

    >>> bond_angle_triples(np.array([[0, 1], [0, 2]]))
    array([[1, 0, 2]])
    """
    triples = []
    atoms = np.unique(pairs) if len(pairs) else np.zeros(0, dtype=int)
    for centre in atoms:
        bonded = np.sort(
            np.concatenate([pairs[pairs[:, 0] == centre, 1], pairs[pairs[:, 1] == centre, 0]])
        )
        triples += [(i, centre, k) for n, i in enumerate(bonded) for k in bonded[n + 1 :]]
    return np.array(triples, dtype=int).reshape(-1, 3)


def bond_angles(positions: np.ndarray, triples: np.ndarray) -> np.ndarray:
    """Return the angles (degrees) at each triple's centre atom."""
    first = positions[triples[:, 0]] - positions[triples[:, 1]]
    second = positions[triples[:, 2]] - positions[triples[:, 1]]
    cosine = np.sum(first * second, axis=1) / (
        np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    )
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def pair_cutoff(atoms: Atoms) -> float:
    """Return the largest distance binned: :data:`PAIR_MAX`, or less in a small cell.

    Along a periodic axis the minimum image is unique only below half the cell's height
    (the distance between its opposite faces).
    """
    cutoff = PAIR_MAX
    if atoms.pbc.any():
        heights = atoms.cell.volume / np.linalg.norm(
            np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1
        )
        cutoff = min(cutoff, 0.5 * float(heights[atoms.pbc].min()))
    return PAIR_BIN * np.floor(cutoff / PAIR_BIN)


class IntermolecularPairs:
    """The heavy-atom pairs of different molecules of a starting structure, and their histogram.

    Parameters
    ----------
    atoms
        The starting structure (its cell and periodicity are kept for the minimum image).
    topology
        Its bonds, which define the molecules.
    """

    def __init__(self, atoms: Atoms, topology: BondTopology) -> None:
        count = len(atoms)
        pairs = topology.pairs
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
        _, molecule = connected_components(graph, directed=False)
        heavy = np.flatnonzero(atoms.numbers != 1)
        i, j = np.triu_indices(len(heavy), k=1)
        apart = molecule[heavy[i]] != molecule[heavy[j]]
        self.pairs = np.stack([heavy[i][apart], heavy[j][apart]], axis=1)
        self.cutoff = pair_cutoff(atoms)
        self.edges = np.arange(0.0, self.cutoff + PAIR_BIN / 2, PAIR_BIN)
        self.cell, self.pbc = atoms.cell.copy(), atoms.pbc.copy()

    @property
    def bins(self) -> int:
        """Number of histogram bins."""
        return len(self.edges) - 1

    def histogram(self, positions: np.ndarray, cell=None) -> np.ndarray:
        """Return the counts of pair distances per bin (int32) at ``positions``.

        ``cell``: the frame's cell when it changes during a run (default: the start's).
        """
        vectors = positions[self.pairs[:, 1]] - positions[self.pairs[:, 0]]
        if self.pbc.any():
            vectors, _ = find_mic(vectors, self.cell if cell is None else cell, self.pbc)
        counts, _ = np.histogram(np.linalg.norm(vectors, axis=1), bins=self.edges)
        return counts.astype(np.int32)


def histogram_rows(frames: int) -> int:
    """Return how many histograms a run keeps of its first ``frames`` frames.

    One every :data:`PAIR_EVERY` frames, from frame 0.

    >>> histogram_rows(0), histogram_rows(1), histogram_rows(10), histogram_rows(11)
    (0, 1, 1, 2)
    """
    return -(-frames // PAIR_EVERY)


def histogram_w1(first: np.ndarray, second: np.ndarray, width: float = PAIR_BIN) -> float:
    """Return the Wasserstein-1 distance between two histograms on the same bins.

    ``first`` and ``second`` are counts (any shape ending in the bins; leading axes are
    summed), each normalised to a distribution; ``nan`` if either is empty.

    >>> histogram_w1(np.array([1, 0, 0]), np.array([0, 0, 1]), width=0.5)
    1.0
    """
    a = np.asarray(first, dtype=float).reshape(-1, np.shape(first)[-1]).sum(axis=0)
    b = np.asarray(second, dtype=float).reshape(-1, np.shape(second)[-1]).sum(axis=0)
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    return float(width * np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum())).sum())


def radial_distribution(
    counts: np.ndarray, pairs: int, volume: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return bin centres (Å) and g(r) from pair-distance histograms of frames.

    ``counts``: shape ``(frames, bins)`` from :meth:`IntermolecularPairs.histogram`;
    ``pairs``: the number of pairs binned; ``volume``: the cell's volume (Å^3). g(r) is
    the mean count over what ``pairs`` uniformly spread pairs would put in each shell.
    """
    counts = np.asarray(counts, dtype=float).reshape(-1, np.shape(counts)[-1])
    edges = PAIR_BIN * np.arange(counts.shape[1] + 1)
    shells = 4.0 / 3.0 * np.pi * np.diff(edges**3)
    return 0.5 * (edges[1:] + edges[:-1]), counts.mean(axis=0) / (pairs * shells / volume)
