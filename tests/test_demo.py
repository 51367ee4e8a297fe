import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from boostmd import MACEReference, Surrogate
from boostmd.cli import main as cli_main
from boostmd.demo import DemoConfig, format_summary, run_demo
from boostmd.dihedrals import backbone_dihedrals, dihedral_angles
from boostmd.peptides import capped_dipeptide
from boostmd.pretrained import load_pretrained
from boostmd.testing import build_mace

pytest.importorskip("rdkit")


def test_dihedrals_match_ase_on_every_residue():
    for code in ("ALA", "GLY", "PRO", "TRP"):
        atoms = capped_dipeptide(code)
        phi, psi = backbone_dihedrals(atoms)
        for indices in (phi, psi):
            expected = (atoms.get_dihedral(*indices) + 180) % 360 - 180
            assert dihedral_angles(atoms.positions[None], indices)[0] == pytest.approx(
                expected, abs=1e-6
            )


def test_dihedrals_refuse_molecules_without_a_residue():
    from ase.build import molecule

    with pytest.raises(ValueError, match="found 0 alpha carbons"):
        backbone_dihedrals(molecule("CH3CH2OH"))


def test_demo_runs_end_to_end_with_small_models(tmp_path):
    reference = MACEReference(build_mace(hidden_irreps="8x0e+8x1o", dtype=torch.float32))
    torch.manual_seed(0)
    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=16)
    config = DemoConfig(
        steps=20, interval=5, force_samples=4, write_every=5, out=tmp_path / "demo", timestep_fs=0.5
    )
    summary = run_demo(config, reference, surrogate)
    assert summary["reference_calls"] == 5 and summary["surrogate_calls"] == 16
    assert summary["surrogate_vs_reference"]["sampled_steps"] == 4
    assert summary["rollbacks"] == 0
    assert summary["refresh_energy_error_meV"]["count"] == 4
    assert "refresh dE" in format_summary(summary)
    assert np.isfinite(summary["surrogate_vs_reference"]["force_rmse_meV_per_A"])
    for name in ("reference.extxyz", "boostmd.extxyz", "ramachandran.png", "summary.json"):
        assert (tmp_path / "demo" / name).is_file()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["atoms"] == 22
    assert "speedup" in format_summary(summary)
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_demo(config, reference, surrogate)
    # a target every window meets: windows of 5, 7, then 10 steps (growth by half at most;
    # the last one, integrated ahead by BoostLangevin, ends after the run at step 22)
    adaptive = replace(config, target_error_meV=1e9, out=tmp_path / "adaptive")
    summary = run_demo(adaptive, reference, surrogate)
    assert summary["rollbacks"] == 0
    assert (summary["reference_calls"], summary["surrogate_calls"]) == (4, 4 + 6 + 9)
    # centred frames: the same calls (the predictions count in the reference steps' time)
    centred = replace(config, frame="centred", out=tmp_path / "centred")
    summary = run_demo(centred, reference, surrogate)
    assert (summary["reference_calls"], summary["surrogate_calls"]) == (5, 16)
    assert json.loads((tmp_path / "centred" / "summary.json").read_text())["config"]["frame"] == (
        "centred"
    )


def test_missing_pretrained_models_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr("boostmd.pretrained.MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"make it with python -m boostmd\.make_reference"):
        load_pretrained("dipeptides")
    with pytest.raises(ValueError, match="no pretrained models named 'proteins'"):
        load_pretrained("proteins")


def test_cli_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli_main([])
    assert "demo" in capsys.readouterr().out
