"""Surrogate training data in periodic cells: the cell is kept, wrapping changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import read, write

from boostmd import MACEReference, Surrogate
from boostmd.forcefields.mace_io import save_mace
from boostmd.forcefields.testing import build_mace
from boostmd.forcefields.water import water_box
from boostmd.training.data import PairDataConfig, generate_trajectories, read_structures
from boostmd.training.run_files import load_trajectories
from boostmd.training.train import TrainConfig, errors_by_k, split_pairs


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("periodic")
    model = build_mace(
        hidden_irreps="8x0e+8x1o", r_max=3.5, atomic_numbers=(1, 8), dtype=torch.float32, seed=2
    )
    reference = MACEReference.load(save_mace(model, root / "reference.pt"))
    config = PairDataConfig(
        out=root / "runs", temperatures=[300.0], steps=24, equilibration_steps=2, stride=4
    )
    box = water_box(6, density=1.0, seed=4)
    (path,) = generate_trajectories(reference, {"water6": box}, config)
    return reference, path, box


def _errors(reference, paths):
    runs = load_trajectories(paths, reference.cutoff, reference.fingerprint)
    config = TrainConfig(reference=None, data=paths, out=None, max_k=3, validation_fraction=0.5)
    pairs = [p for group in split_pairs(runs, config) for p in group]
    torch.manual_seed(0)
    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=8)
    return runs, errors_by_k(surrogate, runs, pairs)


def test_a_periodic_run_keeps_its_cell_and_graphs_cross_the_faces(periodic_run):
    reference, path, box = periodic_run
    frames = read(path, index=":")
    assert all(f.pbc.all() and np.allclose(f.cell, box.cell) for f in frames)
    (run,) = load_trajectories([path], reference.cutoff, reference.fingerprint)
    assert run.pbc.all() and np.allclose(run.cell, box.cell)
    _, _, shifts = run.edges[0]
    assert (shifts.abs().sum(dim=1) > 0).any()  # some edges reach into a neighbouring image
    # the stored labels are the periodic reference's own
    result = reference(frames[5])
    np.testing.assert_allclose(result.forces.numpy(), run.forces[5], atol=1e-4)


def test_wrapping_the_stored_frames_changes_no_training_target_or_prediction(
    periodic_run, tmp_path
):
    reference, path, _ = periodic_run
    frames = read(path, index=":")
    for frame in frames:
        frame.positions[::2] += frame.cell[0]  # half the atoms one image over
        frame.wrap()
    wrapped = tmp_path / path.name
    write(wrapped, frames, format="extxyz")
    wrapped.with_suffix(".npz").write_bytes(path.with_suffix(".npz").read_bytes())
    runs, plain = _errors(reference, [path])
    runs_wrapped, moved = _errors(reference, [wrapped])
    # the displacement from a frame to k steps later is the atoms' own motion either way
    displacement = runs[0].positions[5] - runs[0].positions[1]
    moved_by = runs_wrapped[0].positions[5] - runs_wrapped[0].positions[1]
    np.testing.assert_allclose(moved_by, displacement, atol=1e-9)
    assert plain.keys() == moved.keys() == {1, 2, 3}
    for k in plain:
        for a, b in zip(plain[k], moved[k]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_read_structures_takes_a_cell_and_refuses_periodicity_without_one(periodic_run, tmp_path):
    reference, _, box = periodic_run
    good = tmp_path / "box.extxyz"
    write(good, box, format="extxyz")
    assert read_structures([good], reference)["box"].pbc.all()
    broken = box.copy()
    broken.set_cell([box.cell[0, 0], box.cell[1, 1], 0.0])
    bad = tmp_path / "flat.extxyz"
    write(bad, broken, format="extxyz")
    with pytest.raises(ValueError, match="no cell vectors there"):
        read_structures([bad], reference)
