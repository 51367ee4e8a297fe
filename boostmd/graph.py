"""Neighbour graphs and the central pair-force decomposition of reference forces."""

from __future__ import annotations

import logging

import numpy as np
import torch

__all__ = ["pair_forces", "radius_graph"]

logger = logging.getLogger(__name__)


def radius_graph(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges ``i -> j`` with ``|R_j - R_i + S_ij| < cutoff``, as MACE builds them.

    Parameters
    ----------
    positions
        Cartesian positions in Å, shape ``(n, 3)``.
    cutoff
        Radius in Å.
    cell
        Cell vectors (rows) in Å, used along periodic directions.
    pbc
        Periodicity of each cell vector (default: none, a molecule).

    Returns
    -------
    edge_index : numpy.ndarray
        Shape ``(2, n_edges)``, senders then receivers, int64.
    shifts : numpy.ndarray
        Cartesian image shifts ``S_ij`` in Å, shape ``(n_edges, 3)``.
    """
    from mace.data.neighborhood import get_neighborhood

    cell = np.zeros((3, 3)) if cell is None else np.array(cell, dtype=np.float64).reshape(3, 3)
    pbc = (False, False, False) if pbc is None else tuple(bool(p) for p in pbc)
    edge_index, shifts, _, _ = get_neighborhood(
        positions=np.asarray(positions, dtype=np.float64), cutoff=cutoff, pbc=pbc, cell=cell
    )
    return edge_index.astype(np.int64), shifts


def pair_forces(
    positions: torch.Tensor,
    forces: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    tolerance: float = 1e-4,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decompose forces into central pair forces along the edges.

    Finds the smallest ``g`` (one value per directed edge) with
    ``F_i = sum_e g_e dd_e/dR_i``-consistent forces, i.e. forces equal to
    ``-grad sum_e g_e d_e`` where ``d_e`` is the length of edge ``e``. Forces of a
    translation- and rotation-invariant energy (zero net force and torque) on a rigid
    graph are decomposed exactly; otherwise the closest such forces are used and a
    warning is logged.

    Parameters
    ----------
    positions
        Positions in Å, shape ``(n, 3)``.
    forces
        Forces in eV/Å, shape ``(n, 3)``.
    edge_index
        Directed edges, shape ``(2, n_edges)``.
    shifts
        Image shifts in Å, shape ``(n_edges, 3)``.
    tolerance
        Relative residual above which a warning is logged.
    batch
        Graph index of each atom for several graphs: each graph is solved on its own
        (edges never join two graphs), so the cost grows linearly with their number.

    Returns
    -------
    torch.Tensor
        ``g`` in eV/Å, shape ``(n_edges,)``, in the dtype of ``forces``.
    """
    if batch is not None and len(batch) and int(batch.max()) > 0:
        return _pair_forces_by_graph(positions, forces, edge_index, shifts, tolerance, batch)
    pos, target = positions.double(), forces.double()
    src, dst = edge_index
    vectors = pos[dst] - pos[src] + shifts.double()
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    n, n_edges = len(pos), len(src)
    # Jacobian of the edge lengths, d d_e / d R: +unit on the receiver, -unit on the sender.
    jacobian = torch.zeros(n_edges, n, 3, dtype=torch.float64, device=pos.device)
    rows = torch.arange(n_edges, device=pos.device)
    jacobian[rows, dst] += unit
    jacobian[rows, src] -= unit
    jacobian = jacobian.reshape(n_edges, 3 * n)
    # Minimum-norm solution of J^T g = -F through the normal equations, with a ridge far
    # below the smallest non-zero eigenvalue of J^T J (rigid motions are its null space).
    gram = jacobian.T @ jacobian
    ridge = 1e-10 * gram.diagonal().mean().clamp_min(1e-30)
    eye = torch.eye(3 * n, dtype=torch.float64, device=pos.device)
    solution = torch.linalg.solve(gram + ridge * eye, -target.reshape(-1))
    g = jacobian @ solution
    residual = (jacobian.T @ g + target.reshape(-1)).norm() / target.norm().clamp_min(1e-12)
    if residual > tolerance:
        logger.warning(
            "reference forces are only approximately central pair forces (relative residual "
            "%.1e): net force or torque is not zero, or the graph is not rigid",
            residual,
        )
    return g.to(forces.dtype)


def _pair_forces_by_graph(positions, forces, edge_index, shifts, tolerance, batch):
    """:func:`pair_forces` of each graph of a batch, assembled in the batch's edge order."""
    local_index = torch.empty_like(batch)
    edge_graph = batch[edge_index[0]]
    edges, values = [], []
    for graph in range(int(batch.max()) + 1):
        atoms = (batch == graph).nonzero().squeeze(1)
        local_index[atoms] = torch.arange(len(atoms), device=batch.device)
        graph_edges = (edge_graph == graph).nonzero().squeeze(1)
        local_edges = local_index[edge_index[:, graph_edges]]
        values.append(
            pair_forces(
                positions[atoms], forces[atoms], local_edges, shifts[graph_edges], tolerance
            )
        )
        edges.append(graph_edges)
    result = forces.new_zeros(edge_index.shape[1])
    return result.index_copy(0, torch.cat(edges), torch.cat(values))
