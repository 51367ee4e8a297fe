"""Bond-stretch stiffness: finite differences agree with energies, labels train the surrogate."""

import json
import math

import numpy as np
import pytest
import torch
from ase.build import molecule

from boostmd import Surrogate
from boostmd.dynamics.model_calls import ModelCalls
from boostmd.dynamics.stability import BondTopology
from boostmd.forcefields.mace_io import save_mace
from boostmd.training.data import PairDataConfig, generate_trajectories
from boostmd.training.run_files import load_trajectories
from boostmd.training.stiffness import (
    BondStiffness,
    bond_stiffness,
    bonds_at_frames,
    reference_curvatures,
    stiffness_labels_path,
    stretch_directions,
    surrogate_curvatures,
    write_stiffness_labels,
)
from boostmd.training.train import TrainConfig, main, stiffness_ratios, train


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(0, 0.03, atoms.positions.shape)
    return atoms


def _second_difference(energy, positions, direction, h=1e-3):
    plus, minus = energy(positions + h * direction), energy(positions - h * direction)
    return (plus + minus - 2 * energy(positions)) / h**2


def test_a_stretch_direction_is_a_unit_vector_that_lengthens_its_bond(ethanol):
    pairs = BondTopology.of(ethanol).pairs
    directions = stretch_directions(ethanol.positions, pairs)
    assert np.allclose(np.linalg.norm(directions.reshape(len(pairs), -1), axis=1), 1.0)
    h = 1e-6
    for bond, (i, j) in enumerate(pairs):
        moved = ethanol.positions + h * directions[bond]
        growth = np.linalg.norm(moved[i] - moved[j]) - np.linalg.norm(
            ethanol.positions[i] - ethanol.positions[j]
        )
        assert growth == pytest.approx(math.sqrt(2) * h, rel=1e-4)
    # no net force or torque: the stretch moves the centre of mass of the pair not at all
    assert np.allclose(directions.sum(axis=1), 0.0)


def test_curvatures_are_second_derivatives_of_each_models_energy(ethanol, reference, surrogate):
    pairs = BondTopology.of(ethanol).pairs
    directions = stretch_directions(ethanol.positions, pairs)
    calls = ModelCalls(reference, surrogate)
    frame = calls.frame(ethanol, calls.reference(ethanol))
    probe = ethanol.positions + 0.02 * directions[0]  # away from the frame, as in a window

    def reference_energy(positions):
        return float(reference.compute(ethanol.numbers, positions).energy)

    def surrogate_energy(positions):
        with torch.no_grad():
            return float(surrogate.energy(frame, torch.as_tensor(positions)).sum())

    expected_reference = [
        _second_difference(reference_energy, probe, d) for d in stretch_directions(probe, pairs)
    ]
    expected_surrogate = [
        _second_difference(surrogate_energy, probe, d) for d in stretch_directions(probe, pairs)
    ]
    measured = reference_curvatures(reference, ethanol, pairs, probe)
    assert np.allclose(measured, expected_reference, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        measured = surrogate_curvatures(frame, surrogate, pairs, probe).numpy()
    assert np.allclose(measured, expected_surrogate, rtol=1e-3, atol=1e-3)


def test_stiffness_ratios_and_the_spread_they_imply():
    reference = np.array([[40.0, 30.0, 20.0]])
    stiffness = BondStiffness(reference, reference * [[1.0, 0.81, 0.81]], np.array([1, 0, 0], bool))
    assert stiffness.ratio("xh") == pytest.approx(1.0)
    assert stiffness.ratio("heavy") == pytest.approx(0.81)
    assert stiffness.spread_ratio("heavy") == pytest.approx(1 / 0.9)
    assert np.allclose(stiffness.bond_ratios(), [1.0, 0.81, 0.81])


def test_stiffness_labels_pull_the_surrogates_curvature_to_the_reference(
    ethanol, reference, tmp_path
):
    config = PairDataConfig(
        out=tmp_path / "md", temperatures=[300.0], steps=60, equilibration_steps=5, stride=5
    )
    (run,) = generate_trajectories(reference, {"ethanol": ethanol}, config)
    labels = write_stiffness_labels(reference, run, frames=4)
    assert write_stiffness_labels(reference, run, frames=4) == labels  # kept, not redone
    (trajectory,) = load_trajectories([run], reference.cutoff, reference.fingerprint)
    assert trajectory.stiffness[2].shape == (4, len(BondTopology.of(ethanol).pairs))

    def stiffness_error(name, weight):
        out = tmp_path / name
        settings = {"epochs": 6, "patience": 6, "max_k": 4, "batch_size": 2}
        train(
            TrainConfig(reference="unused", data=[run], out=out, stiffness_weight=weight,
                        num_channels=4, hidden_dim=16, **settings),
            reference,
        )  # fmt: skip
        surrogate = Surrogate.load(out / "surrogate.pt")
        ratios = stiffness_ratios(surrogate, [trajectory])
        return max(abs(ratios["xh"] - 1), abs(ratios["heavy"] - 1)), surrogate

    with_labels, fitted = stiffness_error("with", 5.0)
    assert with_labels < stiffness_error("without", 0.0)[0]
    frames = [ethanol.copy() for _ in range(2)]
    for atoms, step in zip(frames, trajectory.reference_steps[-2:], strict=True):
        atoms.positions = trajectory.positions[step]
    measured = bond_stiffness(reference, fitted, frames, topology=BondTopology.of(ethanol))
    assert measured.reference.shape == measured.surrogate.shape == (2, len(trajectory.stiffness[1]))
    assert np.isfinite(measured.ratio("heavy"))
    _a_step_fits_an_unbiased_subset_of_the_bonds(fitted, trajectory)


def _a_step_fits_an_unbiased_subset_of_the_bonds(surrogate, trajectory):
    """The loss on a few random bonds of a frame averages to the loss on all of them."""
    import boostmd.training.train as training

    dtype = surrogate.feature_in.weight.dtype
    every_bond = training.STIFFNESS_BONDS_PER_STEP
    full = float(training._stiffness_loss(surrogate, [trajectory], (0, 1), dtype).detach())
    training.STIFFNESS_BONDS_PER_STEP = 2
    try:
        draws = [float(training._stiffness_loss(surrogate, [trajectory], (0, 1), dtype).detach())
                 for _ in range(300)]  # fmt: skip
    finally:
        training.STIFFNESS_BONDS_PER_STEP = every_bond
    assert len(trajectory.stiffness[1]) > 2 * 2  # a real subset
    assert np.mean(draws) == pytest.approx(full, rel=3 * np.std(draws) / np.sqrt(300) / full)


def test_the_train_command_labels_runs_when_asked(ethanol, reference, tmp_path):
    save_mace(reference.model, tmp_path / "reference.pt")
    config = PairDataConfig(
        out=tmp_path / "md", temperatures=[300.0], steps=40, equilibration_steps=5, stride=5
    )
    (run,) = generate_trajectories(reference, {"ethanol": ethanol}, config)
    out = tmp_path / "trained"
    main(["--reference", str(tmp_path / "reference.pt"), "--data", str(tmp_path / "md"),
          "--out", str(out), "--epochs", "1", "--max-k", "4", "--num-channels", "4",
          "--hidden-dim", "16", "--stiffness-frames", "2"])  # fmt: skip
    assert stiffness_labels_path(run).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stiffness_ratio_on_labelled_frames"]) == {"xh", "heavy", "softest_bond"}


def test_large_systems_measure_a_bounded_share_of_bonds_per_frame_and_all_of_them_in_turn():
    chosen = bonds_at_frames(10, 4, 4)
    assert [list(c) for c in chosen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5]]
    assert all(len(c) == 10 for c in bonds_at_frames(10, 2, None))
    reference = np.array([[40.0, np.nan], [np.nan, 20.0]])
    stiffness = BondStiffness(reference, reference * 0.9, np.array([True, False]))
    assert np.allclose(stiffness.bond_ratios(), 0.9)
    assert stiffness.ratio("xh") == pytest.approx(0.9) == stiffness.ratio("heavy")
