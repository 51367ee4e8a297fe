"""BoostLangevin: checked windows, exact equality with ASE's Langevin, accepted frames only."""

import logging
import math

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.io import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from boostmd import BoostLangevin, BoostMDCalculator, Surrogate
from boostmd.dynamics.adaptive import AdaptiveLangevin
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import boost_langevin
from integrators import Threshold

TIMESTEP = 0.5 * units.fs
FRICTION = 0.01 / units.fs


@pytest.fixture
def atoms():
    atoms = molecule("CH3CH2OH")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    return atoms


def boost(reference, surrogate, interval=4):
    return BoostMDCalculator(
        reference, surrogate, force_guard=1e9, interval=interval, frame="start"
    )


def record(dynamics, atoms):
    """Attach an observer that keeps each shown frame; return its list."""
    frames = []

    def observe():
        calc = atoms.calc
        stats = getattr(calc, "stats", None)
        counts = stats and (stats.full_steps, stats.reuse_steps)
        frame = {
            "positions": atoms.get_positions(),
            "momenta": atoms.get_momenta(),
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "kinetic": atoms.get_kinetic_energy(),
            "source": calc.results.get("boostmd_source", "reference"),
            "error": calc.results.get("refresh_energy_error"),
        }
        # reading properties in an observer runs no model
        assert (stats and (stats.full_steps, stats.reuse_steps)) == counts
        frames.append(frame)

    dynamics.attach(observe, interval=1)
    return frames


def assert_same_frames(frames, others):
    assert len(frames) == len(others)
    for a, b in zip(frames, others):
        np.testing.assert_array_equal(a["positions"], b["positions"])
        np.testing.assert_array_equal(a["momenta"], b["momenta"])
        np.testing.assert_array_equal(a["forces"], b["forces"])
        assert a["energy"] == b["energy"]


def langevin(system, rng, tau):
    """ASE's Langevin (``tau=None``) or the adaptive Langevin it extends."""
    if tau is None:
        return Langevin(
            system, TIMESTEP, temperature_K=300, friction=FRICTION, fixcm=False, rng=rng
        )
    return AdaptiveLangevin(system, TIMESTEP, 300, FRICTION, tau=tau, rng=rng)


@pytest.mark.parametrize("tau", [None, 20 * units.fs])
def test_without_rollbacks_equals_ase_langevin_bit_for_bit(reference, surrogate, atoms, tau):
    # tau=None: ASE's Langevin itself; otherwise its adaptive extension, step for step
    runs = []
    for checked in (False, True):
        system = atoms.copy()
        system.calc = calc = boost(reference, surrogate)
        rng = np.random.default_rng(7)
        if checked:
            dynamics = BoostLangevin(
                system,
                TIMESTEP,
                300,
                FRICTION,
                tolerance=math.inf,
                rng=rng,
                tau=tau,
                energy_consistent=False,
            )
        else:
            dynamics = langevin(system, rng, tau)
        frames = record(dynamics, system)
        dynamics.run(12)
        runs.append((frames, calc, rng.bit_generator.state))
    (ase_frames, ase_calc, ase_rng), (frames, calc, rng_state) = runs
    assert_same_frames(frames, ase_frames)
    assert [f["source"] for f in frames] == ["reference", *(["surrogate"] * 3 + ["reference"]) * 3]
    assert rng_state == ase_rng
    assert (dynamics.windows, dynamics.rollbacks) == (3, 0)
    # a run that ends on a window's end integrates nothing ahead: the same model calls
    assert (calc.stats.full_steps, calc.stats.reuse_steps) == (4, 9)
    assert (ase_calc.stats.full_steps, ase_calc.stats.reuse_steps) == (4, 9)
    assert calc.refresh_errors == ase_calc.refresh_errors


def reference_langevin_frames(reference, atoms, seed, steps):
    """Frames of BoostLangevin's step (its default adaptive friction) with the reference alone."""
    system = atoms.copy()
    system.calc = ReferenceCalculator(reference)
    dynamics = AdaptiveLangevin(system, TIMESTEP, 300, FRICTION, rng=np.random.default_rng(seed))
    frames = record(dynamics, system)
    dynamics.run(steps)
    return frames


def test_tolerance_zero_reruns_every_window_with_the_reference(
    reference, surrogate, atoms, tmp_path
):
    expected_frames = reference_langevin_frames(reference, atoms, seed=7, steps=8)

    atoms.calc = calc = boost(reference, surrogate)
    dynamics = BoostLangevin(
        atoms,
        TIMESTEP,
        300,
        FRICTION,
        tolerance=0.0,
        rng=np.random.default_rng(7),
        trajectory=str(tmp_path / "md.traj"),
        logfile=str(tmp_path / "md.log"),
    )
    frames = record(dynamics, atoms)
    dynamics.run(8)

    assert_same_frames(frames, expected_frames)
    assert [f["source"] for f in frames] == ["reference"] * 9  # rejected frames never shown
    assert dynamics.rollbacks == dynamics.windows == 2
    # each window: 3 surrogate steps, its ending reference call, then 4 reference reruns
    assert (calc.stats.full_steps, calc.stats.reuse_steps) == (1 + 2 * (1 + 4), 2 * 3)
    assert len(calc.refresh_errors) == 2 and all(abs(e) > 0 for e in calc.refresh_errors)
    written = Trajectory(str(tmp_path / "md.traj"))
    assert len(written) == 9
    for image, frame in zip(written, expected_frames):
        np.testing.assert_array_equal(image.positions, frame["positions"])
        assert image.get_potential_energy() == frame["energy"]
    assert len((tmp_path / "md.log").read_text().splitlines()) == 1 + 9


def test_adaptive_windows_are_rerun_to_their_own_end(reference, surrogate, atoms):
    # Threshold windows end where the displacement says: the rerun covers the same steps.
    expected_frames = reference_langevin_frames(reference, atoms, seed=5, steps=10)
    schedule = Threshold(tol=0.1, max_reuse=6)
    atoms.calc = calc = BoostMDCalculator(
        reference, surrogate, force_guard=1e9, schedule=schedule, frame="start"
    )
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, FRICTION, tolerance=0.0, rng=5)
    frames = record(dynamics, atoms)
    dynamics.run(10)
    assert_same_frames(frames, expected_frames)
    assert dynamics.windows == dynamics.rollbacks >= 2
    assert calc.stats.reuse_steps > 2 * dynamics.windows  # windows longer than two steps


TOL = 2.1e-4


def test_rejected_windows_are_rerun_and_accepted_ones_kept(reference, surrogate, atoms):
    atoms.calc = calc = boost(reference, surrogate)
    # refresh errors of this run are about 0 to 0.35 meV: this tolerance rejects some only
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, 0.2 / units.fs, tolerance=TOL, rng=1)
    frames = record(dynamics, atoms)
    dynamics.run(24)
    windows = [frames[1 + 4 * k : 5 + 4 * k] for k in range(6)]
    assert dynamics.windows == 6
    assert 0 < dynamics.rollbacks < 6, f"refresh errors {calc.refresh_errors}: retune tolerance"
    accepted = [w for w in windows if w[0]["source"] == "surrogate"]
    rerun = [w for w in windows if w[0]["source"] == "reference"]
    assert len(rerun) == dynamics.rollbacks
    for window in accepted:
        assert [f["source"] for f in window] == ["surrogate"] * 3 + ["reference"]
        assert abs(window[-1]["error"]) <= TOL
    for window in rerun:
        assert [f["source"] for f in window] == ["reference"] * 4
        assert all(f["error"] is None for f in window)
    rejected = [e for e in calc.refresh_errors if abs(e) > TOL]
    assert len(rejected) == dynamics.rollbacks
    assert len(calc.refresh_errors) == dynamics.windows


@pytest.mark.parametrize("tolerance", [math.inf, 0.0])
def test_run_that_ends_mid_window_continues_exactly(reference, surrogate, atoms, tolerance):
    def start(system, rng):
        system.calc = calc = boost(reference, surrogate, interval=5)
        dynamics = BoostLangevin(
            system, TIMESTEP, 300, FRICTION, tolerance=tolerance, rng=rng, energy_consistent=False
        )
        return dynamics, calc

    whole, _ = start(atoms.copy(), np.random.default_rng(3))
    frames = record(whole, whole.atoms)
    whole.run(10)

    rng = np.random.default_rng(3)
    split, _ = start(atoms.copy(), rng)
    split_frames = record(split, split.atoms)
    split.run(6)  # ends inside the window of steps 6-10
    saved = (split.atoms.get_positions(), split.atoms.get_momenta(), rng.bit_generator.state)
    saved_xi = split.xi.copy()
    split.run(4)
    assert_same_frames(split_frames, frames)
    if tolerance == 0.0:
        return  # the rest compares with surrogate-driven Langevin

    # the state shown after 6 steps is the adaptive Langevin's after 6 steps
    plain = atoms.copy()
    plain.calc = boost(reference, surrogate, interval=5)
    plain_rng = np.random.default_rng(3)
    ase_dynamics = AdaptiveLangevin(plain, TIMESTEP, 300, FRICTION, rng=plain_rng)
    ase_dynamics.run(6)
    np.testing.assert_array_equal(plain.positions, saved[0])
    np.testing.assert_array_equal(ase_dynamics.xi, saved_xi)
    assert plain_rng.bit_generator.state == saved[2]

    # resumed from saved positions, momenta and generator state: deterministic
    resumed = []
    for _ in range(2):
        system = atoms.copy()
        system.positions = saved[0]
        system.set_momenta(saved[1])
        rng = np.random.default_rng()
        rng.bit_generator.state = saved[2]
        dynamics, _ = start(system, rng)
        dynamics.xi = saved_xi.copy()
        resumed.append(record(dynamics, system))
        dynamics.run(4)
    assert_same_frames(resumed[0], resumed[1])


def test_changes_between_runs_drop_the_look_ahead(reference, surrogate, atoms):
    atoms.calc = boost(reference, surrogate, interval=5)
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, 0.0, tolerance=math.inf, rng=0)
    dynamics.run(2)  # mid-window: steps 3-5 are integrated ahead
    atoms.set_momenta(np.zeros_like(atoms.get_momenta()))
    positions, forces = atoms.get_positions(), atoms.get_forces()
    dynamics.run(1)
    # without friction, from rest: x1 = x0 + dt^2 F / (2 m)
    masses = atoms.get_masses()[:, None]
    np.testing.assert_allclose(
        atoms.positions, positions + TIMESTEP**2 * forces / (2 * masses), rtol=0, atol=1e-12
    )


def test_energy_consistent_nve_conserves_the_reference_energy(reference, atoms):
    # learned terms switched on, so that each refresh has a clear energy jump
    torch.manual_seed(3)
    surrogate = Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)
    with torch.no_grad():
        torch.nn.init.normal_(surrogate.coefficient_head.weight, std=0.15)
        torch.nn.init.normal_(surrogate.coefficient_head.bias, std=0.15)
    drift = {}
    for consistent in (False, True):
        system = atoms.copy()
        system.calc = boost(reference, surrogate, interval=5)
        dynamics = BoostLangevin(
            system,
            0.25 * units.fs,
            300,
            0.0,
            tolerance=math.inf,
            energy_consistent=consistent,
            tau=None,
            rng=1,
        )
        frames = record(dynamics, system)
        dynamics.run(40)
        total = [f["energy"] + f["kinetic"] for f in frames if f["source"] == "reference"]
        assert len(total) == 9 and dynamics.windows == 8
        drift[consistent] = np.abs(np.asarray(total) - total[0]).max()
    # without the option each refresh adds its dE to the total energy
    assert drift[False] > 1e-3
    assert drift[True] < drift[False] / 20, drift


def test_energy_consistent_refresh_corrects_along_the_force_error(reference, surrogate, atoms):
    # The energy a window gained is taken from the vibrations whose forces it got wrong:
    # the momentum change is along F_ref - F_sur, and total momentum is kept.
    atoms.calc = calc = boost(reference, surrogate, interval=5)
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, 0.0, tolerance=math.inf, rng=0)
    atoms.get_forces()
    frame = calc.window_state().frame
    dynamics.run(5)
    assert calc.results["boostmd_source"] == "reference"
    error, before = calc.refresh_errors[-1], atoms.get_momenta()
    own_momenta, force_error = dynamics._surrogate_momenta(calc, frame)
    masses = dynamics.masses

    def kinetic(momenta):
        return 0.5 * float((momenta**2 / masses).sum())

    dynamics._remove_from_kinetic_energy(error, calc, frame)
    after = atoms.get_momenta()
    assert abs(error) > 1e-4 and np.abs(force_error).max() > 1e-3
    assert kinetic(after) == pytest.approx(kinetic(own_momenta) - error, abs=1e-12)
    np.testing.assert_allclose(after.sum(0), before.sum(0), atol=1e-12)
    change = after - own_momenta
    along = (change * force_error).sum() / (force_error**2).sum() * force_error
    np.testing.assert_allclose(change, along, atol=1e-12)


def test_energy_consistent_guards_against_negative_kinetic_energy(
    reference, surrogate, atoms, caplog
):
    atoms.calc = calc = boost(reference, surrogate)
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, 0.0, energy_consistent=True, rng=0)
    kinetic = atoms.get_kinetic_energy()
    with caplog.at_level(logging.WARNING, logger="boostmd.dynamics.integrator"):
        dynamics._remove_from_kinetic_energy(10 * kinetic, calc, None)
    assert atoms.get_kinetic_energy() == pytest.approx(0.05 * kinetic, rel=1e-12)
    assert "would leave less than 5% of the kinetic energy" in caplog.text


def test_bad_arguments_raise_clear_errors(reference, surrogate, atoms):
    atoms.calc = ReferenceCalculator(reference)
    with pytest.raises(TypeError, match=r"needs atoms\.calc to be a BoostMDCalculator"):
        BoostLangevin(atoms, TIMESTEP, 300, FRICTION)
    atoms.calc = None
    with pytest.raises(TypeError, match="got NoneType"):
        BoostLangevin(atoms, TIMESTEP, 300, FRICTION)
    atoms.calc = boost(reference, surrogate)
    with pytest.raises(ValueError, match="tolerance must be a number of eV >= 0, got -1"):
        BoostLangevin(atoms, TIMESTEP, 300, FRICTION, tolerance=-1)
    with pytest.raises(ValueError, match="multiple of kB T, which is 0 at temperature_K=0"):
        BoostLangevin(atoms, TIMESTEP, 0, FRICTION)
    with pytest.raises(ValueError, match="friction must be a number >= 0"):
        BoostLangevin(atoms, TIMESTEP, 300, -1.0)
    with pytest.raises(ValueError, match="tau must be a positive time in ASE units"):
        BoostLangevin(atoms, TIMESTEP, 300, FRICTION, tau=-1.0)
    with pytest.raises(ValueError, match="needs temperature_K > 0"):
        BoostLangevin(atoms, TIMESTEP, 0, FRICTION, tolerance=0.1)
    with pytest.raises(ValueError, match=r"use fixcm=False and ase\.constraints\.FixCom"):
        BoostLangevin(atoms, TIMESTEP, 300, FRICTION, fixcm=True)
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        BoostLangevin(atoms, TIMESTEP, 300, FRICTION, rng="seed")
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, FRICTION, rng=0)
    with pytest.raises(ValueError, match="do not pass forces"):
        dynamics.step(forces=np.zeros((len(atoms), 3)))
    atoms.calc = ReferenceCalculator(reference)
    with pytest.raises(TypeError, match="BoostMDCalculator"):
        dynamics.run(1)


def test_boost_langevin_takes_lab_units(reference, surrogate, atoms):
    atoms.calc = boost(reference, surrogate)
    dynamics = boost_langevin(atoms, 300, timestep_fs=0.5, friction_per_ps=2.0, rng=0)
    assert isinstance(dynamics, BoostLangevin)
    assert dynamics.dt == pytest.approx(0.5 * units.fs)
    assert dynamics.fr == pytest.approx(0.002 / units.fs)
    # with the adaptive friction (the default) reruns are for windows far off: 10 kB T
    assert dynamics.tolerance == pytest.approx(10 * units.kB * 300)
    assert dynamics.tau == pytest.approx(100 * units.fs)
    assert dynamics.todict()["tolerance"] == dynamics.tolerance
    assert dynamics.todict()["tau"] == dynamics.tau
    dynamics = boost_langevin(atoms, 300, tolerance_eV=0.05, energy_consistent=True)
    assert dynamics.tolerance == 0.05 and dynamics.energy_consistent
    dynamics = boost_langevin(atoms, 300, tau_fs=None)
    assert dynamics.tau is None
    assert dynamics.tolerance == pytest.approx(3 * units.kB * 300)


def test_the_default_tolerance_grows_as_the_square_root_of_a_large_system(
    reference, surrogate, atoms
):
    from boostmd.dynamics.integrator import TOLERANCE_ATOMS, size_factor

    assert size_factor(9) == size_factor(TOLERANCE_ATOMS) == 1.0
    assert size_factor(4 * TOLERANCE_ATOMS) == pytest.approx(2.0)
    big = atoms.copy()
    for shift in range(1, 16):  # 16 ethanols 8 Å apart: 144 atoms
        copy = atoms.copy()
        copy.positions += [8.0 * (shift % 4), 8.0 * (shift // 4), 0.0]
        big += copy
    big.calc = boost(reference, surrogate)
    dynamics = boost_langevin(big, 300, rng=0)
    expected = 10 * units.kB * 300 * np.sqrt(len(big) / TOLERANCE_ATOMS)
    assert dynamics.tolerance == pytest.approx(expected)


def test_a_surrogate_that_does_not_fit_warns_once_with_the_figures_and_the_fix(
    reference, surrogate, atoms, caplog
):
    atoms.calc = calc = boost(reference, surrogate, interval=2)
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, FRICTION, tolerance=0.0, rng=1)
    with caplog.at_level(logging.WARNING, logger="boostmd.dynamics.integrator"):
        dynamics.run(98)  # 49 windows, every one rerun: not yet judged
        assert not caplog.records
        dynamics.run(4)  # the 50th window, then more: one warning
    [record] = caplog.records
    message = record.getMessage()
    assert "does not fit this system" in message and "100% were rerun" in message
    assert "python -m boostmd.fit --reference MODEL --structure" in message
    summary = dynamics.summary()
    assert summary.steps == 102 and summary.windows_rerun == dynamics.rollbacks == 51
    assert summary.reference_calls == calc.stats.full_steps
    assert summary.surrogate_calls == calc.stats.reuse_steps
    assert summary.rerun_fraction == 1.0 and summary.windows == len(calc.refresh_errors)
    errors = np.array(calc.refresh_errors)
    assert summary.refresh_error_mean_meV == pytest.approx(1000 * errors.mean())
    assert summary.refresh_error_rms_meV == pytest.approx(1000 * np.sqrt(np.mean(errors**2)))
    assert summary.as_dict()["reference_calls_per_step"] == summary.reference_calls / 102
    assert "51 of 51 windows rerun" in str(summary)


def test_a_fitting_surrogate_does_not_warn_and_the_warning_can_be_switched_off(
    reference, surrogate, atoms, caplog
):
    atoms.calc = boost(reference, surrogate, interval=2)
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, FRICTION, rng=1)
    with caplog.at_level(logging.WARNING, logger="boostmd.dynamics.integrator"):
        dynamics.run(120)
    assert dynamics.rollbacks == 0 and not caplog.records
    assert dynamics.summary().implied_speedup > 1
    atoms.calc = boost(reference, surrogate, interval=2)
    dynamics = BoostLangevin(atoms, TIMESTEP, 300, FRICTION, tolerance=0.0, rng=1)
    dynamics.warn_misfit = False
    with caplog.at_level(logging.WARNING, logger="boostmd.dynamics.integrator"):
        dynamics.run(120)
    assert dynamics.rollbacks == 60 and not caplog.records
