"""Neighbour graphs and the central pair-force decomposition of reference forces."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from boostmd.forcefields.coarse import coarse_space

__all__ = [
    "NonCentralForces",
    "PairForceSolution",
    "PairForceSolver",
    "pair_forces",
    "radius_graph",
    "radius_graph_per_graph",
    "solve_pair_forces",
]

logger = logging.getLogger(__name__)

COARSE_AFTER = 100  # block-Jacobi iterations before a solve adds the coarse space


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


def radius_graph_per_graph(
    positions: np.ndarray, cutoff: float, batch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`radius_graph` of each molecule of a batch, in the batch's atom numbering.

    Atoms of different graphs are never joined, wherever they are (replicas of one
    molecule overlap in space).

    Parameters
    ----------
    positions
        Cartesian positions in Å, shape ``(n, 3)``.
    cutoff
        Radius in Å.
    batch
        Graph index of each atom, shape ``(n,)``.
    """
    edges, shifts = [], []
    for graph in np.unique(batch):
        atoms = np.flatnonzero(batch == graph)
        local, local_shifts = radius_graph(positions[atoms], cutoff)
        edges.append(atoms[local])
        shifts.append(local_shifts)
    return np.concatenate(edges, axis=1), np.concatenate(shifts)


@dataclass(frozen=True)
class PairForceSolution:
    """Central pair forces and what the solve that found them left behind.

    Attributes
    ----------
    pair_force
        ``g`` in eV/Å, one value per directed edge.
    displacement
        ``s``, shape ``(n, 3)``, with ``g = J s`` (``J`` the Jacobian of the edge
        lengths); pass it as ``initial`` to warm-start the next solve on the same atoms.
    iterations
        Conjugate-gradient iterations taken.
    residual
        ``|J^T g + F| / |F|``: zero for forces that are exactly central pair forces.
    tolerance
        The largest ``residual`` the forces' precision explains (:func:`residual_tolerance`);
        above it the forces are not central pair forces (:attr:`central` is false).
    """

    pair_force: torch.Tensor
    displacement: torch.Tensor
    iterations: int
    residual: float
    tolerance: float

    @property
    def central(self) -> bool:
        """Whether the forces are central pair forces to within their precision."""
        return self.residual <= self.tolerance


def default_rtol(dtype: torch.dtype) -> float:
    """Relative residual at which a solve stops for forces of ``dtype``.

    ``1e-12`` for float64 forces; ``1e-5`` for lower precision, whose forces are central
    only to about ``1e-7`` and would otherwise stall the solve at that floor.
    """
    return 1e-12 if dtype == torch.float64 else 1e-5


def residual_tolerance(dtype: torch.dtype) -> float:
    """Return the largest relative residual the precision of ``dtype`` forces explains.

    A hundred times the solve's stopping residual (:func:`default_rtol`): ``1e-10`` for
    float64, ``1e-3`` for float32. A residual above it is a part of the forces that no
    central pair forces make (a net force or torque, or a graph that is not rigid); the
    surrogate's forces at its frame then miss that part.
    """
    return 100 * default_rtol(dtype)


class NonCentralForces:
    """Reports forces that are not central pair forces: once, with what to do, then counts.

    Attributes
    ----------
    frames
        Solutions seen whose residual exceeded their tolerance.
    largest
        The largest such relative residual.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.largest = 0.0

    def check(self, solution: PairForceSolution) -> None:
        """Count ``solution`` if its forces are not central; log the first such one."""
        if solution.central:
            return
        self.frames += 1
        self.largest = max(self.largest, solution.residual)
        if self.frames == 1:
            logger.warning(
                "reference forces are not central pair forces (relative residual %.1e, more "
                "than their precision explains, %.0e): a net force or torque, or atoms with "
                "too few neighbours within the cutoff for a rigid graph (a molecule coming "
                "apart). The surrogate's forces at its frames miss that part. If the run is "
                "heating apart, see the README on sampling at low friction; a reference "
                "with a net force or torque needs float64. Reported once; later frames are "
                "counted (NonCentralForces.frames)",
                solution.residual,
                solution.tolerance,
            )


def pair_forces(
    positions: torch.Tensor,
    forces: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    report: NonCentralForces | None = None,
) -> torch.Tensor:
    """Decompose forces into central pair forces along the edges.

    Finds the smallest ``g`` (one value per directed edge) whose forces
    ``-grad sum_e g_e d_e`` (``d_e`` the length of edge ``e``) equal ``forces``. Forces of
    a translation- and rotation-invariant energy (zero net force and torque) on a rigid
    graph are decomposed exactly; otherwise the closest such forces are used (and
    ``report`` counts it). Cost and memory are linear in the number of edges; several
    graphs (a batch) are one solve, since edges never join two graphs. See
    :func:`solve_pair_forces`.

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
    report
        Where forces that are not central pair forces are reported (none: not reported).

    Returns
    -------
    torch.Tensor
        ``g`` in eV/Å, shape ``(n_edges,)``, in the dtype of ``forces``.
    """
    solution = solve_pair_forces(positions, forces, edge_index, shifts)
    if report is not None:
        report.check(solution)
    return solution.pair_force.to(forces.dtype)


def solve_pair_forces(
    positions: torch.Tensor,
    forces: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    initial: torch.Tensor | None = None,
    rtol: float | None = None,
) -> PairForceSolution:
    """Minimum-norm central pair forces by preconditioned conjugate gradients, in float64.

    One :meth:`PairForceSolver.solve`; build a :class:`PairForceSolver` yourself to
    decompose several force fields on the same graph.

    Parameters
    ----------
    positions, forces, edge_index, shifts
        As for :func:`pair_forces`.
    initial, rtol
        As for :meth:`PairForceSolver.solve`.
    """
    solver = PairForceSolver(positions, edge_index, shifts)
    return solver.solve(forces, initial=initial, rtol=rtol)


class PairForceSolver:
    """Central pair-force decompositions on one graph: ``g = J s`` with ``J^T J s = -F``.

    The minimum-norm ``g`` with ``J^T g = -F`` (``J`` the Jacobian of the edge lengths) is
    ``g = J s`` where ``J^T J s = -F``. ``J^T J`` (``3n x 3n``, singular along rigid
    motions, which ``J`` maps to zero) is a sparse matrix with a 3x3 block per atom and
    per edge; conjugate gradients with its inverted diagonal blocks as preconditioner
    solve it in time and memory linear in the number of edges per iteration. The matrices
    are built once here and serve every :meth:`solve` on this graph.

    Parameters
    ----------
    positions
        Positions in Å, shape ``(n, 3)``.
    edge_index
        Directed edges, shape ``(2, n_edges)``.
    shifts
        Image shifts in Å, shape ``(n_edges, 3)``.
    numbers
        Atomic numbers, shape ``(n,)``. With them, a solve that block-Jacobi has not
        finished in :data:`COARSE_AFTER` iterations adds a coarse correction along the
        molecules' rigid motions (:mod:`boostmd.forcefields.coarse`): the same solution in
        far fewer iterations where molecules touch through few edges.
    """

    def __init__(
        self,
        positions: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
        numbers: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        with torch.no_grad():
            pos = positions.detach().double()
            n, (src, dst) = len(pos), edge_index
            vectors = pos[dst] - pos[src] + shifts.detach().double()
            unit = vectors / vectors.norm(dim=1, keepdim=True)
            coordinates = _length_jacobian(unit, src, dst, n)
            self._transpose_coordinates = coordinates.t().coalesce()
            self._transpose: torch.Tensor | None = None
            self.jacobian = _csr(coordinates)
            self.gram = _csr(torch.sparse.mm(self._transpose_coordinates, coordinates).coalesce())
            self.precondition = _block_jacobi(unit, src, dst, n)
        # the coarse correction's inputs, used once a solve needs it (_two_level)
        self._coarse_inputs = (
            None
            if numbers is None
            else (torch.as_tensor(numbers).cpu().numpy(), edge_index, vectors, pos)
        )
        self._two_level: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def transpose(self) -> torch.Tensor:
        """``J^T`` in compressed rows, built on first use (only backward passes need it)."""
        if self._transpose is None:
            self._transpose = _csr(self._transpose_coordinates)
        return self._transpose

    def solve(
        self,
        forces: torch.Tensor,
        initial: torch.Tensor | None = None,
        rtol: float | None = None,
    ) -> PairForceSolution:
        """Decompose ``forces`` (shape ``(n, 3)``) into pair forces on this graph.

        The solve stops when ``|J^T g + F| <= rtol |F|``, or when the residual has not
        improved for 500 iterations (forces with a net force or torque, whose rigid-motion
        part no ``g`` can produce); the best iterate is kept, and the solution says whether
        its relative residual is within what the forces' precision explains
        (:attr:`PairForceSolution.central`; :class:`NonCentralForces` reports it). ``g``
        is differentiable with respect
        to ``forces`` (the backward pass is one more solve with the same matrix).

        Parameters
        ----------
        forces
            Forces in eV/Å.
        initial
            A previous solution's ``displacement`` on the same atoms (a warm start).
        rtol
            Relative residual at which the solve stops (default: :func:`default_rtol`).
        """
        if rtol is None:
            rtol = default_rtol(forces.dtype)
        with torch.no_grad():
            target = forces.detach().double().reshape(-1)
            start = initial.detach().double().reshape(-1) if initial is not None else None
            s, iterations = self._iterate(-target, start, rtol)
            residual = float((self.gram @ s + target).norm() / target.norm().clamp_min(1e-300))
        g = _PairForce.apply(forces.double().reshape(-1), self, s, rtol)
        tolerance = max(residual_tolerance(forces.dtype), 100 * rtol)
        return PairForceSolution(g, s.reshape(-1, 3), iterations, residual, tolerance)

    def _iterate(
        self, rhs: torch.Tensor, start: torch.Tensor | None, rtol: float
    ) -> tuple[torch.Tensor, int]:
        """Conjugate gradients with block-Jacobi, then with the coarse space if slow.

        Block-Jacobi alone converges in tens of iterations in a liquid or a single
        molecule. A solve that has not converged after :data:`COARSE_AFTER` iterations
        (molecules touching through few edges), on a solver given the atomic numbers,
        goes on from where it is with the coarse correction
        (:mod:`boostmd.forcefields.coarse`), built once and kept for later solves.
        """
        if self._two_level is not None:
            return _conjugate_gradient(self.gram, rhs, self._two_level, start, rtol)
        limit = None if self._coarse_inputs is None else COARSE_AFTER
        s, iterations = _conjugate_gradient(
            self.gram, rhs, self.precondition, start, rtol, max_iterations=limit
        )
        if limit is None or float((rhs - self.gram @ s).norm()) <= rtol * float(rhs.norm()):
            return s, iterations
        numbers, edge_index, vectors, positions = self._coarse_inputs
        self._coarse_inputs = None  # tried once
        coarse = coarse_space(self.gram, numbers, edge_index, vectors, positions)
        if coarse is None:
            more = _conjugate_gradient(self.gram, rhs, self.precondition, s, rtol)
        else:
            basis, pseudo_inverse = coarse
            basis_t, basis = _csr(basis.t().coalesce()), _csr(basis)
            block_jacobi = self.precondition
            self._two_level = lambda r: block_jacobi(r) + basis @ (pseudo_inverse @ (basis_t @ r))
            more = _conjugate_gradient(self.gram, rhs, self._two_level, s, rtol)
        return more[0], iterations + more[1]


class _PairForce(torch.autograd.Function):
    """``g = J s`` with ``J^T J s = -F``, differentiable in ``F``.

    Backward: ``dL/dF = -y``, ``y`` the minimum-norm solution of ``J^T J y = J^T dL/dg``
    (that is, ``-pinv(J) dL/dg``): conjugate gradients from zero without preconditioner
    stay in the range of ``J^T J``, so ``y`` has no rigid-motion part.
    """

    @staticmethod
    def forward(ctx, target, solver, displacement, rtol):
        ctx.solver, ctx.rtol = solver, rtol
        return solver.jacobian @ displacement

    @staticmethod
    def backward(ctx, grad_pair_force):
        solver = ctx.solver
        rhs = solver.transpose @ grad_pair_force.contiguous()
        y, _ = _conjugate_gradient(solver.gram, rhs, lambda r: r, None, ctx.rtol)
        return -y, None, None, None


def _length_jacobian(
    unit: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, n: int
) -> torch.Tensor:
    """Return ``d d_e / d R`` as a sparse ``(n_edges, 3n)`` matrix (+unit at receivers)."""
    n_edges = len(src)
    rows = torch.arange(n_edges, device=unit.device).repeat_interleave(6)
    columns = torch.stack([3 * dst + k for k in range(3)] + [3 * src + k for k in range(3)], 1)
    values = torch.cat([unit, -unit], 1).reshape(-1)
    indices = torch.stack([rows, columns.reshape(-1)])
    shape = (n_edges, 3 * n)
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


def _csr(matrix: torch.Tensor) -> torch.Tensor:
    """Compressed rows: matrix-vector products several times faster than coordinates."""
    _csr_note_taken()
    return matrix.to_sparse_csr()


@functools.cache
def _csr_note_taken() -> None:
    """Take torch's once-per-process note that CSR support is in beta, unshown, once.

    torch emits the note at its first CSR tensor only; catching it here, once, keeps it
    from the user without a ``catch_warnings`` on every frame (leaving one resets
    Python's once-per-location record, and every warning of the process shows again).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        torch.zeros(1, 1).to_sparse_csr()


def _block_jacobi(unit: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, n: int):
    """Return ``r -> B^-1 r`` for the 3x3 diagonal blocks ``B`` of ``J^T J``."""
    outer = unit[:, :, None] * unit[:, None, :]
    blocks = torch.zeros(n, 3, 3, dtype=unit.dtype, device=unit.device)
    blocks.index_add_(0, dst, outer).index_add_(0, src, outer)
    # Atoms with coplanar or no edges have singular blocks: a small ridge (and identity
    # for isolated atoms) keeps the preconditioner positive definite.
    trace = blocks.diagonal(dim1=1, dim2=2).sum(-1)
    ridge = torch.where(trace > 0, 1e-6 * trace, torch.ones_like(trace))
    eye = torch.eye(3, dtype=unit.dtype, device=unit.device)
    inverse = torch.linalg.inv(blocks + ridge[:, None, None] * eye)
    return lambda r: (inverse @ r.reshape(n, 3, 1)).reshape(-1)


def _conjugate_gradient(matrix, rhs, precondition, start, rtol, patience=500, max_iterations=None):
    """Preconditioned CG on a symmetric positive semi-definite sparse ``matrix``."""
    if max_iterations is None:
        max_iterations = 10 * len(rhs) + 100
    x = torch.zeros_like(rhs) if start is None else start.clone()
    r = rhs - matrix @ x if start is not None else rhs.clone()
    z = precondition(r)
    p, rz = z.clone(), torch.dot(r, z)
    goal = rtol * float(rhs.norm())
    best, best_x, since_best, iteration = float(r.norm()), x.clone(), 0, 0
    while best > goal and since_best < patience and iteration < max_iterations:
        iteration += 1
        matrix_p = matrix @ p
        curvature = torch.dot(p, matrix_p)
        if curvature <= 0:
            break
        alpha = rz / curvature
        x.add_(alpha * p)
        r.sub_(alpha * matrix_p)
        norm = float(r.norm())
        if norm < best:
            best, since_best = norm, 0
            best_x.copy_(x)
        else:
            since_best += 1
        z = precondition(r)
        rz, previous = torch.dot(r, z), rz
        p = z + (rz / previous) * p
    return best_x, iteration
