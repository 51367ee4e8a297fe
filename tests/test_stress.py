"""Stress in bulk cells: the strain derivative of the energy, for the reference and BoostMD."""

from dataclasses import replace

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.stress import voigt_6_to_full_3x3_stress

from boostmd import BoostMDCalculator
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.model_calls import ModelCalls

STEP = 1e-5


def methanes_in_a_box() -> Atoms:
    """Two methanes in a 5 Å cube, close enough to their images to feel them."""
    first, second = molecule("CH4"), molecule("CH4")
    second.positions += [2.4, 2.3, 2.2]
    atoms = first + second
    atoms.set_cell([5.0, 5.2, 4.9])
    atoms.pbc = True
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    return atoms


def strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ (np.eye(3) + strain).T, scale_atoms=True)
    return moved


def finite_difference_stress(energy_of, atoms: Atoms) -> np.ndarray:
    """(1 / V) dE / d(strain) by central differences over symmetric strains."""
    stress = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = STEP / (1 if a == b else 2)
            derivative = energy_of(strained(atoms, strain)) - energy_of(strained(atoms, -strain))
            stress[a, b] = stress[b, a] = derivative / (2 * STEP)
    return stress / atoms.get_volume()


def test_reference_stress_is_the_strain_derivative_of_its_energy(reference):
    atoms = methanes_in_a_box()

    def energy_of(system):
        system.calc = ReferenceCalculator(reference)
        return system.get_potential_energy()

    atoms.calc = ReferenceCalculator(reference)
    stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    expected = finite_difference_stress(energy_of, atoms)
    np.testing.assert_allclose(stress, expected, atol=1e-7 + 1e-5 * np.abs(expected).max())


def test_surrogate_stress_is_the_strain_derivative_of_its_energy(reference, surrogate):
    atoms = methanes_in_a_box()
    frame = ModelCalls(reference, surrogate).frame(atoms, reference(atoms))
    moved = atoms.copy()
    moved.positions += np.random.default_rng(1).normal(0, 0.03, atoms.positions.shape)
    stress = surrogate.stress(frame, moved.positions, moved.cell.array).numpy()

    def energy_of(system):
        change = np.linalg.solve(atoms.cell.array, system.cell.array)
        shifted = replace(frame, shifts=frame.shifts @ _tensor(change))
        return float(surrogate.energy(shifted, _tensor(system.positions)).detach().sum())

    expected = finite_difference_stress(energy_of, moved)
    np.testing.assert_allclose(stress, expected, atol=1e-7 + 1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("frame", ["start", "centred"])
def test_boostmd_stress_is_the_reference_at_its_frame_and_follows_the_energy(
    reference, surrogate, frame
):
    atoms = methanes_in_a_box()
    atoms.calc = calc = BoostMDCalculator(
        reference, surrogate, interval=50, frame=frame, timestep_fs=1.0, force_guard=1e9
    )
    stress = atoms.get_stress()
    if frame == "start":  # the window's frame is here: the reference's own stress
        here = atoms.copy()
        here.calc = ReferenceCalculator(reference)
        np.testing.assert_allclose(stress, here.get_stress(), atol=1e-9)
    atoms.positions += np.random.default_rng(2).normal(0, 0.02, atoms.positions.shape)
    stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    assert calc.results["boostmd_source"] == "surrogate"

    def energy_of(system):  # the same window, in a strained cell
        atoms.set_cell(system.cell, scale_atoms=False)
        atoms.positions = system.positions
        return atoms.get_potential_energy()

    start = atoms.copy()
    expected = finite_difference_stress(energy_of, start)
    assert calc.stats.full_steps == 1  # strains within a window cost no reference call
    np.testing.assert_allclose(stress, expected, atol=1e-7 + 1e-4 * np.abs(expected).max())


def test_npt_with_boostmd_calls_the_reference_once_a_window_not_every_step(reference, surrogate):
    atoms = methanes_in_a_box()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(3))
    atoms.calc = calc = BoostMDCalculator(
        reference, surrogate, interval=10, timestep_fs=0.5, force_guard=1e9
    )
    cell = atoms.cell.array.copy()
    dynamics = NPTBerendsen(
        atoms,
        0.5 * units.fs,
        temperature_K=300,
        pressure_au=1.0 * units.bar,
        taut=50 * units.fs,
        taup=100 * units.fs,
        compressibility_au=4.5e-5 / units.bar,
    )
    dynamics.run(40)
    assert not np.allclose(atoms.cell.array, cell)  # the barostat moved the cell
    # NPTBerendsen evaluates the forces twice a step (after scaling the cell, and after
    # moving the atoms): 81 calculator steps, one reference call per window of 10
    assert calc.stats.total_steps == 81
    assert calc.stats.full_steps == 9
    assert np.isfinite(atoms.get_stress()).all()


def test_stress_outside_a_bulk_cell_is_refused(reference, surrogate):
    atoms = molecule("CH4")
    atoms.calc = BoostMDCalculator(reference, surrogate, frame="start")
    with pytest.raises(PropertyNotImplementedError, match="periodic along all three"):
        atoms.get_stress()


def _tensor(array):
    import torch

    return torch.as_tensor(np.asarray(array), dtype=torch.float64)
