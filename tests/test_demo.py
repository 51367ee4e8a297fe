import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from boostmd import MACEReference, Surrogate
from boostmd.cli import main as cli_main
from boostmd.demo import DemoConfig, format_summary, run_demo
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained
from boostmd.forcefields.testing import build_mace
from boostmd.validation.dihedrals import backbone_dihedrals, dihedral_angles

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


def test_demo_runs_end_to_end_with_small_models(tmp_path, caplog):
    reference = MACEReference(build_mace(hidden_irreps="8x0e+8x1o", dtype=torch.float32))
    torch.manual_seed(0)
    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=16)
    config = DemoConfig(
        steps=15,
        equilibration_steps=5,
        reference_steps=5,
        interval=5,
        timestep_fs=0.5,
        out=tmp_path / "demo",
    )
    summary = run_demo(config, reference, surrogate)
    # 20 steps in windows of 5: a reference call per window (at its centre), one to start
    assert summary["steps"] == 20 and summary["reference_calls"] == 5
    assert summary["surrogate_calls"] >= 20 - 5
    assert summary["speedup"] > 0 and summary["collapse"] is None
    assert summary["refresh_energy_error_meV"]["count"] == 4
    # no stored reference runs for a random model: no comparison, and a line that says why
    assert summary["compared_with"] is None and "no stored reference runs" in caplog.text
    text = format_summary(summary)
    assert "speedup" in text and "refresh dE" in text
    assert (tmp_path / "demo" / "checkpoints" / "ALA-boostmd-checked-0.npz").is_file()
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert on_disk["atoms"] == 22 and on_disk["config"]["frame"] == "centred"
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_demo(config, reference, surrogate)
    # the long comparison: a reference run of the same length gives speedup and picture
    full = replace(config, full_reference=True, out=tmp_path / "full")
    summary = run_demo(full, reference, surrogate)
    assert summary["reference_steps_timed"] == 20
    assert (tmp_path / "full" / "comparison.png").is_file()
    assert np.isfinite(summary["comparison"]["boostmd"]["bond_xh_w1_mA"])
    assert "X-H bond lengths" in format_summary(summary)


def test_the_demo_compares_with_the_stored_reference_runs_of_the_shipped_models():
    from boostmd.demo import _stored_reference

    reference, _ = load_pretrained("dipeptides")
    runs = _stored_reference("ALA", capped_dipeptide("ALA"), reference.fingerprint, DemoConfig())
    assert [len(runs[role]) for role in ("reference", "reference-2")] == [2, 2]
    warmer = replace(DemoConfig(), temperature_K=350.0)
    assert _stored_reference("ALA", capped_dipeptide("ALA"), reference.fingerprint, warmer) == {}


def test_missing_pretrained_models_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr("boostmd.forcefields.pretrained.MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"make it with python -m boostmd\.make_reference"):
        load_pretrained("dipeptides")
    with pytest.raises(ValueError, match="no pretrained models named 'proteins'"):
        load_pretrained("proteins")


def test_cli_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli_main([])
    assert "demo" in capsys.readouterr().out
