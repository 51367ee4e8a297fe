"""A coarse space of molecular rigid motions for the pair-force solve.

The pair-force decomposition solves ``J^T J s = -F`` (:class:`~.graph.PairForceSolver`).
Molecules that touch only through a few edges (a gas of molecules in a box, fragments at
the edge of the cutoff) make ``J^T J`` nearly singular along each molecule's rigid
motions: the edges inside a molecule cannot resist them, and the few between molecules
barely do. The block-Jacobi preconditioner is local to each atom and cannot see such
collective modes, so conjugate gradients crawl along them: on 27 alanine dipeptides on a
12 Å grid (594 atoms), 45 thermal steps from the built structure, 1474 iterations
without reaching the goal, where the molecules' net forces (0.8% of the forces) have to
be carried by the edges between them.

The two-level preconditioner adds a correction in the span of ``Z``, the translations and
rotations of each covalently bonded component (a molecule):

    M^-1 r = B^-1 r + Z E^+ Z^T r,    E = Z^T (J^T J) Z,

with ``B`` the block-Jacobi blocks and ``E^+`` the pseudo-inverse of the small, dense
coarse matrix (its null space holds the rigid motions of the whole system, and those
of molecules no edge touches). ``M^-1`` is symmetric positive definite whatever ``Z``
is, so the solution is the same; only the iterations change (on that frame, 65 after
the 100 that block-Jacobi is given first: :meth:`~.graph.PairForceSolver.solve`).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import covalent_radii
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "BOND_SCALE",
    "MAX_COARSE_DIMENSION",
    "bonded_components",
    "coarse_space",
    "molecular_rigid_motions",
]


BOND_SCALE = 1.2  # an edge is a bond below this times the sum of the covalent radii
MAX_COARSE_DIMENSION = 1200  # six per molecule; above it (200 molecules) no coarse space
EIGENVALUE_RTOL = 1e-10  # coarse modes below this times the largest are left out


def bonded_components(
    numbers: np.ndarray, edge_index: np.ndarray, lengths: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Label the covalently bonded components (molecules) of a graph.

    Parameters
    ----------
    numbers
        Atomic numbers, shape ``(n,)``.
    edge_index
        Directed edges, shape ``(2, n_edges)``.
    lengths
        Edge lengths in Å, shape ``(n_edges,)``.

    Returns
    -------
    count : int
        Number of components.
    labels : numpy.ndarray
        Component of each atom, shape ``(n,)``.
    bonds : numpy.ndarray
        Indices of the edges that are bonds.
    """
    src, dst = edge_index
    radii = covalent_radii[numbers]
    bonds = np.flatnonzero(lengths < BOND_SCALE * (radii[src] + radii[dst]))
    n = len(numbers)
    adjacency = coo_matrix((np.ones(len(bonds)), (src[bonds], dst[bonds])), shape=(n, n))
    count, labels = connected_components(adjacency, directed=False)
    return count, labels, bonds


def _unwrapped(
    positions: np.ndarray, vectors: np.ndarray, edge_index: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Positions with each component whole: atoms placed along its bonds' vectors.

    In a periodic cell a molecule can straddle a face; its rigid rotations need its atoms
    in one image. Each component's first atom stays; the others are placed from a placed
    neighbour along the bond's own vector (image shift included), a breadth-first sweep.
    """
    whole = positions.copy()
    placed = np.zeros(len(positions), dtype=bool)
    placed[np.unique(labels, return_index=True)[1]] = True
    src, dst = edge_index
    while not placed.all():
        step = placed[src] & ~placed[dst]
        if not step.any():
            break  # atoms with no bond path to their root stay where they are
        targets, first = np.unique(dst[step], return_index=True)
        whole[targets] = whole[src[step][first]] + vectors[step][first]
        placed[targets] = True
    return whole


def _rigid_motions(whole: np.ndarray, labels: np.ndarray, count: int) -> torch.Tensor:
    """Return the sparse ``(3n, 6 count)`` basis of each component's rigid motions."""
    n = len(labels)
    centres = np.zeros((count, 3))
    np.add.at(centres, labels, whole)
    centres /= np.bincount(labels, minlength=count)[:, None]
    arm = whole - centres[labels]
    rows, columns, values = [], [], []
    for axis in range(3):
        rows.append(3 * np.arange(n) + axis)
        columns.append(6 * labels + axis)
        values.append(np.ones(n))
        turn = np.cross(np.eye(3)[axis], arm)  # (n, 3): axis x arm
        for k in range(3):
            rows.append(3 * np.arange(n) + k)
            columns.append(6 * labels + 3 + axis)
            values.append(turn[:, k])
    indices = torch.as_tensor(np.stack([np.concatenate(rows), np.concatenate(columns)]))
    return torch.sparse_coo_tensor(
        indices,
        torch.as_tensor(np.concatenate(values)),
        (3 * n, 6 * count),
        check_invariants=False,
    ).coalesce()


def molecular_rigid_motions(
    numbers: np.ndarray, edge_index: torch.Tensor, vectors: torch.Tensor, positions: torch.Tensor
) -> tuple[int, torch.Tensor]:
    """Return the molecules' count and the translations and rotations of each.

    Parameters
    ----------
    numbers
        Atomic numbers, shape ``(n,)``.
    edge_index
        Directed edges, shape ``(2, n_edges)``.
    vectors
        Edge vectors (image shifts included) in Å, shape ``(n_edges, 3)``.
    positions
        Positions in Å, shape ``(n, 3)``.

    Returns
    -------
    count : int
        Number of covalently bonded components (:func:`bonded_components`).
    basis : torch.Tensor
        Sparse, shape ``(3n, 6 count)``, float64: columns ``6c .. 6c + 2`` translate
        molecule ``c`` along x, y, z and ``6c + 3 .. 6c + 5`` rotate it about its centre,
        with each molecule made whole across periodic faces first, so that no bond
        length changes to first order.
    """
    edges = edge_index.cpu().numpy()
    edge_vectors = vectors.detach().double().cpu().numpy()
    lengths = np.linalg.norm(edge_vectors, axis=1)
    count, labels, bonds = bonded_components(np.asarray(numbers), edges, lengths)
    whole = _unwrapped(
        positions.detach().double().cpu().numpy(), edge_vectors[bonds], edges[:, bonds], labels
    )
    return count, _rigid_motions(whole, labels, count)


def coarse_space(
    gram: torch.Tensor,
    numbers: np.ndarray,
    edge_index: torch.Tensor,
    vectors: torch.Tensor,
    positions: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return ``Z`` (sparse) and ``E^+`` for the molecules' rigid motions, or None.

    The correction is ``r -> Z E^+ Z^T r``.

    None when there is at most one molecule (block-Jacobi alone converges fast then) or
    more than :data:`MAX_COARSE_DIMENSION` / 6 of them (the dense coarse matrix would
    cost more than it saves; dense liquids need it least).

    Parameters
    ----------
    gram
        ``J^T J``, sparse, shape ``(3n, 3n)``, float64.
    numbers
        Atomic numbers, shape ``(n,)``.
    edge_index
        Directed edges, shape ``(2, n_edges)``.
    vectors
        Edge vectors (image shifts included) in Å, shape ``(n_edges, 3)``, float64.
    positions
        Positions in Å, shape ``(n, 3)``, float64.
    """
    count, basis = molecular_rigid_motions(numbers, edge_index, vectors, positions)
    if count < 2 or 6 * count > MAX_COARSE_DIMENSION:
        return None
    basis = basis.to(gram.device)
    coarse = torch.sparse.mm(basis.t(), torch.sparse.mm(gram.to_sparse_coo(), basis)).to_dense()
    values, modes = torch.linalg.eigh(0.5 * (coarse + coarse.T))
    kept = values > EIGENVALUE_RTOL * values.max().clamp_min(1e-300)
    pseudo_inverse = (modes[:, kept] / values[kept]) @ modes[:, kept].T
    return basis, pseudo_inverse
