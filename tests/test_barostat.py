"""The Monte Carlo barostat: molecular scaling, its acceptance rule, and BoostLangevin at
constant pressure."""

import numpy as np
import pytest
from ase import Atoms, units

from boostmd import BoostLangevin, BoostMDCalculator
from boostmd.dynamics.barostat import MAX_VOLUME_STEP, MonteCarloBarostat
from boostmd.dynamics.md import thermal_momenta
from boostmd.dynamics.periodic import MAX_FRAME_STRAIN, Molecules, minimum_image
from boostmd.forcefields.water import water_box


def wrapped_water(count: int = 8) -> Atoms:
    """A water box with its atoms wrapped into the cell, so molecules straddle faces."""
    box = water_box(count, seed=1)
    box.positions += 0.45 * box.cell.array.sum(axis=0)
    box.wrap()
    return box


def intramolecular(atoms: Atoms, molecules: Molecules) -> np.ndarray:
    """Every bonded atom's vector to its spanning-tree parent (minimum image)."""
    parents = molecules.parents
    return minimum_image(atoms.positions - atoms.positions[parents], atoms.cell, atoms.pbc)


def test_a_move_between_the_frame_strain_limits():
    assert (1 + MAX_VOLUME_STEP) ** (1 / 3) - 1 < MAX_FRAME_STRAIN


def test_molecular_scaling_keeps_every_molecule_rigid_and_scales_its_centre():
    box = wrapped_water()
    molecules = Molecules.of(box)
    assert molecules.count == 8
    raw_bonds = np.linalg.norm(box.positions - box.positions[molecules.parents], axis=1)
    assert (raw_bonds > 2.0).any()  # some molecules straddle a face: the test needs them
    positions, cell = molecules.scaled(box, 1.01)
    moved = box.copy()
    moved.set_cell(cell, scale_atoms=False)
    moved.positions = positions
    np.testing.assert_allclose(
        intramolecular(moved, molecules), intramolecular(box, molecules), atol=1e-12
    )
    before = molecules.centres(molecules.whole(box.positions, box.cell.array, box.pbc))
    after = molecules.centres(molecules.whole(positions, cell, box.pbc))
    np.testing.assert_allclose(after, 1.01 * before, atol=1e-12)
    np.testing.assert_allclose(cell, 1.01 * box.cell.array)


def test_the_acceptance_samples_the_isobaric_ideal_gas():
    """With no energy, V follows V^M exp(-P V / kB T): a gamma law, mean (M + 1) kB T / P."""
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3), axis=-1).reshape(-1, 3)
    gas = Atoms("He216", positions=10 / 6 * grid, cell=10 * np.eye(3), pbc=True)
    kT = units.kB * 300
    pressure = 217 * kT / 1000.0  # mean volume 1000 Å^3
    barostat = MonteCarloBarostat(gas, pressure, 300.0, every=1)
    assert barostat.molecules.count == 216
    rng = np.random.default_rng(1)
    volumes = []
    for step in range(1, 12001):
        positions, cell, change = barostat.propose(gas, rng)
        if barostat.accept(0.0, gas.get_volume(), change, rng, step):
            gas.set_cell(cell, scale_atoms=False)
            gas.positions = positions
        volumes.append(gas.get_volume())
    volumes = np.array(volumes[1000:])
    assert volumes.mean() == pytest.approx(1000.0, rel=0.015)
    assert volumes.std() == pytest.approx(1000.0 / np.sqrt(217), rel=0.15)
    assert barostat.accepted / barostat.attempts > 0.25


def test_bad_barostat_settings_are_refused():
    with pytest.raises(ValueError, match="periodic along all three"):
        MonteCarloBarostat(Atoms("H2O", positions=np.eye(3)), 0.0, 300.0)
    with pytest.raises(ValueError, match="above 0 K"):
        MonteCarloBarostat(wrapped_water(), 0.0, 0.0)
    with pytest.raises(ValueError, match="every"):
        MonteCarloBarostat(wrapped_water(), 0.0, 300.0, every=0)
    with pytest.raises(ValueError, match="finite"):
        MonteCarloBarostat(wrapped_water(), float("nan"), 300.0)


def test_a_pressure_given_in_gpa_instead_of_ase_units_is_warned_of(caplog):
    MonteCarloBarostat(wrapped_water(), 0.6, 300.0)  # meant 0.6 GPa: 96 GPa in ASE units
    assert "0.6 * ase.units.GPa" in caplog.text


@pytest.fixture
def boosted_water(reference, surrogate):
    box = wrapped_water()
    box.calc = BoostMDCalculator(
        reference, surrogate, interval=5, frame="start", timestep_fs=0.5, force_guard=1e9
    )
    thermal_momenta(box, 300.0, np.random.default_rng(2))
    return box


def test_relocate_in_place_gives_the_step_s_energy_and_counts_no_step(boosted_water):
    box, calc = boosted_water, boosted_water.calc
    box.get_forces()
    box.positions += np.random.default_rng(3).normal(0, 0.01, box.positions.shape)
    energy, forces = box.get_potential_energy(), box.get_forces()
    steps = calc.window_state().step
    assert calc.relocate(box.positions, box.cell.array) == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(calc.results["forces"], forces, atol=1e-9)
    assert calc.window_state().step == steps  # the window goes on where it was
    assert calc.follows(box.cell.array * 1.009) and not calc.follows(box.cell.array * 1.011)
    with pytest.raises(ValueError, match="strained more than"):
        calc.relocate(box.positions, box.cell.array * 1.02)


def test_relocate_follows_the_stress_under_strain(boosted_water):
    """The relocated energy's strain derivative is the calculator's stress (the offset's)."""
    box, calc = boosted_water, boosted_water.calc
    box.get_forces()
    box.positions += np.random.default_rng(4).normal(0, 0.01, box.positions.shape)
    pressure = -box.get_stress()[:3].mean()  # virial part, eV/Å^3
    state, step = calc.window_state(), 1e-5
    energies = []
    for sign in (1, -1):
        factor = 1 + sign * step
        energies.append(calc.relocate(box.positions * factor, box.cell.array * factor))
        calc.restore_window_state(state)
    derivative = (energies[0] - energies[1]) / (2 * step)  # dE / d(linear strain), isotropic
    assert derivative == pytest.approx(-3 * box.get_volume() * pressure, rel=1e-4, abs=1e-6)


def test_boost_langevin_at_constant_pressure_moves_the_volume_between_windows(boosted_water):
    box, calc = boosted_water, boosted_water.calc
    volume = box.get_volume()
    dynamics = BoostLangevin(
        box,
        0.5 * units.fs,
        300.0,
        0.01 / units.fs,
        rng=5,
        pressure=0.1 * units.GPa,
        barostat_every=5,
    )
    dynamics.run(40)
    assert dynamics.barostat.attempts == 7  # at steps 5, 10, ..., 35: window starts
    assert dynamics.barostat.accepted >= 1
    assert box.get_volume() != pytest.approx(volume, rel=1e-9)
    assert calc.stats.full_steps == 1 + 40 // 5 + 5 * dynamics.rollbacks  # moves cost none
    state = dynamics.barostat_state
    dynamics.barostat.attempts = 0
    dynamics.barostat_state = state
    assert dynamics.barostat.attempts == 7
