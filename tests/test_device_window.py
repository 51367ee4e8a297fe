"""Device windows: a window's surrogate steps integrated at once equal ASE's steps."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from boostmd import BoostLangevin, BoostMDCalculator, MACEReference, Surrogate
from boostmd.dynamics.device_window import LangevinCoefficients, integrate_window
from boostmd.dynamics.model_calls import windows_many
from boostmd.forcefields.testing import build_mace
from integrators import Threshold

TIMESTEP = 0.5 * units.fs
FRICTION = 0.01 / units.fs


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["float32", "float64"])
def models(request):
    reference = MACEReference(build_mace(dtype=request.param, seed=1))
    torch.manual_seed(3)
    return reference, Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)


def atoms(seed=0):
    system = molecule("CH3CH2OH")
    MaxwellBoltzmannDistribution(system, temperature_K=300, rng=np.random.default_rng(seed))
    return system


def run(models, device_windows, steps=14, **options):
    """Shown frames and counters of a BoostLangevin run, device windows on or off."""
    reference, surrogate = models
    calc_options = {"interval": 5, "force_guard": 1e9, "frame": "start", **options.pop("calc", {})}
    system = atoms()
    system.calc = calc = BoostMDCalculator(reference, surrogate, **calc_options)
    dynamics = BoostLangevin(
        system, TIMESTEP, 300, FRICTION, rng=4, device_windows=device_windows, **options
    )
    frames = []

    def observe():
        results = calc.results
        frames.append(
            (
                system.get_positions(),
                system.get_momenta(),
                system.get_potential_energy(),
                system.get_forces(),
                results["boostmd_source"],
                results["steps_since_reference"],
            )
        )

    dynamics.attach(observe)
    dynamics.run(steps)
    counters = (calc.stats.full_steps, calc.stats.reuse_steps, dynamics.rollbacks, calc.fallbacks)
    return frames, counters, calc.refresh_errors


def assert_same_runs(a, b):
    (frames_a, counters_a, errors_a), (frames_b, counters_b, errors_b) = a, b
    assert counters_a == counters_b and errors_a == errors_b
    assert len(frames_a) == len(frames_b)
    for frame_a, frame_b in zip(frames_a, frames_b):
        for x, y in zip(frame_a, frame_b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tolerance": 2e-4},  # some windows rerun with the reference
        {"energy_consistent": True, "calc": {"calibration": True}},
        {"calc": {"frame": "centred", "timestep_fs": 0.5}},
    ],
    ids=["plain", "rollbacks", "consistent-calibrated", "centred"],
)
def test_device_windows_follow_ase_steps_bit_for_bit(models, options):
    host = run(models, device_windows=False, **options)
    device = run(models, device_windows=True, **options)
    assert_same_runs(device, host)
    assert host[1][1] > 0  # surrogate steps were taken


def test_a_guard_trip_inside_a_window_is_left_to_the_ase_step(models, monkeypatch):
    def trips_now_and_then(calc, forces):  # as if the forces were too large there
        return (99.0, 10.0) if calc.stats.reuse_steps % 7 == 3 else None

    monkeypatch.setattr(BoostMDCalculator, "_force_beyond_guard", trips_now_and_then)
    host = run(models, device_windows=False, steps=20)
    device = run(models, device_windows=True, steps=20)
    assert host[1][3] > 0  # fallbacks
    assert_same_runs(device, host)


def test_only_a_periodic_schedule_announces_its_surrogate_steps(models):
    reference, surrogate = models
    system = atoms()
    system.calc = calc = BoostMDCalculator(reference, surrogate, interval=4, frame="start")
    assert calc.scheduled_surrogate_steps() == 0  # no frame yet
    system.get_forces()
    ahead = []
    for _ in range(6):
        ahead.append(calc.scheduled_surrogate_steps())
        system.positions += 0.001
        system.get_forces()
    assert ahead == [3, 2, 1, 0, 3, 2]
    with calc.reference_only():
        assert calc.scheduled_surrogate_steps() == 0
    system.calc = calc = BoostMDCalculator(
        reference, surrogate, schedule=Threshold(0.1, 10), frame="start"
    )
    system.get_forces()
    assert calc.scheduled_surrogate_steps() == 0


def test_two_systems_integrated_together_equal_each_alone(models):
    reference, surrogate = models
    systems = [atoms(0), molecule("CH3OH")]
    coefficient_sets, calls = [], []
    rng = np.random.default_rng(0)
    for system in systems:
        system.calc = calc = BoostMDCalculator(reference, surrogate, interval=8, frame="start")
        system.get_forces()
        dynamics = BoostLangevin(system, TIMESTEP, 300, FRICTION, rng=0)
        coefficients = LangevinCoefficients.of(dynamics)
        coefficient_sets.append(coefficients)
        noise = rng.standard_normal((6, 2, len(system), 3))
        calls.append(
            (calc._frame, 1.0, coefficients, system.positions, system.get_momenta(),
             calc.results["forces"], dynamics.xi, noise)
        )  # fmt: skip
    together = windows_many(surrogate, calls)
    for call, path in zip(calls, together):
        alone = integrate_window(surrogate, *call)
        atol = 1e-4 if reference.dtype == torch.float32 else 1e-9
        np.testing.assert_allclose(path.positions, alone.positions, atol=atol)
        np.testing.assert_allclose(path.energies, alone.energies, atol=atol)
    with pytest.raises(ValueError, match="same timestep and friction"):
        LangevinCoefficients.concatenate(
            [coefficient_sets[0], LangevinCoefficients.of(BoostLangevin(systems[1], 1.0, 300, 0.0))]
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_captured_window_on_a_gpu_equals_the_cpu_window(models):
    reference, surrogate = models
    system = atoms()
    system.calc = calc = BoostMDCalculator(reference, surrogate, interval=8, frame="start")
    system.get_forces()
    dynamics = BoostLangevin(system, TIMESTEP, 300, FRICTION, rng=0)
    coefficients = LangevinCoefficients.of(dynamics)
    noise = np.random.default_rng(1).standard_normal((7, 2, len(system), 3))
    args = (
        coefficients, system.positions, system.get_momenta(), calc.results["forces"],
        np.full(len(system), 0.002), noise,
    )  # fmt: skip
    cpu = integrate_window(surrogate, calc._frame, 1.0, *args)
    gpu_frame = type(calc._frame)(
        **{k: v.cuda() if torch.is_tensor(v) else v for k, v in vars(calc._frame).items()}
    )
    gpu = integrate_window(surrogate.cuda(), gpu_frame, 1.0, *args)
    surrogate.cpu()
    np.testing.assert_allclose(gpu.positions, cpu.positions, atol=1e-5)
