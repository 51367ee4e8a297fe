"""The validation of a molecule that is not a dipeptide, and of a wrong surrogate."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.io import write

from boostmd import Surrogate
from boostmd.forcefields import pretrained
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.validation.dihedrals import backbone_dihedrals
from boostmd.validation.report import BOND_METRICS, DIHEDRAL_METRICS, METRICS, TOLERANCES
from boostmd.validation.runs import Job
from boostmd.validation.stored import STORE, load_run, run_key
from boostmd.validation.validate import (
    NO_BACKBONE,
    PRESETS,
    SWITCHED_OFF,
    ValidationConfig,
    _models,
    _parser,
    _systems,
    starting_dipeptide,
    validate,
)

SHIPPED = MODELS_DIR / "dipeptides-reference.pt", MODELS_DIR / "dipeptides-surrogate.pt"


@pytest.fixture(scope="module")
def shipped():
    """The shipped reference and surrogate, loaded once (a load takes 10-30 s here)."""
    return pretrained.load_pretrained("dipeptides")


@pytest.fixture
def asked(shipped, monkeypatch) -> list:
    """``--reference`` specs the validation loads, the shipped reference served from memory."""
    specs = []

    def load_reference(spec, *, pickled=False, **device):
        specs.append((str(spec), pickled))
        return shipped[0]

    monkeypatch.setattr(pretrained, "load_reference", load_reference)
    monkeypatch.setattr(pretrained, "load_pretrained", lambda name: shipped)
    return specs


@pytest.fixture(scope="module")
def ethanol(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("structures") / "ethanol.xyz"
    write(path, molecule("CH3CH2OH"))
    return path


def _config(out: Path, **overrides) -> ValidationConfig:
    """A tiny validation of the shipped surrogate with the default (validated) settings.

    Only ``--surrogate`` is given: the reference is the shipped one by default. (A small
    random MACE tears ethanol apart within 30 steps; the shipped reference, made for
    dipeptides, holds it together.)
    """
    values = {
        "out": out,
        "surrogate": SHIPPED[1],
        "steps": 20,
        "equilibration_steps": 10,
        "replicas": 1,
        "nve_steps": 10,
        "interval": 5,
        "checkpoint_every": 10,
        "temperature_K": 200.0,
        "reference_runs": None,
    }
    return ValidationConfig(**{**values, **overrides})


def test_a_molecule_without_dihedrals_is_judged_without_them_and_its_runs_are_stored(
    ethanol, asked, tmp_path
):
    store = tmp_path / "store"
    first = _config(
        tmp_path / "first",
        structure=ethanol,
        reference_runs=store,
        store_reference_runs=True,
    )
    (report,) = validate(first, command="test")
    assert asked == [("dipeptides", False)]  # --surrogate alone: the shipped reference
    assert report["system"] == "ethanol"
    checked = report["metric_verdicts"]["boostmd-checked"]
    not_computed = report["not_computed"]["boostmd-checked"]
    for metric in BOND_METRICS:
        assert checked[metric] in ("pass", "fail"), metric
        assert np.isfinite(report["noise_floor"][metric])
    for metric in DIHEDRAL_METRICS:
        assert checked[metric] == "not computed"
        assert not_computed[metric] == NO_BACKBONE
    assert report["transitions"] == {} and report["no_dihedrals"] == NO_BACKBONE
    assert report["verdict"] in ("pass", "fail") and not report["no_verdict"]
    # no failure line is about a metric that could not be computed
    assert not any(metric in f for f in report["failures"] for metric in not_computed)
    summary = (tmp_path / "first" / "summary.md").read_text()
    assert f"| ethanol | jsd | nats | nan | 2.4x | not computed ({NO_BACKBONE}) |" in summary
    assert f"basin transitions: not computed ({NO_BACKBONE})" in summary
    saved = json.loads((tmp_path / "first" / "report.json").read_text())["systems"][0]
    assert saved["not_computed"]["boostmd-checked"]["pmf_phi_kT"] == NO_BACKBONE
    assert (tmp_path / "first" / "ethanol-bonds-temperatures.png").is_file()
    assert not (tmp_path / "first" / "ethanol-pmf.png").exists()
    checkpoint = np.load(tmp_path / "first" / "checkpoints" / "ethanol-reference-0.npz")
    assert np.isnan(checkpoint["phi"]).all() and checkpoint["bonds_xh"].shape == (31, 6)
    # the reference runs were stored under the molecule's name and are reused
    stored = sorted(path.name.rsplit("-", 1)[0] for path in store.glob("*.npz"))
    assert stored == [
        "ethanol-nve-reference-0",
        "ethanol-reference-0",
        "ethanol-reference-2-0",
        "ethanol-reference-adaptive-0",
    ]
    second = replace(first, out=tmp_path / "second", store_reference_runs=False)
    (again,) = validate(second)
    made = sorted(path.name for path in (tmp_path / "second" / "checkpoints").glob("*.npz"))
    assert made == ["ethanol-boostmd-checked-0.npz", "ethanol-nve-boostmd-consistent-0.npz"]
    assert again["noise_floor"] == pytest.approx(report["noise_floor"], abs=0.1, nan_ok=True)
    # named torsions (H-C-C-O, C-C-O-H) are judged; runs that record them are other runs
    given = replace(second, out=tmp_path / "third", phi=(6, 0, 1, 2), psi=(0, 1, 2, 3))
    (named,) = validate(given)
    assert named["metric_verdicts"]["boostmd-checked"]["jsd"] in ("pass", "fail")
    # 20 sampled frames: no bin of 10 degrees holds 20 in both runs
    assert named["not_computed"]["boostmd-checked"]["pmf_phi_kT"] == METRICS["pmf_phi_kT"][2]
    assert (tmp_path / "third" / "checkpoints" / "ethanol-reference-0.npz").is_file()


def test_dihedrals_come_from_the_backbone_the_user_or_nowhere(ethanol, tmp_path):
    config = ValidationConfig(out=tmp_path, structure=ethanol)
    assert _systems(config)["ethanol"][1:] == (None, NO_BACKBONE)
    named = replace(config, phi=[6, 0, 1, 2], psi=[0, 1, 2, 3])
    assert _systems(named)["ethanol"][1:] == (((6, 0, 1, 2), (0, 1, 2, 3)), "")
    alanine = tmp_path / "alanine.pdb"
    write(alanine, starting_dipeptide("ALA"))
    system = _systems(ValidationConfig(out=tmp_path, structure=alanine))["alanine"]
    assert system.dihedrals == backbone_dihedrals(system.atoms) and system.no_dihedrals == ""
    off = _systems(ValidationConfig(out=tmp_path, peptides=["ALA"], dihedrals=False))["ALA"]
    # the runs still record phi/psi (so the stored runs are found); they are not judged
    assert off.dihedrals is not None and off.no_dihedrals == SWITCHED_OFF
    with pytest.raises(ValueError, match="both --phi and --psi"):
        _systems(replace(config, phi=[6, 0, 1, 2]))
    with pytest.raises(ValueError, match="atoms 0 to 8"):
        _systems(replace(named, psi=[0, 1, 2, 9]))
    with pytest.raises(ValueError, match="name atoms of --structure"):
        _systems(replace(named, structure=None, peptides=["ALA"]))
    (tmp_path / "bad.xyz").write_text("not a structure\n")
    with pytest.raises(ValueError, match="ASE cannot read it"):
        _systems(ValidationConfig(out=tmp_path, structure=tmp_path / "bad.xyz"))
    assert not _parser().parse_args(["--no-dihedrals"]).dihedrals


def test_the_command_maps_a_structure_and_a_model_name(ethanol, tmp_path, monkeypatch):
    from boostmd.validation import validate as validation

    seen = []
    monkeypatch.setattr(validation, "start_command", lambda level: None)
    monkeypatch.setattr(validation, "validate", lambda *args: seen.append(args))
    argv = ["--structure", str(ethanol), "--reference", "dipeptides", "--surrogate", "s.pt"]
    validation.main([*argv, "--no-dihedrals", "--out", str(tmp_path)])
    ((config, command),) = seen
    assert config.peptides == [] and config.structure == ethanol and not config.dihedrals
    assert config.reference == "dipeptides" and config.surrogate == Path("s.pt")
    assert (config.integrator, config.frame) == ("checked", "centred")  # the validated ones
    assert command.startswith("python -m boostmd.validate --structure")


def test_the_dipeptides_stored_runs_keep_their_keys():
    """Keys hold dihedrals only where the structure does not imply them."""
    fingerprint = Surrogate.load(SHIPPED[1]).config.reference_fingerprint  # the shipped one
    settings = ValidationConfig(out=Path(), **PRESETS["standard"]).settings()
    atoms = starting_dipeptide("ALA")
    job = Job("ALA", "reference", 0)
    key = run_key(job, atoms, fingerprint, settings, backbone_dihedrals(atoms))
    assert key == run_key(job, atoms, fingerprint, settings) and "dihedrals" not in key
    assert load_run(STORE, key) is not None
    phi, psi = backbone_dihedrals(atoms)
    assert run_key(job, atoms, fingerprint, settings, (psi, phi))["dihedrals"] == [
        list(psi),
        list(phi),
    ]
    assert run_key(job, atoms, fingerprint, settings, None)["dihedrals"] is None
    ethanol = molecule("CH3CH2OH")
    assert "dihedrals" not in run_key(Job("ethanol", "reference", 0), ethanol, "x", settings, None)


def test_the_reference_is_a_shipped_name_or_a_file_with_its_surrogate(shipped, asked, tmp_path):
    reference, surrogate = _models(ValidationConfig(out=tmp_path, surrogate=SHIPPED[1]))
    assert reference is shipped[0] and asked == [("dipeptides", False)]
    assert surrogate.config.reference_fingerprint == reference.fingerprint
    assert _models(ValidationConfig(out=tmp_path))[1] is shipped[1]  # neither: shipped models
    for spec, pickled in (("dipeptides", False), ("mace.model", True)):
        config = ValidationConfig(
            out=tmp_path, reference=spec, surrogate=SHIPPED[1], pickled_reference=pickled
        )
        assert _models(config)[0] is reference and asked[-1] == (spec, pickled)
    # a shipped name alone takes its shipped surrogate; a file alone needs one
    assert _models(ValidationConfig(out=tmp_path, reference="dipeptides"))[1] is shipped[1]
    with pytest.raises(ValueError, match="needs its surrogate: pass --surrogate"):
        _models(ValidationConfig(out=tmp_path, reference="mine.pt"))
    with pytest.raises(ValueError, match="--pickled-reference needs --reference"):
        _models(ValidationConfig(out=tmp_path, surrogate=SHIPPED[1], pickled_reference=True))
    trained = Surrogate.load(SHIPPED[1])
    other = Surrogate(replace(trained.config, reference_fingerprint="another model"))
    other.load_state_dict(trained.state_dict())
    for_another = other.save(tmp_path / "for-another.pt")
    with pytest.raises(
        ValueError, match=r"trained for reference model another model.*--reference MODEL"
    ):
        _models(ValidationConfig(out=tmp_path, surrogate=for_another))


class _Softened(Surrogate):
    """The trained surrogate with its energy change since the frame scaled by ``SOFT``.

    Every force of a window's surrogate steps is ``SOFT`` times the trained surrogate's:
    the bonds are too soft, and a sampler that keeps such windows samples them too wide.
    """

    SOFT = 0.3

    def evaluate(self, frame, positions, curvature_scale=1.0):
        energy, forces, curvature = super().evaluate(frame, positions, curvature_scale)
        softened = frame.energy + self.SOFT * (energy - frame.energy)
        return softened, self.SOFT * forces, self.SOFT * curvature


def test_a_surrogate_with_too_soft_bonds_fails_on_the_bond_lengths(shipped, tmp_path, monkeypatch):
    """ASE's Langevin keeps every window, so the too-soft bonds reach the samples.

    (The checked sampler undoes such windows and reruns them with the reference: with this
    surrogate it reran all 40 of 40 and sampled the bonds right, at no speedup.) About 40 s
    on two free cores: two reference runs of 300 steps, two BoostMD runs.
    """
    from boostmd.validation import validate as validation

    reference, trained = shipped
    softened = _Softened(trained.config).to(trained.feature_in.weight.dtype)
    softened.load_state_dict(trained.state_dict())
    common = {
        "peptides": ["ALA"],
        "integrator": "ase",
        "steps": 200,
        "equilibration_steps": 100,
        "replicas": 1,
        "nve_steps": 10,
        "checkpoint_every": 50,
        "reference_runs": tmp_path / "store",  # the second validation reuses the first's
    }
    reports = {}
    for name, surrogate in (("softened", softened), ("trained", trained)):
        monkeypatch.setattr(validation, "_models", lambda config, s=surrogate: (reference, s))
        config = ValidationConfig(out=tmp_path / name, store_reference_runs=True, **common)
        (reports[name],) = validate(config)
    soft, right = reports["softened"], reports["trained"]
    # the same reference runs (stored bond lengths are rounded to 0.1 mÅ)
    assert soft["noise_floor"] == pytest.approx(right["noise_floor"], abs=0.1, nan_ok=True)
    assert not soft["collapses"]["boostmd"]
    ratios = soft["ratio_to_noise_floor"]["boostmd"]
    assert soft["metric_verdicts"]["boostmd"]["bond_heavy_w1_mA"] == "fail"
    assert ratios["bond_heavy_w1_mA"] > 2 * TOLERANCES["bond_heavy_w1_mA"]  # 5.7x measured
    assert soft["verdict"] == "fail" and any("bond_heavy_w1_mA is" in f for f in soft["failures"])
    for metric in BOND_METRICS:
        assert right["metric_verdicts"]["boostmd"][metric] == "pass", metric
