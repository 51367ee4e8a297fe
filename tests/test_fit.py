"""python -m boostmd.fit: the pipeline end to end on a tiny budget, its checks, bad input."""

import json
import logging

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import write

from boostmd import BoostMDCalculator, MACEReference, Surrogate
from boostmd.dynamics.stability import BondTopology
from boostmd.forcefields.mace_io import save_mace
from boostmd.forcefields.pretrained import load_reference
from boostmd.forcefields.testing import build_mace
from boostmd.training.fit import FitConfig, fit, main
from boostmd.training.fit_check import bond_spreads, spread_verdict


@pytest.fixture(scope="module")
def loaded(workspace):
    """The reference of the workspace, loaded once (building a MACE takes a while)."""
    return load_reference(workspace / "reference.pt")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small random MACE saved as safe weights and as a pickled .model, and ethanol."""
    root = tmp_path_factory.mktemp("fit")
    model = build_mace(dtype=torch.float64, seed=1)
    save_mace(model, root / "reference.pt")
    torch.save(model, root / "reference.model")
    write(root / "ethanol.xyz", molecule("CH3CH2OH"))
    return root


def tiny(workspace, out, **overrides):
    settings = {
        "reference": str(workspace / "reference.pt"),
        "structures": [workspace / "ethanol.xyz"],
        "out": out,
        "budget_minutes": 10.0,
        "temperatures": (300.0,),
        "md_steps": 40,
        "equilibration_steps": 5,
        "interval": 4,
        "check_steps": 48,
        "epochs": 1,
        "finetune_epochs": 1,
        "max_rounds": 2,
        "target_rerun_fraction": -1.0,  # never met: every round runs
    }
    return FitConfig(**{**settings, **overrides})


def test_fit_runs_every_stage_writes_its_report_and_resumes(workspace, loaded, tmp_path, caplog):
    out = tmp_path / "fit"
    with caplog.at_level(logging.INFO, logger="boostmd.training.fit"):
        report = fit(tiny(workspace, out), loaded)
    assert "a new surrogate from scratch" in caplog.text  # no shipped one for this reference
    assert len(report["rounds"]) == 2  # the second on on-policy windows
    assert list((out / "windows-1").glob("*.extxyz"))
    assert (out / "report.png").stat().st_size > 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["interval"] == report["interval"] in (4, 3)  # 3: the bonds needed it
    check = saved["rounds"][-1]["checks"][0]
    assert check["structure"] == "ethanol" and check["steps"] == 48
    assert {"xh", "heavy"} == set(check["spreads"]) == set(check["histograms"])
    assert check["summary"]["reference_calls"] >= 48 // 4
    # the reference MD is labelled with bond curvatures, the check measures them held out
    assert list((out / "reference-md").glob("*.stiffness.npz"))
    assert {"xh", "heavy", "softest_bond", "passed"} <= set(check["stiffness"])
    assert saved["speedup"]["steps_timed"] > 0
    surrogate = Surrogate.load(out / "surrogate.pt")
    assert surrogate.recommended_interval == report["interval"]
    assert surrogate.recipe["structures"] == ["ethanol"]
    assert BoostMDCalculator(loaded, surrogate).schedule.every == report["interval"]
    # a finished folder: refused without --resume, the same report with it (no new work)
    with pytest.raises(FileExistsError, match="pass --resume"):
        fit(tiny(workspace, out), loaded)
    again = fit(tiny(workspace, out, resume=True), loaded)
    assert again["rounds"] == report["rounds"] and again["speedup"] == report["speedup"]


def test_a_pickled_model_is_converted_once_and_only_when_asked(workspace, loaded, tmp_path):
    with pytest.raises(ValueError, match="--pickled-reference"):
        load_reference(workspace / "reference.model")
    out = tmp_path / "fit"
    config = tiny(
        workspace, out, reference=str(workspace / "reference.model"), pickled_reference=True
    )
    config.max_rounds = 1
    fit(config)
    converted = MACEReference.load(out / "reference.pt")
    assert converted.fingerprint == loaded.fingerprint


def test_bad_input_is_named(workspace, loaded, tmp_path):
    iron = tmp_path / "iron.xyz"
    write(iron, Atoms("Fe2", positions=[[0, 0, 0], [0, 0, 2.3]]))
    with pytest.raises(ValueError, match="does not know element"):
        fit(tiny(workspace, tmp_path / "a", structures=[iron]), loaded)
    broken = tmp_path / "broken.xyz"
    broken.write_text("not a structure\n")
    with pytest.raises(ValueError, match="ASE cannot read"):
        fit(tiny(workspace, tmp_path / "b", structures=[broken]), loaded)
    box = tmp_path / "box.xyz"
    write(
        box,
        Atoms(
            "H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[5, 5, 0], pbc=True
        ),
    )
    with pytest.raises(ValueError, match="no cell vectors there"):
        fit(tiny(workspace, tmp_path / "p", structures=[box]), loaded)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit(tiny(workspace, tmp_path / "c", structures=[tmp_path / "missing.xyz"]), loaded)
    with pytest.raises(ValueError, match="too short for one round"):
        fit(tiny(workspace, tmp_path / "d", budget_minutes=1e-4), loaded)
    with pytest.raises(FileNotFoundError, match="no shipped reference of that name"):
        fit(tiny(workspace, tmp_path / "e", reference="no-such-model"))
    # a folder with another system's fit in it is refused, --resume or not
    other = tmp_path / "other"
    (other / "fit-state.json").parent.mkdir()
    (other / "fit-state.json").write_text(json.dumps({"identity": {"reference": "x"}}))
    with pytest.raises(ValueError, match="another system or reference"):
        fit(tiny(workspace, other, resume=True), loaded)
    with pytest.raises(SystemExit, match="pass --resume"):
        main(["--reference", str(workspace / "reference.pt"), "--structure",
              str(workspace / "ethanol.xyz"), "--out", str(other)])  # fmt: skip


def test_the_bond_check_tells_too_wide_bonds_from_right_ones():
    atoms = molecule("CH3CH2OH")
    topology = BondTopology.of(atoms)
    rng = np.random.default_rng(0)

    def frames(scale, count=4000):
        return atoms.positions + scale * rng.standard_normal((count, len(atoms), 3))

    reference = bond_spreads(frames(0.02), topology, atoms.numbers)
    same = spread_verdict(bond_spreads(frames(0.02), topology, atoms.numbers), reference)
    wide = spread_verdict(bond_spreads(frames(0.024), topology, atoms.numbers), reference)
    assert all(group["passed"] for group in same.values())
    assert not any(group["passed"] for group in wide.values())
    assert wide["heavy"]["ratio"] == pytest.approx(1.2, abs=0.05)
    # an exact run that scatters as far sets the floor: the same run is then within it
    exact = bond_spreads(frames(0.0235), topology, atoms.numbers)
    floored = spread_verdict(bond_spreads(frames(0.024), topology, atoms.numbers), reference, exact)
    assert all(group["passed"] for group in floored.values())
    assert floored["heavy"]["floor"] == pytest.approx(1.175, abs=0.05)
