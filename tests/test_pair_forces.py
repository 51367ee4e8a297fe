"""Central pair-force decomposition by sparse conjugate gradients: exactness, gradient, cost."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from boostmd.forcefields.coarse import molecular_rigid_motions
from boostmd.forcefields.graph import (
    NonCentralForces,
    PairForceSolver,
    pair_forces,
    radius_graph,
    residual_tolerance,
    solve_pair_forces,
)
from boostmd.forcefields.peptides import capped_dipeptide


def copies(side, spacing=12.0):
    """``side**3`` alanine dipeptides on a cubic grid (close enough to share edges)."""
    base = capped_dipeptide("ALA").get_positions()
    base = base - base.mean(0)
    grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)])
    return torch.tensor(np.concatenate([base + spacing * cell for cell in grid]))


def graph(positions):
    edges, _ = radius_graph(positions.numpy(), 5.0)
    edge_index = torch.as_tensor(edges)
    return edge_index, torch.zeros(edge_index.shape[1], 3, dtype=torch.float64)


def units(positions, edge_index):
    src, dst = edge_index
    vectors = positions[dst] - positions[src]
    return vectors / vectors.norm(dim=1, keepdim=True)


def pair_potential_forces(positions, edge_index, seed=0):
    """Forces of random central pair forces: exactly decomposable."""
    src, dst = edge_index
    g = torch.randn(len(src), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    weighted = g[:, None] * units(positions, edge_index)
    forces = torch.zeros_like(positions)
    return forces.index_add_(0, dst, -weighted).index_add_(0, src, weighted)


def dense_jacobian(positions, edge_index):
    src, dst = edge_index
    return dense_jacobian_of(positions[dst] - positions[src], edge_index, len(positions))


def dense_jacobian_of(vectors, edge_index, atoms):
    """The edge lengths' Jacobian from the edge vectors (image shifts included)."""
    src, dst = edge_index
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    jacobian = torch.zeros(len(src), atoms, 3, dtype=torch.float64)
    rows = torch.arange(len(src))
    jacobian[rows, dst] += unit
    jacobian[rows, src] -= unit
    return jacobian.reshape(len(src), -1)


def test_decomposition_is_the_minimum_norm_solution():
    positions = copies(1)
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index)
    solution = solve_pair_forces(positions, forces, edge_index, shifts)
    jacobian = dense_jacobian(positions, edge_index)
    minimum_norm = -torch.linalg.pinv(jacobian.T) @ forces.reshape(-1)
    torch.testing.assert_close(solution.pair_force, minimum_norm, atol=1e-9, rtol=0)
    assert solution.residual < 1e-11


def test_gradient_with_respect_to_forces_is_the_transposed_linear_map():
    positions = copies(1)
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index).requires_grad_(True)
    weights = torch.randn(edge_index.shape[1], dtype=torch.float64)
    (weights * pair_forces(positions, forces, edge_index, shifts)).sum().backward()
    jacobian = dense_jacobian(positions, edge_index)
    expected = -torch.linalg.pinv(jacobian.T).T @ weights
    torch.testing.assert_close(forces.grad.reshape(-1), expected, atol=1e-9, rtol=0)


def test_connected_copies_are_decomposed_exactly_and_warm_starts_save_iterations():
    positions = copies(3)
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index)
    cold = solve_pair_forces(positions, forces, edge_index, shifts)
    assert cold.residual < 1e-11
    again = solve_pair_forces(positions, forces, edge_index, shifts, initial=cold.displacement)
    assert again.iterations == 0
    torch.testing.assert_close(again.pair_force, cold.pair_force, atol=1e-12, rtol=0)
    nearby = pair_potential_forces(positions, edge_index, seed=0) * 1.05
    warm = solve_pair_forces(positions, nearby, edge_index, shifts, initial=cold.displacement)
    assert warm.residual < 1e-11 and warm.iterations < cold.iterations


def test_separate_molecules_in_one_solve_equal_their_own_solves():
    positions = copies(2, spacing=30.0)  # far apart: no shared edges
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index)
    together = pair_forces(positions, forces, edge_index, shifts)
    first = (edge_index < 22).all(0)
    alone = pair_forces(positions[:22], forces[:22], edge_index[:, first], shifts[first])
    torch.testing.assert_close(together[first], alone, atol=1e-9, rtol=0)


def test_forces_with_a_net_torque_are_decomposed_approximately_and_reported_once(caplog):
    positions = copies(1)
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index)
    twist = torch.cross(
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(positions), positions, dim=1
    )
    report = NonCentralForces()
    with caplog.at_level(logging.WARNING, logger="boostmd.forcefields.graph"):
        exact = solve_pair_forces(positions, forces, edge_index, shifts)
        report.check(exact)
        for scale in (0.1, 0.2, 0.3):
            solution = solve_pair_forces(positions, forces + scale * twist, edge_index, shifts)
            report.check(solution)
    assert exact.central and not solution.central
    assert caplog.text.count("not central pair forces") == 1  # a persisting condition: once
    assert report.frames == 3 and report.largest >= solution.residual
    assert 1e-4 < solution.residual < 1.0
    assert torch.isfinite(solution.pair_force).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_tolerance_is_what_the_precision_of_the_forces_explains(dtype):
    """Central forces rounded to ``dtype`` are central within its tolerance."""
    positions = copies(1)
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index).to(dtype)
    solution = solve_pair_forces(positions, forces, edge_index, shifts)
    assert solution.central
    assert solution.tolerance == residual_tolerance(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_forces_come_back_in_the_dtype_of_the_forces(dtype):
    positions = copies(1)
    edge_index, shifts = graph(positions)
    forces = pair_potential_forces(positions, edge_index).to(dtype)
    assert pair_forces(positions, forces, edge_index, shifts).dtype == dtype


def test_a_thermal_box_is_decomposed_as_well_in_far_fewer_iterations_with_the_coarse_space():
    # 27 dipeptides touching through few edges, 45 thermal steps on (tests/data/make_*.py)
    frame = np.load(Path(__file__).parent / "data" / "ala_box_thermal.npz")
    positions = torch.as_tensor(frame["positions"])
    forces = torch.as_tensor(frame["forces"])
    edge_index, shifts = graph(positions)
    alone = PairForceSolver(positions, edge_index, shifts).solve(forces)
    coarse = PairForceSolver(positions, edge_index, shifts, frame["numbers"]).solve(forces)
    assert alone.iterations > 800 and coarse.iterations < alone.iterations / 4
    assert coarse.residual <= alone.residual and coarse.central


def test_rigid_motions_of_molecules_across_periodic_faces_keep_every_edge_length():
    water = molecule("H2O")
    methane = molecule("CH4")
    water.positions += [0.1, 5.0, 5.0]  # its hydrogens across the x = 0 face
    methane.positions += [5.0, 5.0, 9.9]  # across the z = 10 face
    atoms = water + methane
    atoms.set_cell(np.eye(3) * 10.0)
    atoms.pbc = True
    atoms.wrap()
    edges, image_shifts = radius_graph(atoms.positions, 2.5, atoms.cell.array, atoms.pbc)
    edge_index, positions = torch.as_tensor(edges), torch.as_tensor(atoms.positions)
    src, dst = edge_index
    vectors = positions[dst] - positions[src] + torch.as_tensor(image_shifts)
    count, basis = molecular_rigid_motions(atoms.numbers, edge_index, vectors, positions)
    assert count == 2 and basis.shape == (3 * len(atoms), 12)
    jacobian = dense_jacobian_of(vectors, edge_index, len(atoms))
    stretch = jacobian @ basis.to_dense()
    assert stretch.abs().max() < 1e-12
    assert torch.linalg.matrix_rank(basis.to_dense()) == 12
