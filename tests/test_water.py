"""Water boxes and solvated molecules, their xTB labels, and the water reference's recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.geometry import get_distances

from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.forcefields.water import (
    MIN_CONTACT,
    MIN_OO,
    OH_BOND,
    density,
    solvated,
    water_box,
    water_count,
)
from boostmd.training.make_reference import RECIPES, evaluate
from boostmd.training.water_data import SolventDataConfig, SolventRun


def _molecule_of(atoms: Atoms, solute: int) -> np.ndarray:
    ids = np.arange(len(atoms))
    return np.where(ids < solute, -1, (ids - solute) // 3)


def test_water_box_has_the_density_and_whole_unclashed_molecules():
    box = water_box(40, density=0.95, seed=3)
    assert len(box) == 120 and box.pbc.all()
    assert density(box) == pytest.approx(0.95, rel=1e-9)
    oxygens, hydrogens = box.positions[0::3], box.positions[1::3]
    assert np.allclose(np.linalg.norm(hydrogens - oxygens, axis=1), OH_BOND)
    _, d = get_distances(box.positions, cell=box.cell, pbc=True)
    molecule = _molecule_of(box, 0)
    other = molecule[:, None] != molecule[None, :]
    assert d[other].min() >= MIN_CONTACT
    _, d_oo = get_distances(oxygens, cell=box.cell, pbc=True)
    assert d_oo[~np.eye(40, dtype=bool)].min() >= MIN_OO


def test_solvated_dipeptide_is_centred_and_clear_of_the_waters():
    peptide = capped_dipeptide("ALA")
    cell = solvated(peptide, 60, seed=1)
    n = len(peptide)
    assert len(cell) == n + 180
    assert np.array_equal(cell.numbers[:n], peptide.numbers)
    edge = cell.cell.lengths()[0]
    assert np.allclose(cell.positions[:n].mean(axis=0), edge / 2)
    # the peptide's own geometry is kept
    assert np.allclose(cell.get_all_distances()[:n, :n], peptide.get_all_distances())
    _, d = get_distances(cell.positions[:n], cell.positions[n:], cell=cell.cell, pbc=True)
    assert d.min() >= MIN_CONTACT
    assert water_count(peptide, edge) == 60
    assert density(cell) == pytest.approx(1.0)


def test_impossible_packing_and_bad_input_say_what_to_change():
    with pytest.raises(RuntimeError, match="lower the density"):
        water_box(30, density=3.0)
    with pytest.raises(ValueError, match="density must be positive"):
        water_box(4, density=0.0)
    with pytest.raises(ValueError, match="waters must be >= 0"):
        solvated(capped_dipeptide("GLY"), -1)


def test_the_recipe_names_every_run_once_with_its_temperature():
    runs = SolventDataConfig().runs()
    names = [run.name for run in runs]
    assert len(set(names)) == len(names) == 10
    assert SolventRun("water", 16, 1.0, 300.0).name == "water16_d1.00_300K"
    assert SolventRun("ALA", 26, 1.0, 400.0).name == "ALA_w26_400K"
    assert len(SolventRun("GLY", 26, 1.0, 300.0).build(0)) == len(capped_dipeptide("GLY")) + 78


def test_the_water_recipe_trains_on_stresses_and_the_dipeptide_one_does_not(tmp_path):
    water = RECIPES["water"][0](tmp_path).train_command(tmp_path)
    dipeptides = RECIPES["dipeptides"][0](tmp_path).train_command(tmp_path)
    assert water[water.index("--loss") + 1] == "stress"
    assert water[water.index("--stress_key") + 1] == "REF_stress"
    assert water[water.index("--name") + 1] == "water-reference"
    assert "--loss" not in dipeptides and "--stress_key" not in dipeptides


def _small_cell_gfn1():
    tblite = pytest.importorskip("tblite.ase")
    cell = water_box(2, density=0.5, seed=0)
    cell.calc = tblite.TBLite(method="GFN1-xTB", verbosity=0)
    return cell


def test_xtb_labels_of_a_cell_carry_the_stress_as_the_strain_derivative():
    from boostmd.training.xtb_data import labelled

    cell = _small_cell_gfn1()
    frame = labelled(cell, {"kind": "md"})
    assert np.array_equal(frame.cell, cell.cell) and frame.pbc.all()
    stress = frame.info["REF_stress"]
    # ASE's sign: stress = (1/V) dE/d(strain); central differences of a symmetric strain
    h, volume = 1e-4, cell.get_volume()
    for i, j in [(0, 0), (1, 2)]:
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = h if i == j else h / 2
        energies = []
        for sign in (1, -1):
            probe = cell.copy()
            probe.calc = cell.calc
            probe.set_cell(cell.cell @ (np.eye(3) + sign * strain), scale_atoms=True)
            energies.append(probe.get_potential_energy())
        derivative = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[i, j] == pytest.approx(derivative, rel=2e-3, abs=1e-6)


def test_xtb_labels_of_a_molecule_have_no_stress():
    from boostmd.training.xtb_data import labelled

    tblite = pytest.importorskip("tblite.ase")
    molecule = Atoms("OH2", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]])
    molecule.calc = tblite.TBLite(method="GFN1-xTB", verbosity=0)
    frame = labelled(molecule, {})
    assert "REF_stress" not in frame.info and not frame.pbc.any()
    assert frame.arrays["REF_forces"].shape == (3, 3)


def test_evaluate_reports_stress_errors_for_bulk_cells():
    from boostmd.forcefields.testing import build_mace

    model = build_mace(atomic_numbers=(1, 6, 7, 8), dtype=torch.float64)
    cell = water_box(4, seed=1)
    cell.info.update(REF_energy=0.0, REF_stress=np.zeros((3, 3)))
    cell.arrays["REF_forces"] = np.zeros((len(cell), 3))
    report = evaluate(model, [cell, cell])
    assert report["stress_rmse_GPa"] > 0 and report["pressure_rmse_GPa"] >= 0
    molecule = capped_dipeptide("ALA")
    molecule.info.update(REF_energy=0.0)
    molecule.arrays["REF_forces"] = np.zeros((len(molecule), 3))
    assert "stress_rmse_GPa" not in evaluate(model, [molecule])


def test_a_reference_shipped_without_a_surrogate_says_how_to_fit_one(monkeypatch):
    from boostmd.forcefields import pretrained

    bare = ("water-reference.pt", None, "python -m boostmd.make_reference --model water")
    monkeypatch.setitem(pretrained.PRETRAINED, "bare", bare)
    with pytest.raises(ValueError, match=r"boostmd\.fit --reference bare --structure"):
        pretrained.load_pretrained("bare")


def test_the_water_surrogate_ships_for_the_water_reference():
    from boostmd.forcefields.pretrained import load_pretrained, shipped_surrogate_for

    reference, surrogate = load_pretrained("water")
    assert surrogate.config.reference_fingerprint == reference.fingerprint
    assert shipped_surrogate_for(reference) is not None  # what water fits fine-tune from


def test_the_shipped_water_reference_gives_a_stress_and_refuses_the_dipeptide_surrogate():
    from boostmd import BoostMDCalculator
    from boostmd.forcefields.pretrained import load_pretrained, load_reference

    water = load_reference("water")
    assert set(water.atomic_numbers) == {1, 6, 7, 8}
    result = water(water_box(8, seed=2))
    assert result.stress is not None and torch.isfinite(result.forces).all()
    _, dipeptide_surrogate = load_pretrained("dipeptides")
    with pytest.raises(ValueError, match="trained for reference model"):
        BoostMDCalculator(water, dipeptide_surrogate)


def test_a_shipped_surrogate_that_failed_its_validation_says_so_once(caplog, monkeypatch, tmp_path):
    import shutil

    from boostmd.forcefields import pretrained

    failed = tmp_path / "failed-surrogate.pt"
    shutil.copy(MODELS_DIR / "water-surrogate.pt", failed)
    card = {"validation": {"verdict": "fail", "summary": "O-O 4.2x", "report": "r.md"}}
    failed.with_suffix(".json").write_text(json.dumps(card))
    monkeypatch.setattr(pretrained, "_WARNED", set())  # as in a fresh process
    with caplog.at_level("WARNING", logger="boostmd.forcefields.pretrained"):
        pretrained._warn_if_not_validated(failed)
        pretrained._warn_if_not_validated(failed)
        pretrained.load_pretrained("water")  # validated at its recommended N = 5: no word
        pretrained.load_pretrained("dipeptides")
    warnings = [r for r in caplog.records if "has not passed the sampling validation" in r.message]
    assert len(warnings) == 1 and "failed-surrogate.pt" in warnings[0].message
    assert "O-O 4.2x (r.md)" in warnings[0].message


def test_the_water_surrogate_runs_at_the_interval_it_was_validated_at():
    from boostmd import BoostMDCalculator
    from boostmd.forcefields.pretrained import load_pretrained

    reference, surrogate = load_pretrained("water")
    card = json.loads((MODELS_DIR / "water-surrogate.json").read_text())["validation"]
    assert card["verdict"] == "pass" and card["interval"] == surrogate.recommended_interval == 5
    assert BoostMDCalculator(reference, surrogate).schedule.every == 5
