"""A validation spread over workers gives the report of one worker, bit for bit."""

import json

import numpy as np
import pytest

from boostmd.validation.validate import main
from boostmd.validation.workers import executor, map_in_order

# The quick preset, cut short: six sampling runs (three roles, two replicas) and two NVE
# runs of ALA with the shipped models, every reference run made here (not taken from the
# store, whose runs are the full preset's).
QUICK_SHORT = [
    "--preset", "quick", "--peptide", "ALA", "--steps", "20", "--equilibration-steps", "10",
    "--replicas", "2", "--nve-steps", "10", "--interval", "5", "--checkpoint-every", "10",
    "--no-stored-reference",
]  # fmt: skip
REPORT_KEYS = ("vs_reference", "noise_floor", "transitions", "frames", "collapses")
COUNTERS = ("reference_calls", "surrogate_calls", "windows", "rollbacks", "fallbacks")


def _report(out):
    return json.loads((out / "report.json").read_text())["systems"][0]


def _assert_same(a, b, out_a, out_b):
    for key in REPORT_KEYS:
        np.testing.assert_equal(a[key], b[key])
    for key in COUNTERS:
        assert a["samplers"]["boostmd-checked"][key] == b["samplers"]["boostmd-checked"][key]
    for checkpoint in sorted((out_a / "checkpoints").glob("*.npz")):
        with np.load(checkpoint) as x, np.load(out_b / "checkpoints" / checkpoint.name) as y:
            for key in ("positions", "potential_energy", "bonds_xh", "refresh_errors"):
                if key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=checkpoint.name)


def _square(x, offset):
    return x * x + offset


def test_map_in_order_keeps_the_order_and_names_a_failure():
    with executor(2, 1) as pool:
        assert map_in_order(pool, _square, [3, 1, 2], 1, limit=2) == [10, 2, 5]
        with pytest.raises(TypeError):
            map_in_order(pool, _square, [1, "a"], 1)
    with pytest.raises(ValueError, match="at least 1"), executor(0, 1):
        pass


def test_two_workers_give_the_same_report_as_one(tmp_path):
    for workers in (1, 2):
        main([*QUICK_SHORT, "--workers", str(workers), "--out", str(tmp_path / str(workers))])
    one, two = _report(tmp_path / "1"), _report(tmp_path / "2")
    assert one["frames"]["boostmd-checked"] == 40
    _assert_same(one, two, tmp_path / "1", tmp_path / "2")
    # runs alone: each has its own wall clock
    assert np.isfinite(two["samplers"]["boostmd-checked"]["speedup"])


def test_a_dask_cluster_gives_the_same_report(tmp_path):
    distributed = pytest.importorskip("distributed")
    main([*QUICK_SHORT, "--workers", "2", "--out", str(tmp_path / "local")])
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        main(
            [
                *QUICK_SHORT,
                "--workers",
                "2",
                "--scheduler",
                cluster.scheduler_address,
                "--out",
                str(tmp_path / "dask"),
            ]
        )
    local, dask = tmp_path / "local", tmp_path / "dask"
    _assert_same(_report(local), _report(dask), local, dask)


def test_workers_are_not_for_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("boostmd.validation.validate._process_group", lambda: (0, 2))
    with pytest.raises(ValueError, match="without torchrun"):
        main([*QUICK_SHORT, "--workers", "2", "--out", str(tmp_path)])
