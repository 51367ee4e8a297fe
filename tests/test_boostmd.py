import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.io import Trajectory
from ase.md import MDLogger
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from scipy.spatial.transform import Rotation

from boostmd import BoostLangevin, BoostMDCalculator, MACEReference, Surrogate
from boostmd.dynamics.calibration import CurvatureCalibration
from boostmd.forcefields.testing import build_mace
from integrators import ErrorControlled, Threshold


@pytest.fixture(scope="module")
def reference():
    return MACEReference(build_mace(dtype=torch.float64, seed=1))


def randomise_learned_terms(surrogate):
    """An untrained surrogate is the first-order expansion; give its learned terms weights."""
    with torch.no_grad():
        torch.nn.init.normal_(surrogate.coefficient_head.weight, std=0.3)
        torch.nn.init.normal_(surrogate.coefficient_head.bias, std=0.3)
        torch.nn.init.normal_(surrogate.body.readout[-1].weight, std=0.3)
        torch.nn.init.normal_(surrogate.body.readout[-1].bias, std=0.3)
    return surrogate


@pytest.fixture(scope="module")
def surrogate(reference):
    torch.manual_seed(3)
    return randomise_learned_terms(
        Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)
    )


@pytest.fixture
def ethanol():
    return molecule("CH3CH2OH")


def frame_for(reference, surrogate, atoms):
    result = reference(atoms)
    frame = surrogate.prepare(
        atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
    )
    return result, frame


def displaced(atoms, scale=0.05, seed=0):
    return atoms.positions + np.random.default_rng(seed).normal(0, scale, atoms.positions.shape)


def numerical_forces(energy_fn, positions, h=1e-5):
    forces = np.zeros_like(positions)
    for i in range(positions.shape[0]):
        for k in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[i, k] += h
            minus[i, k] -= h
            forces[i, k] = -(energy_fn(plus) - energy_fn(minus)) / (2 * h)
    return forces


# ----------------------------------------------------------------------------- reference
def test_reference_matches_mace_calculator(reference, ethanol):
    from mace.calculators import MACECalculator

    result = reference(ethanol)
    calc = MACECalculator(models=reference.model, device="cpu", default_dtype="float64")
    ethanol.calc = calc
    assert float(result.energy) == pytest.approx(ethanol.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(result.forces.numpy(), ethanol.get_forces(), atol=1e-10)
    descriptors = calc.get_descriptors(ethanol, invariants_only=True)
    np.testing.assert_allclose(result.node_features.numpy(), descriptors, atol=1e-12)
    assert reference.feature_dim == 32 and reference.layer_feature_dims == [16, 16]


def test_reference_forces_match_finite_differences(reference, ethanol):
    forces = reference(ethanol).forces.numpy()

    def energy(positions):
        return float(reference.compute(ethanol.numbers, positions).energy)

    np.testing.assert_allclose(forces, numerical_forces(energy, ethanol.positions), atol=1e-6)


def test_reference_periodic_cell_sees_images(reference):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[3.0, 3.0, 3.0], pbc=True)
    isolated = reference.compute(atoms.numbers, atoms.positions)
    periodic = reference(atoms)
    assert float(periodic.energy) != pytest.approx(float(isolated.energy))
    np.testing.assert_allclose(periodic.forces.sum(0).numpy(), 0, atol=1e-10)


def test_shipped_reference_gives_the_same_forces_on_its_first_call_as_later():
    """A fresh process: TorchScript's profiling executor must not change the first result."""
    script = (
        "import numpy as np\n"
        "from boostmd.forcefields.peptides import capped_dipeptide\n"
        "from boostmd.forcefields.pretrained import load_pretrained\n"
        "reference, _ = load_pretrained()\n"
        "atoms = capped_dipeptide('ALA')\n"
        "forces = [reference(atoms).forces.numpy() for _ in range(3)]\n"
        "print(max(float(np.abs(f - forces[0]).max()) for f in forces))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # more threads: load-dependent sums
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert float(done.stdout.split()[-1]) == 0.0


def test_reference_names_unknown_elements(reference):
    with pytest.raises(ValueError, match=r"does not know element\(s\) Fe, Pt"):
        reference(Atoms("FePtH", positions=[[0, 0, 0], [2, 0, 0], [0, 2, 0]]))


def test_reference_rejects_nan_and_bad_shapes(reference, ethanol):
    positions = ethanol.positions.copy()
    positions[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        reference.compute(ethanol.numbers, positions)
    with pytest.raises(ValueError, match=r"positions must have shape \(9, 3\)"):
        reference.compute(ethanol.numbers, positions[:4])


def test_reference_from_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MACE model file"):
        MACEReference.from_file(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="no MACE weights file"):
        MACEReference.load(tmp_path / "missing.pt")


def test_reference_files_round_trip(reference, ethanol, tmp_path):
    from boostmd.forcefields.mace_io import save_mace

    expected = reference(ethanol)
    torch.save(reference.model, tmp_path / "pickled.model")
    safe = save_mace(reference.model, tmp_path / "weights.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_mace(reference.model, safe)
    for loaded in (
        MACEReference.from_file(tmp_path / "pickled.model", dtype="float64"),
        MACEReference.load(safe, dtype="float64"),
    ):
        result = loaded(ethanol)
        assert torch.equal(result.energy, expected.energy)
        assert torch.equal(result.forces, expected.forces)
        assert loaded.fingerprint == reference.fingerprint


def test_reference_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a readable MACE weights file"):
        MACEReference.load(path)


# ----------------------------------------------------------------------------- surrogate
def test_surrogate_exact_at_reference_frame(reference, surrogate, ethanol):
    result, frame = frame_for(reference, surrogate, ethanol)
    energy, forces = surrogate.energy_and_forces(frame, ethanol.positions)
    assert float(energy[0]) == pytest.approx(float(result.energy), abs=1e-12)
    torch.testing.assert_close(forces, result.forces, atol=1e-9, rtol=0)


def test_surrogate_forces_match_finite_differences(reference, surrogate, ethanol):
    _, frame = frame_for(reference, surrogate, ethanol)
    positions = displaced(ethanol)
    _, forces = surrogate.energy_and_forces(frame, positions)

    def energy(p):
        return float(surrogate.energy_and_forces(frame, p)[0][0])

    np.testing.assert_allclose(forces.numpy(), numerical_forces(energy, positions), atol=1e-6)


def test_untrained_surrogate_is_the_first_order_expansion(reference, ethanol):
    torch.manual_seed(0)
    fresh = Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)
    _, frame = frame_for(reference, fresh, ethanol)
    positions = torch.as_tensor(displaced(ethanol, scale=0.02))
    with torch.no_grad():
        energy = fresh.energy(frame, positions)
        frame.coefficients = torch.zeros_like(frame.coefficients)
        assert float(energy) == pytest.approx(float(fresh.energy(frame, positions)), abs=1e-4)


def test_surrogate_learned_part_is_not_trivial(reference, surrogate, ethanol):
    # Away from the reference the prediction differs from the first-order expansion.
    _, frame = frame_for(reference, surrogate, ethanol)
    positions = torch.as_tensor(displaced(ethanol))
    with torch.no_grad():
        full = surrogate.energy(frame, positions)
        frame.coefficients = torch.zeros_like(frame.coefficients)
        assert abs(float(full - surrogate.energy(frame, positions))) > 1e-3


def test_surrogate_invariant_to_rigid_motion_of_current_positions(reference, surrogate, ethanol):
    _, frame = frame_for(reference, surrogate, ethanol)
    positions = displaced(ethanol)
    energy, forces = surrogate.energy_and_forces(frame, positions)
    rotation = Rotation.random(random_state=4).as_matrix()
    moved = positions @ rotation.T + np.array([1.0, -2.0, 0.5])
    energy_moved, forces_moved = surrogate.energy_and_forces(frame, moved)
    assert float(energy_moved[0]) == pytest.approx(float(energy[0]), abs=1e-10)
    np.testing.assert_allclose(forces_moved.numpy(), forces.numpy() @ rotation.T, atol=1e-9)
    np.testing.assert_allclose(forces.sum(0).numpy(), 0, atol=1e-10)
    torque = np.cross(positions, forces.numpy()).sum(0)
    np.testing.assert_allclose(torque, 0, atol=1e-9)


def test_surrogate_permutation_invariant(reference, surrogate, ethanol):
    result, frame = frame_for(reference, surrogate, ethanol)
    positions = displaced(ethanol)
    energy, forces = surrogate.energy_and_forces(frame, positions)
    order = np.random.default_rng(1).permutation(len(ethanol))
    permuted = surrogate.prepare(
        ethanol.numbers[order],
        result.node_features[order],
        ethanol.positions[order],
        result.energy,
        result.forces[order],
    )
    energy_p, forces_p = surrogate.energy_and_forces(permuted, positions[order])
    assert float(energy_p[0]) == pytest.approx(float(energy[0]), abs=1e-10)
    np.testing.assert_allclose(forces_p.numpy(), forces.numpy()[order], atol=1e-10)


def test_batched_frames_equal_single_frames(reference, surrogate, ethanol):
    water = molecule("H2O")
    singles, parts = [], []
    for atoms in (ethanol, water):
        result, frame = frame_for(reference, surrogate, atoms)
        positions = displaced(atoms, seed=len(atoms))
        singles.append(surrogate.energy_and_forces(frame, positions))
        parts.append((atoms, result, positions))
    offsets = [0, len(ethanol)]
    edges = []
    for (atoms, _, _), offset in zip(parts, offsets):
        graph = surrogate.prepare(
            atoms.numbers,
            reference(atoms).node_features,
            atoms.positions,
            0.0,
            reference(atoms).forces,
        )
        edges.append(graph.edge_index + offset)
    batch = torch.cat([torch.full((len(a),), g) for g, (a, _, _) in enumerate(parts)])
    frame = surrogate.prepare(
        np.concatenate([a.numbers for a, _, _ in parts]),
        torch.cat([r.node_features for _, r, _ in parts]),
        np.concatenate([a.positions for a, _, _ in parts]),
        torch.stack([r.energy for _, r, _ in parts]),
        torch.cat([r.forces for _, r, _ in parts]),
        batch=batch,
        edge_index=torch.cat(edges, dim=1),
    )
    energy, forces = surrogate.energy_and_forces(frame, np.concatenate([p for _, _, p in parts]))
    torch.testing.assert_close(energy, torch.cat([e for e, _ in singles]))
    torch.testing.assert_close(forces, torch.cat([f for _, f in singles]))


def test_save_load_round_trip(reference, surrogate, ethanol, tmp_path):
    path = surrogate.save(tmp_path / "surrogate.pt")
    loaded = Surrogate.load(path, dtype=torch.float64)
    assert loaded.config == surrogate.config
    _, frame = frame_for(reference, surrogate, ethanol)
    _, frame_loaded = frame_for(reference, loaded, ethanol)
    positions = displaced(ethanol)
    for a, b in zip(
        surrogate.energy_and_forces(frame, positions),
        loaded.energy_and_forces(frame_loaded, positions),
    ):
        assert torch.equal(a, b)


def test_save_never_overwrites_silently(surrogate, tmp_path):
    path = surrogate.save(tmp_path / "s.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        surrogate.save(path)
    surrogate.save(path, overwrite=True)


def test_load_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no BoostMD surrogate file"):
        Surrogate.load(tmp_path / "nothing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable BoostMD surrogate"):
        Surrogate.load(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="boostmd-surrogate header"):
        Surrogate.load(other)


def test_surrogate_rejects_wrong_feature_shape(reference, surrogate, ethanol):
    result = reference(ethanol)
    with pytest.raises(ValueError, match=r"node_features must have shape \(9, 32\)"):
        surrogate.prepare(
            ethanol.numbers,
            result.node_features[:, :5],
            ethanol.positions,
            result.energy,
            result.forces,
        )


def test_bad_hyperparameters(reference):
    with pytest.raises(ValueError, match=r"num_channels=\.\.\.\) must be an integer >= 1"):
        Surrogate.for_reference(reference, num_channels=0)
    with pytest.raises(ValueError, match=r"length_scale=\.\.\.\) must be a number > 0"):
        Surrogate.for_reference(reference, length_scale=-1.0)


# ----------------------------------------------------------------------------- calculator
def run_md(atoms, calc, dynamics, steps, observers=()):
    atoms.calc = calc
    sources = []
    dynamics.attach(lambda: sources.append(calc.results["boostmd_source"]), interval=1)
    for observer in observers:
        dynamics.attach(observer, interval=1)
    dynamics.run(steps)
    return sources


def test_langevin_reference_runs_every_interval(reference, surrogate, ethanol, tmp_path):
    counts = []
    for observe in (False, True):
        atoms = ethanol.copy()
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=5, frame="start")
        dynamics = Langevin(
            atoms,
            0.5 * units.fs,
            temperature_K=300,
            friction=0.01,
            fixcm=False,
            rng=np.random.default_rng(1),
        )
        observers = []
        if observe:
            observers = [
                MDLogger(dynamics, atoms, str(tmp_path / "md.log")),
                Trajectory(str(tmp_path / "md.traj"), "w", atoms),
            ]
        sources = run_md(atoms, calc, dynamics, 25, observers)
        # Steps 0..25: the reference on 0, 5, ..., 25, the surrogate elsewhere.
        expected = ["reference" if step % 5 == 0 else "surrogate" for step in range(26)]
        assert sources == expected
        counts.append((calc.stats.full_steps, calc.stats.reuse_steps))
    assert counts == [(6, 20), (6, 20)]
    assert len(Trajectory(str(tmp_path / "md.traj"))) == 26


def test_repeated_property_requests_do_not_advance(reference, surrogate, ethanol):
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=3, frame="start")
    ethanol.calc = calc
    for _ in range(3):
        ethanol.get_potential_energy()
        ethanol.get_forces()
    assert calc.stats.total_steps == 1
    ethanol.positions += 0.01
    ethanol.get_forces()
    ethanol.get_potential_energy()
    assert calc.results["boostmd_source"] == "surrogate"
    assert calc.results["steps_since_reference"] == 1
    assert calc.stats.total_steps == 2


def test_reset_and_new_atoms_force_a_reference_call(reference, surrogate, ethanol):
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=100, frame="start")
    ethanol.calc = calc
    ethanol.get_forces()
    ethanol.positions += 0.01
    ethanol.get_forces()
    assert calc.results["boostmd_source"] == "surrogate"
    calc.reset()
    ethanol.get_forces()
    assert calc.results["boostmd_source"] == "reference"
    water = molecule("H2O")
    water.calc = calc
    water.get_forces()
    assert calc.results["boostmd_source"] == "reference"
    assert calc.stats.full_steps == 3


@pytest.mark.parametrize("scale", [1.0, 1.3])
@pytest.mark.parametrize("step_kind", ["reference", "surrogate"])
def test_calculator_forces_are_gradients(reference, surrogate, ethanol, step_kind, scale):
    fitted = CurvatureCalibration(min_windows=1, sum_rk=scale, sum_kk=1.0, windows=1)
    calc = BoostMDCalculator(
        reference, surrogate, force_guard=1e9, interval=100, calibration=fitted, frame="start"
    )
    assert calc.curvature_scale == scale
    ethanol.calc = calc
    ethanol.get_forces()
    if step_kind == "surrogate":
        ethanol.positions = displaced(ethanol, scale=0.03)
    forces = ethanol.get_forces()
    assert calc.results["boostmd_source"] == step_kind
    positions = ethanol.positions.copy()

    def energy(p):
        if step_kind == "reference":
            return float(reference.compute(ethanol.numbers, p).energy)
        return float(surrogate.energy(calc._frame, torch.as_tensor(p), scale)[0].detach())

    np.testing.assert_allclose(forces, numerical_forces(energy, positions), atol=1e-6)


def test_curvature_term_vanishes_with_its_gradient_at_the_frame(reference, surrogate, ethanol):
    result, frame = frame_for(reference, surrogate, ethanol)
    at_frame = torch.as_tensor(ethanol.positions)
    for scale in (0.5, 1.0, 2.0):  # any scale keeps the surrogate exact at the frame
        energy, forces = surrogate.energy_and_forces(frame, at_frame, curvature_scale=scale)
        assert float(energy[0]) == pytest.approx(float(result.energy), abs=1e-9)
        np.testing.assert_allclose(forces.numpy(), result.forces.numpy(), atol=1e-8)
    moved = torch.as_tensor(displaced(ethanol, scale=0.05))
    base, curvature = surrogate.energy_parts(frame, moved)
    assert abs(float(curvature[0].detach())) > 1e-4
    energy = surrogate.energy(frame, moved, curvature_scale=1.7)
    expected = float((base + 1.7 * curvature)[0].detach())
    assert float(energy[0].detach()) == pytest.approx(expected, abs=1e-12)


def test_calculator_fits_the_curvature_scale_on_every_window(reference, surrogate, ethanol):
    fit = CurvatureCalibration(min_windows=2)
    calc = BoostMDCalculator(
        reference, surrogate, force_guard=1e9, interval=3, calibration=fit, frame="start"
    )
    ethanol.calc = calc
    MaxwellBoltzmannDistribution(ethanol, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(ethanol, 0.5 * units.fs)
    scales = []
    dynamics.attach(lambda: scales.append(calc.results["curvature_scale"]))
    dynamics.run(15)
    assert calc.calibration.windows == len(calc.refresh_errors) == 5
    assert scales[:7] == [1.0] * 7  # steps 0-6: the first two windows run unscaled
    assert scales[7] == scales[8] == scales[9] != 1.0  # one fitted scale for the 3rd window


def test_velocity_verlet_conserves_energy_within_a_window(reference, surrogate, ethanol):
    # Between reference calls the surrogate is one conservative potential, so velocity
    # Verlet's energy error is second order in the timestep.
    fluctuations = []
    for timestep, steps in ((0.2, 20), (0.1, 40)):
        atoms = ethanol.copy()
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(2))
        atoms.calc = BoostMDCalculator(
            reference, surrogate, force_guard=1e9, interval=1000, frame="start"
        )
        dynamics = VelocityVerlet(atoms, timestep * units.fs)
        energies = []
        dynamics.attach(lambda a=atoms, e=energies: e.append(a.get_total_energy()))
        dynamics.run(steps)
        fluctuations.append(np.ptp(energies))
    assert fluctuations[1] < 5e-3
    assert fluctuations[0] / fluctuations[1] == pytest.approx(4.0, rel=0.25)


@pytest.mark.parametrize(
    "make_dynamics",
    [
        lambda a: Bussi(
            a, 0.5 * units.fs, temperature_K=300, taut=50 * units.fs, rng=np.random.default_rng(0)
        ),
        lambda a: NoseHooverChainNVT(a, 0.5 * units.fs, temperature_K=300, tdamp=50 * units.fs),
        lambda a: VelocityVerlet(a, 0.5 * units.fs),
    ],
)
def test_works_with_ase_integrators(reference, surrogate, ethanol, make_dynamics):
    atoms = ethanol.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=4, frame="start")
    atoms.calc = calc
    make_dynamics(atoms).run(12)
    assert calc.stats.full_steps == 4 and calc.stats.reuse_steps == 9
    assert np.isfinite(atoms.get_forces()).all()


def test_threshold_schedule_adapts_to_displacement(reference, surrogate, ethanol):
    calc = BoostMDCalculator(
        reference, surrogate, force_guard=1e9, schedule=Threshold(tol=0.05), frame="start"
    )
    ethanol.calc = calc
    ethanol.get_forces()
    sources = []
    for shift in (0.01, 0.01, 0.04, 0.01):
        ethanol.positions[0] += shift
        ethanol.get_forces()
        sources.append(calc.results["boostmd_source"])
    # accumulated displacements: 0.01, 0.02, 0.06 > 0.05 -> reference, then 0.01
    assert sources == ["surrogate", "surrogate", "reference", "surrogate"]


def test_periodic_system_runs(reference, surrogate):
    atoms = molecule("CH4")
    atoms.set_cell([6.0, 6.0, 6.0])
    atoms.center()
    atoms.pbc = True
    atoms.positions[0] += [0, 0, 2.5]  # close to a periodic image of another molecule
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=10, frame="start")
    atoms.calc = calc
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces.sum(0), 0, atol=1e-9)
    atoms.positions += np.random.default_rng(0).normal(0, 0.02, atoms.positions.shape)
    forces = atoms.get_forces()
    assert calc.results["boostmd_source"] == "surrogate"
    np.testing.assert_allclose(forces.sum(0), 0, atol=1e-9)


def test_calculator_rejects_mismatched_surrogate(reference, surrogate):
    other = MACEReference(build_mace(dtype=torch.float64, seed=99))
    with pytest.raises(ValueError, match=r"trained for reference model .* but this reference"):
        BoostMDCalculator(other, surrogate)


def test_calculator_rejects_nan_positions(reference, surrogate, ethanol):
    ethanol.calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, frame="start")
    ethanol.positions[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"atoms \[3\] have NaN or infinite positions"):
        ethanol.get_forces()


def test_calculator_rejects_unknown_elements(reference, surrogate):
    atoms = Atoms("CuH", positions=[[0, 0, 0], [1.5, 0, 0]])
    atoms.calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, frame="start")
    with pytest.raises(ValueError, match=r"does not know element\(s\) Cu"):
        atoms.get_forces()


def test_force_guard_falls_back_to_the_reference(reference, surrogate, ethanol, caplog):
    calc = BoostMDCalculator(reference, surrogate, interval=100, force_guard=2.0, frame="start")
    ethanol.calc = calc
    ethanol.get_forces()
    ethanol.positions[0] += [0.6, 0.0, 0.0]  # far outside any boost window
    with caplog.at_level("WARNING", logger="boostmd.dynamics.calculator"):
        forces = ethanol.get_forces()
    assert calc.results["boostmd_source"] == "reference" and calc.fallbacks == 1
    assert "running the reference instead" in caplog.text
    np.testing.assert_allclose(forces, reference(ethanol).forces.numpy(), atol=1e-10)
    with pytest.raises(ValueError, match="force_guard must be > 1"):
        BoostMDCalculator(reference, surrogate, force_guard=0.5, frame="start")


# ------------------------------------------------------------- refresh energy error, windows
def walk(atoms, calc, steps, scale=0.02, seed=0):
    """Move ``atoms`` by random displacements; return each step's results."""
    rng = np.random.default_rng(seed)
    atoms.calc = calc
    atoms.get_forces()
    seen = [dict(calc.results)]
    for _ in range(steps):
        atoms.positions = atoms.positions + rng.normal(0, scale, atoms.positions.shape)
        atoms.get_forces()
        seen.append(dict(calc.results))
    return seen


def surrogate_energy(surrogate, frame, positions):
    with torch.no_grad():
        return float(surrogate.energy(frame, torch.as_tensor(positions))[0])


def test_refresh_energy_error_is_reference_minus_old_frame_surrogate(reference, surrogate, ethanol):
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=3, frame="start")
    start = ethanol.copy()
    seen = walk(ethanol, calc, 3)
    # Independently: the frame of step 0 evaluated at the positions of step 3.
    _, frame = frame_for(reference, surrogate, start)
    energy_ref = float(reference.compute(ethanol.numbers, ethanol.positions).energy)
    energy_sur = surrogate_energy(surrogate, frame, ethanol.positions)
    sources = [r["boostmd_source"] for r in seen]
    assert sources == ["reference", "surrogate", "surrogate", "reference"]
    assert ["refresh_energy_error" in r for r in seen] == [False, False, False, True]
    error = seen[3]["refresh_energy_error"]
    assert error == pytest.approx(energy_ref - energy_sur, abs=1e-10)
    assert abs(error) > 1e-6  # a real surrogate error, not a trivial zero
    assert calc.refresh_errors == [error]
    # the refresh force error: RMS of F_ref - F_sur(old frame) over all components
    forces_ref = reference.compute(ethanol.numbers, ethanol.positions).forces.numpy()
    _, forces_sur = surrogate.energy_and_forces(frame, ethanol.positions)
    expected = np.sqrt(np.mean((forces_ref - forces_sur.numpy()) ** 2))
    assert seen[3]["refresh_force_error"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert seen[3]["refresh_force_error"] > 1e-6
    assert calc.refresh_force_errors == [seen[3]["refresh_force_error"]]
    # with start frames the potential's jump at the refresh is the refresh error itself
    assert seen[3]["frame_switch_energy"] == error
    np.testing.assert_allclose(seen[3]["frame_switch_surrogate_forces"], forces_sur.numpy())
    # the extra surrogate energy call is part of the reference step, not a step of its own
    assert (calc.stats.full_steps, calc.stats.reuse_steps) == (2, 2)


def test_refresh_errors_one_per_finished_window(reference, surrogate, ethanol):
    atoms = ethanol.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=4, frame="start")
    atoms.calc = calc
    dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
    errors = []
    dynamics.attach(lambda: errors.append(calc.results.get("refresh_energy_error")))
    dynamics.run(13)
    # reference calls at steps 0, 4, 8, 12: three finished windows, one open
    assert [e is not None for e in errors] == [s in (4, 8, 12) for s in range(14)]
    assert calc.refresh_errors == [e for e in errors if e is not None]
    assert len(calc.refresh_force_errors) == 3


def test_an_error_controlled_schedule_hears_every_window_and_adapts(reference, surrogate, ethanol):
    schedule = ErrorControlled(tol=1e-9, initial=4, min_interval=2, order=1.0, memory=1)
    calc = BoostMDCalculator(
        reference, surrogate, force_guard=1e9, schedule=schedule, frame="start"
    )
    seen = walk(ethanol, calc, 8)
    sources = "".join("F" if r["boostmd_source"] == "reference" else "." for r in seen)
    # a 4-step window, then the error (far over tol) shortens the interval to the minimum
    assert sources == "F...F.F.F"
    assert schedule.model.reports == len(calc.refresh_errors) == 3
    last = calc.refresh_errors[-1]
    assert schedule.model.mean_square == pytest.approx((last / 2) ** 2)  # memory 1: the last


def test_force_guard_fallback_ends_a_window_with_its_error(reference, surrogate, ethanol):
    calc = BoostMDCalculator(reference, surrogate, interval=100, force_guard=2.0, frame="start")
    ethanol.calc = calc
    ethanol.get_forces()
    _, frame = frame_for(reference, surrogate, ethanol)
    ethanol.positions[0] += [0.6, 0.0, 0.0]
    energy = ethanol.get_potential_energy()
    assert calc.fallbacks == 1 and calc.results["boostmd_source"] == "reference"
    energy_sur = surrogate_energy(surrogate, frame, ethanol.positions)
    assert calc.results["refresh_energy_error"] == pytest.approx(energy - energy_sur, abs=1e-10)
    assert calc.refresh_errors == [calc.results["refresh_energy_error"]]


def test_reference_only_and_new_systems_end_no_window(reference, surrogate, ethanol):
    calc = BoostMDCalculator(reference, surrogate, force_guard=1e9, interval=3, frame="start")
    walk(ethanol, calc, 2)  # reference, surrogate, surrogate
    with calc.reference_only():
        seen = walk(ethanol, calc, 3, seed=1)[1:]
    assert [r["boostmd_source"] for r in seen] == ["reference"] * 3
    assert [r["boostmd_scheduled"] for r in seen] == [True, False, False]  # steps 3, 4, 5
    assert not any("refresh_energy_error" in r for r in seen)
    assert (calc.stats.full_steps, calc.stats.reuse_steps) == (4, 2)
    # the schedule kept counting: step 6 is due, steps 6 + 1, 6 + 2 reuse it again
    seen = walk(ethanol, calc, 3, seed=2)[1:]
    assert [r["boostmd_source"] for r in seen] == ["reference", "surrogate", "surrogate"]
    assert "refresh_energy_error" not in seen[0]  # steps 3-5 were all reference
    calc.reset()
    ethanol.get_forces()
    assert "refresh_energy_error" not in calc.results and calc.refresh_errors == []


def test_window_state_restores_identical_results(reference, surrogate, ethanol):
    calc = BoostMDCalculator(
        reference,
        surrogate,
        force_guard=1e9,
        schedule=Threshold(tol=0.05, max_reuse=3),
        frame="start",
    )
    walk(ethanol, calc, 2)
    state = calc.window_state()
    positions = ethanol.positions.copy()
    counts = calc.stats.total_steps
    first = walk(ethanol, calc, 6, seed=5)
    for _ in range(2):  # a snapshot can be restored more than once
        ethanol.positions = positions
        calc.restore_window_state(state)
        ethanol.get_forces()  # the restored results are valid for the restored positions
        again = walk(ethanol, calc, 6, seed=5)
        assert [r["boostmd_source"] for r in again] == [r["boostmd_source"] for r in first]
        for a, b in zip(first, again):
            assert a["energy"] == b["energy"]
            np.testing.assert_array_equal(a["forces"], b["forces"])
            assert a.get("refresh_energy_error") == b.get("refresh_energy_error")
    assert calc.stats.total_steps == counts + 3 * 6  # the restores ran no model
    assert {r["boostmd_source"] for r in first} == {"reference", "surrogate"}
    with pytest.raises(TypeError, match="WindowState"):
        calc.restore_window_state({"frame": None})


def test_thermal_momenta_draw_what_maxwell_boltzmann_draws_without_a_warning(ethanol):
    import warnings

    from boostmd.dynamics.md import thermal_momenta

    expected = ethanol.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ASE >= 3.29 renamed it
        MaxwellBoltzmannDistribution(expected, temperature_K=300, rng=np.random.default_rng(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        thermal_momenta(ethanol, 300, np.random.default_rng(4))
    np.testing.assert_array_equal(ethanol.get_momenta(), expected.get_momenta())


def predicted_centre(surrogate, frame, atoms, ahead, timestep_fs):
    """Velocity Verlet with ``frame``'s surrogate from ``atoms``, ``ahead`` steps on."""
    masses = atoms.get_masses()[:, None]
    velocities = atoms.get_momenta() / masses
    dt = timestep_fs * units.fs
    x = atoms.positions.copy()
    forces = surrogate.energy_and_forces(frame, x)[1].numpy()
    for _ in range(ahead):
        velocities = velocities + 0.5 * dt * forces / masses
        x = x + dt * velocities
        forces = surrogate.energy_and_forces(frame, x)[1].numpy()
        velocities = velocities + 0.5 * dt * forces / masses
    return x


@pytest.mark.parametrize("interval", [4, 5])
def test_centred_frame_sits_at_the_predicted_window_centre(reference, surrogate, ethanol, interval):
    atoms = ethanol.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    calc = BoostMDCalculator(
        reference, surrogate, force_guard=1e9, interval=interval, frame="centred", timestep_fs=0.5
    )
    first = atoms.copy()
    seen = walk(atoms, calc, interval)
    # the first window frames at its start; the next one at its predicted centre
    assert "refresh_frame_positions" not in seen[0]
    _, frame = frame_for(reference, surrogate, first)
    # the middle of the window's steps and its refresh
    centre = predicted_centre(surrogate, frame, atoms, interval // 2, 0.5)
    last = seen[-1]
    np.testing.assert_allclose(last["refresh_frame_positions"], centre, atol=1e-9)
    assert last["boostmd_source"] == "reference" and last["boostmd_scheduled"]
    # the reference ran at the centre, the ending window is checked there ...
    at_centre = reference.compute(atoms.numbers, centre)
    assert last["boostmd_reference_energy"] == pytest.approx(float(at_centre.energy), abs=1e-10)
    expected = float(at_centre.energy) - surrogate_energy(surrogate, frame, centre)
    assert last["refresh_energy_error"] == pytest.approx(expected, abs=1e-10)
    # ... and the step itself gets the surrogate expanded about the centre
    new_frame = surrogate.prepare(
        atoms.numbers, at_centre.node_features, centre, at_centre.energy, at_centre.forces
    )
    energy, forces = surrogate.energy_and_forces(new_frame, atoms.positions)
    assert last["energy"] == pytest.approx(float(energy[0]), abs=1e-10)
    np.testing.assert_allclose(last["forces"], forces.numpy(), atol=1e-10)
    assert not np.allclose(centre, atoms.positions)
    assert (calc.stats.full_steps, calc.stats.reuse_steps) == (2, interval - 1)


def test_centred_frames_need_a_timestep_a_fixed_interval_and_no_calibration(
    reference, surrogate, ethanol
):
    ethanol.calc = BoostMDCalculator(reference, surrogate, frame="centred")  # no timestep yet
    MaxwellBoltzmannDistribution(ethanol, temperature_K=300, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"timestep.*BoostLangevin \(which sets it\)"):
        VelocityVerlet(ethanol, units.fs).run(22)  # the first centred window needs it
    with pytest.raises(ValueError, match="timestep_fs"):
        BoostMDCalculator(reference, surrogate, frame="centred", timestep_fs=-1.0)
    ethanol.calc = BoostMDCalculator(reference, surrogate, timestep_fs=0.5)
    with pytest.raises(ValueError, match=r"timestep_fs=0\.5 but the dynamics step 1 fs"):
        BoostLangevin(ethanol, units.fs, 300, 0.001 / units.fs)
    with pytest.raises(ValueError, match="fixed window length"):
        BoostMDCalculator(
            reference, surrogate, frame="centred", timestep_fs=1.0, schedule=Threshold(0.3)
        )
    with pytest.raises(ValueError, match="calibration"):
        BoostMDCalculator(reference, surrogate, frame="centred", timestep_fs=1.0, calibration=True)
    with pytest.raises(ValueError, match="frame must be one of"):
        BoostMDCalculator(reference, surrogate, frame="middle", timestep_fs=1.0)


def test_the_defaults_are_the_validated_path(reference, surrogate, ethanol, tmp_path):
    """Centred frames, N = 10, checked windows, adaptive friction, energy-consistent refresh."""
    ethanol.calc = calc = BoostMDCalculator(reference, surrogate)
    assert calc.frame == "centred" and calc.schedule.every == 10 and calc.timestep_fs is None
    dynamics = BoostLangevin(ethanol, 0.5 * units.fs, 300, 0.001 / units.fs, rng=3)
    assert calc.timestep_fs == 0.5  # taken from the dynamics
    assert dynamics.energy_consistent and dynamics.tau == pytest.approx(100 * units.fs)
    assert dynamics.tolerance == pytest.approx(10 * units.kB * 300)
    # a fitted surrogate carries the interval its fit found, and the calculator uses it
    fitted = Surrogate.load(surrogate.save(tmp_path / "fitted.pt"))
    fitted.recipe = {"interval": 6}
    fitted.save(tmp_path / "fitted.pt", overwrite=True)
    fitted = Surrogate.load(tmp_path / "fitted.pt")
    assert fitted.recommended_interval == 6
    assert BoostMDCalculator(reference, fitted).schedule.every == 6
    assert BoostMDCalculator(reference, fitted, interval=4).schedule.every == 4


def test_boost_langevin_carries_the_energy_across_centred_frame_switches(
    reference, surrogate, ethanol
):
    """NVE: the energy-consistent refresh removes each frame switch's potential jump."""

    def total_energies(energy_consistent):
        atoms = ethanol.copy()
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
        calc = BoostMDCalculator(
            reference, surrogate, force_guard=1e9, interval=4, frame="centred", timestep_fs=0.25
        )
        atoms.calc = calc
        dynamics = BoostLangevin(
            atoms,
            0.25 * units.fs,
            temperature_K=300,
            friction=0.0,
            tolerance=1e9,
            energy_consistent=energy_consistent,
            rng=np.random.default_rng(2),
        )
        energies, jumps = [], []
        dynamics.attach(lambda: energies.append(atoms.get_total_energy()))
        dynamics.attach(lambda: jumps.append(calc.results.get("frame_switch_energy", 0.0)))
        dynamics.run(24)
        return np.array(energies), np.array(jumps)

    kept, jumps = total_energies(True)
    drifting, _ = total_energies(False)
    assert np.abs(jumps).max() > 1e-4  # the surrogate potential does jump at switches
    # with the jumps removed, only the integrator's O(dt^2) wobble is left
    assert np.ptp(kept) < 0.1 * np.abs(jumps).sum()
    assert np.ptp(kept) < np.ptp(drifting)
