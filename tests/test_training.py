import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read

from boostmd import MACEReference, Surrogate
from boostmd.dynamics.calculator import BoostMDCalculator
from boostmd.forcefields.mace_io import save_mace
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.forcefields.testing import build_mace
from boostmd.training.data import PairDataConfig, generate_trajectories
from boostmd.training.run_files import load_trajectories
from boostmd.training.train import TrainConfig, force_rmse_by_k, split_pairs, train
from boostmd.training.windows import WindowConfig, generate_windows, run_temperature


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    model = build_mace(hidden_irreps="8x0e+8x1o", dtype=torch.float32, seed=5)
    reference_path = save_mace(model, root / "reference.pt")
    reference = MACEReference.load(reference_path)
    config = PairDataConfig(
        out=root / "runs", temperatures=[400.0], steps=60, equilibration_steps=5, stride=3
    )
    paths = generate_trajectories(reference, {"ethanol": molecule("CH3CH2OH")}, config)
    return root, reference, reference_path, paths


def _small(reference_path, paths, out, **overrides) -> TrainConfig:
    """A training run small enough for a test: k up to 4, batches of 8, one epoch."""
    settings = {"max_k": 4, "epochs": 1, "batch_size": 8, **overrides}
    return TrainConfig(reference=reference_path, data=paths, out=out, **settings)


def test_trajectories_are_written_and_resumable(workspace):
    root, reference, _, paths = workspace
    assert [p.name for p in paths] == ["ethanol_400K.extxyz"]
    stamp = paths[0].stat().st_mtime_ns
    config = PairDataConfig(out=root / "runs", temperatures=[400.0], steps=60, stride=3)
    generate_trajectories(reference, {"ethanol": molecule("CH3CH2OH")}, config)
    assert paths[0].stat().st_mtime_ns == stamp  # complete runs are not redone
    (run,) = load_trajectories(paths, reference.cutoff, reference.fingerprint)
    assert run.positions.shape == (60, 9, 3)
    assert list(run.reference_steps) == list(range(0, 60, 3))
    assert run.node_features.shape == (20, 9, reference.feature_dim)
    # stored labels are the reference's own
    result = reference.compute(run.numbers, run.positions[7])
    assert float(result.energy) == pytest.approx(run.energies[7], abs=1e-4)
    np.testing.assert_allclose(result.forces.numpy(), run.forces[7], atol=1e-4)


def test_data_from_another_reference_is_refused(workspace):
    _, reference, _, paths = workspace
    with pytest.raises(ValueError, match="made with reference"):
        load_trajectories(paths, reference.cutoff, "0000000000000000")


def test_validation_is_a_later_time_block(workspace):
    _, reference, _, paths = workspace
    runs = load_trajectories(paths, reference.cutoff, reference.fingerprint)
    config = TrainConfig(reference=None, data=paths, out=None, max_k=4)
    train_pairs, valid_pairs = split_pairs(runs, config)
    last_train = max(runs[0].reference_steps[p.reference] + p.k for p in train_pairs)
    first_valid = min(runs[0].reference_steps[p.reference] for p in valid_pairs)
    assert last_train < first_valid
    assert {p.k for p in valid_pairs} == {1, 2, 3, 4}


def test_training_improves_and_resumes(workspace, tmp_path):
    _, reference, reference_path, paths = workspace
    config = _small(reference_path, paths, tmp_path / "run", num_channels=4, hidden_dim=16, lr=1e-3)
    train(config)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config)
    config.epochs, config.resume = 6, True
    metrics = train(config)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").open()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert set(metrics["validation_force_rmse_meV_per_A_by_k"]) == {1, 2, 3, 4}

    runs = load_trajectories(paths, reference.cutoff, reference.fingerprint)
    _, valid_pairs = split_pairs(runs, config)
    trained = Surrogate.load(tmp_path / "run" / "surrogate.pt")
    torch.manual_seed(0)
    untrained = Surrogate.for_reference(reference, num_channels=4, hidden_dim=16)
    trained_error = np.mean(list(force_rmse_by_k(trained, runs, valid_pairs).values()))
    first_order = np.mean(list(force_rmse_by_k(untrained, runs, valid_pairs).values()))
    assert trained_error < first_order  # learning improved on the first-order expansion


@pytest.fixture(scope="module")
def shipped_runs(tmp_path_factory):
    """The shipped reference and a short run of it: a random MACE breaks molecules apart."""
    reference = MACEReference.load(MODELS_DIR / "dipeptides-reference.pt")
    config = PairDataConfig(
        out=tmp_path_factory.mktemp("shipped"),
        temperatures=[400.0],
        steps=60,
        equilibration_steps=5,
        stride=3,
    )
    return reference, generate_trajectories(reference, {"ethanol": molecule("CH3CH2OH")}, config)


def test_on_policy_windows_are_driven_by_the_surrogate_and_labelled_by_the_reference(
    shipped_runs, tmp_path
):
    reference, paths = shipped_runs
    surrogate = Surrogate.load(MODELS_DIR / "dipeptides-surrogate.pt")
    config = WindowConfig(window=4, every=20)
    (path,) = generate_windows(reference, surrogate, paths, tmp_path / "windows", config)
    assert path.name == "ethanol_400K.extxyz"
    (run,) = load_trajectories([path], reference.cutoff, reference.fingerprint)
    assert run.window == 4 and len(run.positions) == 3 * 5  # 60 frames, a start every 20
    assert list(run.reference_steps) == [0, 5, 10]
    source = read(paths[0], index=20)
    np.testing.assert_allclose(run.positions[5], source.positions, atol=1e-6)
    # pairs never reach into the next window, whatever max_k asks for
    assert max(k for _, k in run.pairs(max_k=12)) == 4
    # the surrogate moved the atoms: its own forces at step 1 give step 2 ...
    booster = BoostMDCalculator(reference, surrogate, interval=10, frame="start")
    start = Atoms(run.numbers, run.positions[0])
    start.calc = booster
    start.get_forces()
    moved = Atoms(run.numbers, run.positions[2])
    moved.calc = booster
    surrogate_forces = moved.get_forces()
    # ... and the reference labelled every frame (its forces differ from the surrogate's)
    result = reference.compute(run.numbers, run.positions[2])
    np.testing.assert_allclose(result.forces.numpy(), run.forces[2], atol=1e-4)
    assert not np.allclose(surrogate_forces, run.forces[2], atol=1e-3)
    mtime = path.stat().st_mtime_ns
    generate_windows(reference, surrogate, paths, tmp_path / "windows", config)
    assert path.stat().st_mtime_ns == mtime  # finished files are kept


def test_window_files_need_a_temperature_in_the_name():
    with pytest.raises(ValueError, match="NAME_<T>K"):
        run_temperature(Path("runs/ethanol.extxyz"))
    assert run_temperature(Path("runs/ALA_300K.extxyz")) == 300.0


def test_fine_tuning_starts_from_the_given_surrogate(workspace, tmp_path):
    _, reference, reference_path, paths = workspace
    start = Surrogate.for_reference(reference, num_channels=4, hidden_dim=16)
    start.feature_mean.fill_(0.25)
    start.save(tmp_path / "start.pt")
    config = _small(reference_path, paths, tmp_path / "tuned", lr=1e-4, init=tmp_path / "start.pt")
    train(config)
    tuned = Surrogate.load(tmp_path / "tuned" / "surrogate.pt")
    assert tuned.config == start.config  # the architecture comes from the file
    assert torch.all(tuned.feature_mean == 0.25)  # and its feature normalisation is kept


def test_a_fine_tune_that_only_harms_returns_its_start(workspace, tmp_path):
    _, _, reference_path, paths = workspace
    trained = _small(
        reference_path, paths, tmp_path / "start", epochs=3, num_channels=4, hidden_dim=16
    )
    train(trained)
    start = Surrogate.load(tmp_path / "start" / "surrogate.pt")
    start_file = tmp_path / "start" / "surrogate.pt"
    # lr 0.05: the first steps throw the weights far off
    harmful = _small(reference_path, paths, tmp_path / "tuned", lr=0.05, init=start_file)
    train(harmful)
    history = [json.loads(line) for line in (tmp_path / "tuned" / "history.jsonl").open()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0]["train_loss"] is None  # epoch 0 scores the start, untrained
    assert history[1]["valid_force_rmse_eV_per_A"] > 3 * history[0]["valid_force_rmse_eV_per_A"]
    tuned = Surrogate.load(tmp_path / "tuned" / "surrogate.pt")
    for name, value in start.state_dict().items():
        torch.testing.assert_close(tuned.state_dict()[name], value, rtol=0, atol=0)


def test_windows_that_break_the_molecule_are_left_out(shipped_runs, tmp_path):
    reference, paths = shipped_runs
    torch.manual_seed(0)
    first_order = Surrogate.for_reference(reference)  # no curvature: bonds fly apart
    config = WindowConfig(window=80, every=30)
    with pytest.raises(RuntimeError, match=r"every window .* collapsed"):
        generate_windows(reference, first_order, paths, tmp_path, config)
    assert not (tmp_path / paths[0].name).exists()
