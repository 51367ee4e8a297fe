"""Windows in periodic cells: an atom wrapped back into the cell changes nothing."""

import numpy as np
import pytest
from ase import units
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from boostmd import BoostLangevin, BoostMDCalculator
from boostmd.dynamics.periodic import minimum_image

CELL = 6.0


def methane_on_a_face():
    """Methane in a periodic cube with its carbon on the x = 0 face: its hydrogens cross."""
    atoms = molecule("CH4")
    atoms.set_cell([CELL] * 3)
    atoms.pbc = True
    atoms.positions += [0.0, CELL / 2, CELL / 2] - atoms.positions[0]
    return atoms


def test_minimum_image_removes_whole_cell_vectors_on_periodic_axes_only():
    cell = np.array([[5.0, 0.0, 0.0], [2.0, 5.0, 0.0], [0.0, 0.0, 7.0]])
    small = np.array([[0.1, -0.2, 0.05], [-0.3, 0.0, 0.2]])
    lattice = np.array([[1, -1, 2], [0, 1, -1]]) @ cell
    pbc = np.array([True, True, False])
    moved = small + lattice * [1, 1, 0]  # no whole vectors along the open axis
    np.testing.assert_allclose(minimum_image(moved, cell, pbc), small, atol=1e-12)
    open_cell = np.zeros(3, bool)
    np.testing.assert_array_equal(minimum_image(small + lattice, cell, open_cell), small + lattice)
    # an open axis with no cell vector (a slab's cell) is fine
    slab = np.diag([5.0, 5.0, 0.0])
    across = small + np.array([5.0, 0.0, 0.0])
    np.testing.assert_allclose(minimum_image(across, slab, pbc), small, atol=1e-12)


@pytest.mark.parametrize("frame", ["start", "centred"])
def test_a_wrapped_atom_keeps_the_window_and_its_forces(reference, surrogate, frame):
    runs = []
    for wrap in (False, True):
        atoms = methane_on_a_face()
        atoms.calc = calc = BoostMDCalculator(
            reference, surrogate, interval=10, frame=frame, timestep_fs=1.0, force_guard=1e9
        )
        atoms.get_forces()
        step = np.random.default_rng(0).normal(0, 0.01, atoms.positions.shape)
        forces = []
        for k in range(4):
            atoms.positions += step
            if wrap and k == 1:
                outside = atoms.positions[:, 0] < 0
                assert outside.any()
                atoms.wrap()  # those atoms jump by a whole cell vector
            forces.append(atoms.get_forces().copy())
            assert calc.results["boostmd_source"] == "surrogate"
        runs.append((np.array(forces), calc.stats.full_steps, atoms.get_potential_energy()))
    (forces, full, energy), (wrapped_forces, wrapped_full, wrapped_energy) = runs
    np.testing.assert_allclose(wrapped_forces, forces, atol=1e-10)
    assert wrapped_energy == pytest.approx(energy, abs=1e-10)
    assert wrapped_full == full == 1


def test_wrapping_alone_is_not_a_step(reference, surrogate):
    atoms = methane_on_a_face()
    atoms.calc = calc = BoostMDCalculator(reference, surrogate, interval=10, frame="start")
    atoms.get_forces()
    atoms.positions[1:] += 0.01
    forces = atoms.get_forces().copy()
    results, steps = calc.results, calc.stats.total_steps
    atoms.positions[2] += atoms.cell[0]  # the same atom, one image over
    np.testing.assert_array_equal(atoms.get_forces(), forces)
    assert calc.results is results and calc.stats.total_steps == steps


def wrap_and_count(atoms, wrapped):
    """Wrap the atoms into the cell, counting those that were outside it."""
    wrapped.append(int((atoms.get_scaled_positions(wrap=False) < 0).sum()))
    atoms.wrap()


def test_boostlangevin_wrapping_every_step_follows_the_same_trajectory(reference, surrogate):
    finals, crossings = [], []
    for wrap in (False, True):
        atoms = methane_on_a_face()
        MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(1))
        atoms.calc = calc = BoostMDCalculator(reference, surrogate, interval=10, force_guard=1e9)
        dynamics = BoostLangevin(atoms, 0.5 * units.fs, 300, 0.001 / units.fs, rng=4)
        wrapped = []
        if wrap:
            dynamics.attach(wrap_and_count, 1, atoms, wrapped)
        dynamics.run(35)
        crossings.append(sum(wrapped))
        finals.append((atoms.get_scaled_positions(wrap=True), calc.stats.full_steps))
    (positions, full), (wrapped_positions, wrapped_full) = finals
    assert crossings[1] > 0  # hydrogens did cross the face mid-window
    assert wrapped_full == full  # and cost no reference call
    np.testing.assert_allclose(wrapped_positions, positions, atol=1e-9)
