"""Validation runs at constant pressure: ASE's LangevinBAOAB barostat, the density judged."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.io import write

from boostmd.dynamics.md import ase_units
from boostmd.dynamics.npt import langevin_npt
from boostmd.forcefields.water import water_box
from boostmd.validation import runs
from boostmd.validation.validate import ValidationConfig, validate


@pytest.fixture(scope="module")
def box_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("water") / "w8.extxyz"
    write(path, water_box(8, seed=1))
    return path


def _tiny_npt(out, structure, **settings) -> ValidationConfig:
    """A validation of 20 steps per run, one replica, no NVE run, resumable every 10."""
    return ValidationConfig(
        out=out,
        structure=structure,
        steps=20,
        equilibration_steps=0,
        replicas=1,
        nve_steps=0,
        interval=10,
        checkpoint_every=10,
        batch=False,
        reference_runs=None,
        **settings,
    )


def test_the_npt_integrator_takes_lab_units_and_needs_a_periodic_cell():
    box = water_box(8, seed=1)
    box.calc = LennardJones(sigma=3.0, epsilon=0.01, rc=3.5)
    dynamics = langevin_npt(box, 300.0, pressure_GPa=0.5, timestep_fs=0.5, friction_per_ps=2.0)
    assert dynamics.fr == pytest.approx(ase_units(0.5, 2.0)[1])
    dynamics.set_friction(ase_units(0.5, 20.0)[1])  # the equilibration's friction
    assert dynamics.T_tau == pytest.approx(1 / ase_units(0.5, 20.0)[1])
    assert dynamics.externalstress == pytest.approx(-0.5 * 1e9 * 6.241509074e-12, rel=1e-6)
    with pytest.raises(ValueError, match="periodic along all three"):
        langevin_npt(molecule("H2O"), 300.0, pressure_GPa=0.0)


def test_the_checked_sampler_runs_at_constant_pressure_with_volume_moves(
    box_file, tmp_path, one_thread
):
    config = _tiny_npt(tmp_path, box_file, reference="water", pressure_GPa=1.0, barostat_every=10)
    assert config.runs_adaptive_reference  # integrator: checked, the default
    (report,) = validate(config)
    run = np.load(tmp_path / "checkpoints" / "w8-boostmd-checked-0.npz")
    volume_step, attempts, accepted = run["barostat_state"][:3]
    assert attempts == 1 and volume_step > 0  # one move, at the second window's start
    assert np.ptp(run["density"]) > 0 or accepted == 0
    assert np.isfinite(report["vs_reference"]["boostmd-checked"]["density_g_cm3"])


def test_constant_pressure_runs_judge_the_density_and_resume_bit_for_bit(
    box_file, tmp_path, monkeypatch, one_thread
):
    def config(out):
        return _tiny_npt(out, box_file, reference="water", integrator="none", pressure_GPa=1.0)

    (uninterrupted,) = validate(config(tmp_path / "a"))
    assert np.isfinite(uninterrupted["reference_2_vs_reference"]["density_g_cm3"])
    assert uninterrupted["noise_floor"]["density_g_cm3"] > 0
    assert set(uninterrupted["element_temperature_K"]["reference"]) == {"H", "O"}
    first = np.load(tmp_path / "a" / "checkpoints" / "w8-reference-0.npz")
    assert np.ptp(first["density"]) > 0  # the cell breathes
    assert np.isfinite(first["pressure"]).all()

    real_save, stopped = runs._save, set()

    def save_then_stop(path, state):  # each job stops once, after its first segment
        real_save(path, state)
        if path.name not in stopped and not state["finished"]:
            stopped.add(path.name)
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_save", save_then_stop)
    for _ in range(3):  # reference, reference-2, reference-adaptive
        with pytest.raises(KeyboardInterrupt):
            validate(config(tmp_path / "b"))
    validate(config(tmp_path / "b"))
    resumed = np.load(tmp_path / "b" / "checkpoints" / "w8-reference-0.npz")
    for key in ("positions", "cell", "density", "pressure", "barostat_state", "pair_counts"):
        np.testing.assert_array_equal(resumed[key], first[key])
    adaptive = [
        np.load(tmp_path / out / "checkpoints" / "w8-reference-adaptive-0.npz") for out in "ab"
    ]
    np.testing.assert_array_equal(adaptive[0]["xi"], adaptive[1]["xi"])
    assert np.abs(adaptive[0]["xi"]).max() > 0  # the adaptive friction ran
    np.testing.assert_array_equal(adaptive[0]["positions"], adaptive[1]["positions"])


def test_the_adaptive_friction_brings_hot_atoms_to_the_bath_at_constant_pressure():
    """With a negligible Langevin friction only the adaptive one can cool a hot box."""
    temperatures = {}
    for tau_fs in (None, 50.0):
        copper = bulk("Cu", cubic=True).repeat(3)
        copper.calc = EMT()
        copper.set_momenta(thermal(copper, 900.0))
        dynamics = langevin_npt(
            copper, 300.0, 0.0, timestep_fs=2.0, friction_per_ps=0.01, rng=5, tau_fs=tau_fs
        )
        samples = []
        dynamics.attach(lambda: samples.append(copper.get_temperature()), interval=1)  # noqa: B023
        dynamics.run(400)
        temperatures[tau_fs] = np.mean(samples[200:])
    assert temperatures[None] > 400  # 0.01/ps: nothing cools it in 0.8 ps (450 K: equipartition)
    assert temperatures[50.0] == pytest.approx(300, abs=40)


def thermal(atoms, temperature_K):
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)
    return momenta - momenta.sum(axis=0) / len(atoms)


def test_boostmd_runs_at_constant_pressure_under_the_adaptive_friction(tmp_path):
    """The shipped models on ALA in a periodic box: BoostMD's NPT run, as a user makes it."""
    from boostmd.forcefields.pretrained import MODELS_DIR
    from boostmd.validation.validate import starting_dipeptide

    alanine = starting_dipeptide("ALA")
    alanine.center(vacuum=4.0)
    alanine.pbc = True
    write(tmp_path / "ala-box.extxyz", alanine)
    config = _tiny_npt(
        tmp_path / "out",
        tmp_path / "ala-box.extxyz",
        surrogate=MODELS_DIR / "dipeptides-surrogate.pt",
        integrator="ase",
        pressure_GPa=0.0,
    )
    (report,) = validate(config)
    assert report["samplers"]["boostmd"]["reference_calls"] < 20  # windows ran
    run = np.load(tmp_path / "out" / "checkpoints" / "ala-box-boostmd-0.npz")
    assert np.ptp(run["density"]) > 0 and np.abs(run["xi"]).max() > 0
    assert np.isfinite(run["pressure"]).all()  # the surrogate steps give the stress too
