import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from boostmd import MACEReference, Surrogate
from boostmd.dynamics.stability import BondTopology, first_collapse
from boostmd.forcefields.mace_io import save_mace
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.forcefields.testing import build_mace
from boostmd.validation import runs
from boostmd.validation.configurational import force_series, recorded
from boostmd.validation.false_alarms import false_alarm_rates, null_ratios
from boostmd.validation.report import (
    DIHEDRAL_METRICS,
    METRICS,
    SPARSE,
    TOLERANCES,
    _energy_frames,
    adaptive_friction_stats,
    judge,
    refresh_error_stats,
    summary_markdown,
    system_report,
)
from boostmd.validation.sampling import (
    block_standard_error,
    count_transitions,
    jensen_shannon,
    ks_statistic,
    mean_difference_floor,
    pmf,
    pmf_error,
    wasserstein,
)
from boostmd.validation.stored import STORE, stored_sampling_runs
from boostmd.validation.validate import (
    PRESETS,
    ValidationConfig,
    _parser,
    chosen_integrator,
    reference_calls,
    validate,
)


def test_jensen_shannon_is_a_symmetric_divergence_bounded_by_ln2():
    rng = np.random.default_rng(0)
    p, q = rng.random((6, 6)), rng.random((6, 6))
    assert jensen_shannon(p, p) == pytest.approx(0, abs=1e-15)
    assert jensen_shannon(p, q) == pytest.approx(jensen_shannon(q, p))
    assert 0 < jensen_shannon(p, q) < np.log(2)
    disjoint = np.zeros((6, 6)), np.zeros((6, 6))
    disjoint[0][0, 0], disjoint[1][3, 3] = 1, 1
    assert jensen_shannon(*disjoint) == pytest.approx(np.log(2))


def test_pmf_is_minus_log_probability_in_kT():
    angles = np.repeat([-175.0, -165.0, -155.0], [400, 100, 50])
    _, free_energy, counts = pmf(angles, bins=36)
    assert counts[:3].tolist() == [400, 100, 50]
    np.testing.assert_allclose(free_energy[:3], [0, np.log(4), np.log(8)])
    assert np.isinf(free_energy[3:]).all()


def test_pmf_error_ignores_the_constant_and_badly_sampled_bins():
    rng = np.random.default_rng(1)
    a = rng.vonmises(0.0, 2.0, 200_000) * 180 / np.pi
    b = rng.vonmises(0.0, 2.0, 200_000) * 180 / np.pi
    assert pmf_error(a, b) < 0.05  # same distribution: sampling noise only
    shifted = rng.vonmises(0.5, 2.0, 200_000) * 180 / np.pi
    assert pmf_error(a, shifted) > 0.5
    assert np.isnan(pmf_error(a[:10], b[:10]))  # nothing well sampled


def test_transitions_are_counted_between_basin_cores_only():
    phi = np.full(6, -70.0)
    psi = np.array([150.0, 40.0, 150.0, 30.0, -40.0, 150.0])  # 40 and 30: between cores
    assert count_transitions(phi, psi) == 2


def _ar1(rng, n, phi):
    """A correlated series: x_t = phi x_{t-1} + noise (variance 1 / (1 - phi^2))."""
    x, noise = np.zeros(n), rng.normal(size=n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def test_wasserstein_and_ks_tell_a_shifted_distribution_from_the_same_one():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 20_000), rng.normal(0, 1, 20_000)
    shifted = rng.normal(0.5, 1, 20_000)
    assert wasserstein(a, b) < 0.05
    assert wasserstein(a, shifted) == pytest.approx(0.5, abs=0.05)  # W1 of a shift is the shift
    assert ks_statistic(a, b) < 0.03 < 0.15 < ks_statistic(a, shifted)
    wider = rng.normal(0, 2, 20_000)  # same mean, different width: W1 sees it
    assert wasserstein(a, wider) > 0.5
    assert np.isnan(wasserstein(a, [])) and np.isnan(ks_statistic([], b))


def test_block_standard_error_sees_correlation_the_naive_one_misses():
    rng = np.random.default_rng(3)
    correlated = _ar1(rng, 20_000, 0.9)
    naive = correlated.std() / np.sqrt(len(correlated))
    expected = naive * np.sqrt(1.9 / 0.1)  # AR(1): sqrt((1 + phi) / (1 - phi)) = 4.4 x naive
    assert 2 * naive < block_standard_error(correlated) == pytest.approx(expected, rel=0.3)
    white = rng.normal(size=20_000)
    assert block_standard_error(white) == pytest.approx(1 / np.sqrt(20_000), rel=0.3)
    # replicas pool: two halves estimate the standard error of the pooled mean
    halves = [correlated[:10_000], correlated[10_000:]]
    assert block_standard_error(halves) == pytest.approx(block_standard_error(correlated), rel=0.3)
    assert np.isnan(block_standard_error(np.ones(5)))  # fewer frames than blocks


def test_mean_difference_floor_is_never_below_twice_the_standard_error():
    rng = np.random.default_rng(4)
    a, b = _ar1(rng, 4000, 0.95), _ar1(rng, 4000, 0.95)
    floor, difference, error = mean_difference_floor([a], [b])
    assert difference == pytest.approx(abs(b.mean() - a.mean()))
    assert error == pytest.approx(np.hypot(block_standard_error(a), block_standard_error(b)))
    assert floor == max(difference, 2 * error)
    # two runs that agree by chance still get the floor their noise allows
    floor, difference, error = mean_difference_floor([a], [a - a.mean() + 0.0])
    assert floor == pytest.approx(2 * error) and floor > 10 * difference


def test_over_the_tolerance_fails_without_a_floor_is_not_computed_nan_of_a_sampler_fails():
    floors = {"jsd": 0.1, "pmf_phi_kT": 0.2, "temperature_hydrogen_K": np.nan, "bond_xh_w1_mA": 0}
    values = {"jsd": 0.14, "pmf_phi_kT": 0.31, "temperature_hydrogen_K": 1.0, "bond_xh_w1_mA": 1}
    why_nan = {"jsd": "no frames", "temperature_hydrogen_K": "no hydrogens"}
    ratios, failures, not_computed = judge(values, floors, tolerance=1.5, why_nan=why_nan)
    assert ratios["jsd"] == pytest.approx(1.4) and "jsd" not in failures
    assert ratios["pmf_phi_kT"] == pytest.approx(1.55)
    assert failures["pmf_phi_kT"].startswith("pmf_phi_kT is 1.55x the noise floor")
    # the exact runs cannot give it: not computed, with the reason, and no failure
    assert not_computed == {"temperature_hydrogen_K": "no hydrogens"}
    assert "temperature_hydrogen_K" not in failures
    assert "no ratio can be made" in failures["bond_xh_w1_mA"]
    # the reference runs give it, the sampler (which broke apart) does not: a failure
    _, failures, not_computed = judge(
        {"bond_xh_w1_mA": np.nan}, {"bond_xh_w1_mA": 2.0}, why_nan={"bond_xh_w1_mA": "no frames"}
    )
    assert failures == {
        "bond_xh_w1_mA": "bond_xh_w1_mA could not be computed (nan) for this sampler, though "
        "the reference runs give it (noise floor 2): no frames"
    }
    assert not not_computed
    _, failures, not_computed = judge({"jsd": np.nan}, {"jsd": np.nan})
    assert not failures and not_computed == {"jsd": "its noise floor could not be computed"}
    # a PMF over too few well-sampled bins is a limit of the sampling (the JSD judges
    # how far apart the distributions are): not computed, for a sampler too
    why = {"pmf_phi_kT": "too few frames per bin"}
    nan_pmf = ({"pmf_phi_kT": np.nan}, {"pmf_phi_kT": 0.2})
    assert judge(*nan_pmf, why_nan=why, sparse=SPARSE)[1:] == ({}, why)
    assert "pmf_phi_kT" in judge(*nan_pmf, why_nan=why)[1]


def test_each_metric_is_judged_against_its_own_tolerance():
    floors = {"jsd": 0.1, "bond_xh_w1_mA": 1.0}
    values = {"jsd": 0.2, "bond_xh_w1_mA": 2.0}
    _, failures, _ = judge(values, floors, tolerance={"jsd": 2.4, "bond_xh_w1_mA": 1.5})
    assert list(failures) == ["bond_xh_w1_mA"]
    with pytest.raises(KeyError, match="no tolerance for metric 'jsd'"):
        judge(values, floors, tolerance={"bond_xh_w1_mA": 1.5})
    assert set(TOLERANCES) == set(METRICS) and min(TOLERANCES.values()) >= 1.5


def test_refresh_error_statistics_in_meV_skip_frames_without_a_refresh():
    stats = refresh_error_stats(np.array([np.nan, 0.002, np.nan, -0.004, 0.002]))
    assert stats["count"] == 3
    assert stats["rms_meV"] == pytest.approx(np.sqrt(24 / 3))
    assert stats["mean_meV"] == pytest.approx(0.0) and stats["max_abs_meV"] == pytest.approx(4)
    assert refresh_error_stats(np.full(4, np.nan))["count"] == 0


def _synthetic_run(role, replica, rng, frames=4000, hot_hydrogens=0.0, long_xh=0.0, phi=-70.0):
    """A fake job result: correlated observables, as a sampler that is right or wrong.

    The reference's squared forces are those of harmonic oscillators (3 hydrogens,
    2 heavy atoms) sampled at the hydrogens' and heavy atoms' temperature: ``|F|^2`` per
    component is ``k kB T z^2``, so its mean is proportional to the temperature.
    """
    angles = rng.normal((phi, -70), 15, (frames, 2))
    temperature_h = 300 + hot_hydrogens + 20 * _ar1(rng, frames, 0.9) / np.sqrt(1 / 0.19)
    temperature_heavy = 300 + 10 * _ar1(rng, frames, 0.9) / np.sqrt(1 / 0.19)
    xh = 1.09 + long_xh + 0.02 * rng.normal(size=(frames, 3))
    heavy = 1.52 + 0.03 * rng.normal(size=(frames, 2))
    energy = -100 + 0.1 * _ar1(rng, frames, 0.9) + 10 * (hot_hydrogens + long_xh)
    oscillators = (3 * 3, 2 * 3)  # force components of the hydrogens and the heavy atoms
    force_sq = np.stack(
        [
            (300 + hot) / 300 * (rng.normal(size=(frames, n)) ** 2).mean(axis=1)
            for n, hot in zip(oscillators, (hot_hydrogens, 0.0), strict=True)
        ],
        axis=1,
    )
    schedule = np.arange(frames) % 10 == 0
    if "boostmd" in role:
        force_sq[~schedule] = np.nan
    return {
        "job": runs.Job("X", role, replica),
        "phi": angles[:, 0],
        "psi": angles[:, 1],
        "temperature": (temperature_h + temperature_heavy) / 2,
        "temperature_hydrogen": temperature_h,
        "temperature_heavy": temperature_heavy,
        "energy": energy,
        "potential_energy": energy,
        "is_reference": schedule if "boostmd" in role else np.ones(frames, bool),
        "scheduled_reference": schedule if "boostmd" in role else np.ones(frames, bool),
        "reference_force_sq": force_sq,
        "refresh_energy_error": np.where(np.arange(frames) % 10 == 0, 0.001, np.nan),
        "bonds_xh": xh.astype(np.float32),
        "bonds_heavy": heavy.astype(np.float32),
        "refresh_errors": np.full(frames // 10, 0.001),
        "refresh_force_errors": np.full(frames // 10, 0.05),
        "seconds": 1.0 if "boostmd" in role else 10.0,
        "steps": frames,
        "reference_calls": frames // 10 if "boostmd" in role else frames,
        "surrogate_calls": frames - frames // 10 if "boostmd" in role else 0,
        "rollbacks": 0,
        "windows": frames // 10 if "boostmd" in role else 0,
        "fallbacks": 0,
        "curvature_scale": 1.05 if "boostmd" in role else 1.0,
        "collapse": None,
    }


def _synthetic_results(rng, wrong_by_role, replicas=2):
    """Synthetic runs of every role (``_synthetic_run``'s options per role), per replica."""
    return [
        _synthetic_run(role, replica, rng, **wrong)
        for replica in range(replicas)
        for role, wrong in wrong_by_role.items()
    ]


def test_false_alarm_rates_of_exact_replicas_fall_with_the_tolerance():
    rng = np.random.default_rng(11)
    exact = [_synthetic_run("reference", replica, rng, frames=2000) for replica in range(5)]
    metrics = ["jsd", "pmf_phi_kT", "temperature_hydrogen_K", "bond_xh_w1_mA"]
    ratios = null_ratios(exact, metrics, skip=0, interval=10, temperature_K=300.0)
    # every (sampler, reference, two floor runs) assignment of 5 replicas: 5 * 4 * 3 = 60
    assert all(len(r) == 60 for r in ratios.values()) and list(ratios) == metrics
    # the floor is the larger of two draws of the same noise as the sampler's distance
    assert all(np.median(r) < 1.2 for r in ratios.values())
    loose, strict = false_alarm_rates(ratios, 1.5), false_alarm_rates(ratios, 1.0)
    assert loose["any"] <= strict["any"] and strict["any"] > 0
    assert loose["any"] == pytest.approx(
        np.mean(np.any(np.stack([r > 1.5 for r in ratios.values()]), axis=0))
    )
    assert false_alarm_rates(ratios, 1e9)["any"] == 0
    with pytest.raises(ValueError, match="at least 4 exact runs"):
        null_ratios(exact[:3], metrics, skip=0, interval=10, temperature_K=300.0)


def test_stored_sampling_runs_are_every_exact_replica_of_a_preset():
    exact = stored_sampling_runs(STORE, "ALA", steps=3000)
    roles = sorted((r["job"].role, r["job"].replica) for r in exact)
    assert roles == sorted((role, i) for role in runs.SAMPLING_ROLES[:3] for i in (0, 1))
    # the starting frame, 300 equilibration steps and 3000 sampled steps
    assert all(len(r["phi"]) == 3301 and r["bonds_xh"].ndim == 2 for r in exact)


def test_the_report_tells_a_hot_sampler_from_a_right_one_on_synthetic_runs():
    results = _synthetic_results(
        np.random.default_rng(5),
        {
            "reference": {},
            "reference-2": {},
            "boostmd": {"hot_hydrogens": 40.0, "long_xh": 0.01},
            "boostmd-checked": {},
        },
    )
    settings = runs.MDSettings(300.0, 1.0, 1.0, 4000, 0, 100, 10, 500, 0)
    report = system_report("X", results, settings, atoms=5)
    assert set(report["samplers"]) == {"boostmd", "boostmd-checked"}
    assert set(report["noise_floor"]) == {*METRICS, "reference_energy_ks"}
    verdicts = report["metric_verdicts"]
    for metric in (
        "temperature_hydrogen_K",
        "bond_xh_w1_mA",
        "reference_energy_w1_meV",
        "config_temperature_hydrogen_K",
    ):
        assert verdicts["boostmd"][metric] == "fail", metric
    assert report["samplers"]["boostmd"]["verdict"] == "fail"
    # the right sampler's values are noise; with a robust floor they stay within 1.5x
    for metric in (
        "temperature_hydrogen_K",
        "temperature_heavy_K",
        "bond_heavy_w1_mA",
        "config_temperature_hydrogen_K",
        "config_temperature_heavy_K",
    ):
        assert verdicts["boostmd-checked"][metric] == "pass", metric
    # 800 refresh frames: a standard error of about 5-6 K
    configurational = report["configurational_temperature_K"]
    assert configurational["reference"]["hydrogen"] == pytest.approx(300, abs=15)
    assert configurational["boostmd"]["hydrogen"] == pytest.approx(340, abs=18)
    assert configurational["boostmd"]["heavy"] == pytest.approx(300, abs=18)
    assert report["floor_standard_error"]["temperature_hydrogen_K"] > 0
    assert (
        report["noise_floor"]["temperature_hydrogen_K"]
        >= 2 * (report["floor_standard_error"]["temperature_hydrogen_K"])
    )
    assert report["vs_reference"]["boostmd"]["temperature_hydrogen_K"] == pytest.approx(40, abs=5)
    assert report["vs_reference"]["boostmd"]["bond_xh_w1_mA"] == pytest.approx(10, abs=2)
    sampler = report["samplers"]["boostmd-checked"]
    assert sampler["refresh_force_rmse_meV_per_A"] == pytest.approx(50)
    assert sampler["speedup"] == pytest.approx(10) and sampler["reference_call_speedup"] == 10
    assert sampler["refresh_energy_error_meV"]["frames"]["rms_meV"] == pytest.approx(1)
    assert report["verdict"] == "fail"
    assert all(f.startswith(("boostmd: ", "boostmd-checked: ")) for f in report["failures"])
    # runs made before the forces were recorded leave the configurational metrics out
    for result in results:
        if result["job"].role == "reference-2":
            del result["reference_force_sq"]
    older = system_report("X", results, settings, atoms=5)
    assert older["metric_verdicts"]["boostmd-checked"]["config_temperature_heavy_K"] == (
        "not computed"
    )
    why = older["not_computed"]["boostmd-checked"]["config_temperature_heavy_K"]
    assert why.startswith("no reference forces")
    assert not any("config" in f for f in older["failures"])


def test_what_the_exact_runs_cannot_give_is_not_judged_and_bonds_are_needed_for_a_verdict():
    rng = np.random.default_rng(8)
    # 15 sampled frames: no 10-degree bin holds 20 frames, so no PMF can be compared
    roles = {"reference": {}, "reference-2": {}, "boostmd-checked": {}}
    short = _synthetic_results(rng, roles, replicas=1)
    for result in short:
        for key in ("phi", "psi"):
            result[key] = result[key][:15]
    settings = runs.MDSettings(300.0, 1.0, 1.0, 4000, 0, 100, 10, 500, 0)
    report = system_report("X", short, settings, atoms=5)
    why = METRICS["pmf_phi_kT"][2]
    assert why == "fewer than two phi bins hold 20 frames in both runs"
    assert report["not_computed"]["boostmd-checked"]["pmf_phi_kT"] == why
    assert report["metric_verdicts"]["boostmd-checked"]["pmf_phi_kT"] == "not computed"
    assert report["verdict"] == "pass" and not report["no_verdict"]
    summary = summary_markdown([report], settings, "test")
    assert f"| X | pmf_phi_kT | kT | nan | 2x | not computed ({why}) |" in summary
    # a molecule without dihedrals: the phi/psi metrics and transitions are not computed
    without = system_report("X", short, settings, atoms=5, no_dihedrals="no dihedrals: test")
    not_computed = without["not_computed"]["boostmd-checked"]
    assert {not_computed[m] for m in DIHEDRAL_METRICS} == {"no dihedrals: test"}
    assert without["transitions"] == {} and without["verdict"] == "pass"
    # the same runs with no bond of either kind: no verdict, never a pass
    results = [
        {**r, "bonds_xh": r["bonds_xh"][:, :0], "bonds_heavy": r["bonds_heavy"][:, :0]}
        for r in short
    ]
    bondless = system_report("X", results, settings, atoms=5)
    assert bondless["verdict"] == bondless["samplers"]["boostmd-checked"]["verdict"] == "no verdict"
    assert bondless["no_verdict"].startswith("no bond-length metric could be computed")
    assert "no verdict: no bond-length metric" in summary_markdown([bondless], settings, "test")
    # a failure is a failure, bonds or not
    for result in results:
        if result["job"].role == "boostmd-checked":
            result["collapse"] = (3, "non-finite positions")
    assert system_report("X", results, settings, atoms=5)["verdict"] == "fail"


def test_the_floor_is_the_larger_distance_of_reference_2_and_reference_adaptive():
    """A short run's phi statistics depend on its kinetics: the adaptive reference says how much.

    Here the exact model under the adaptive friction sits 10 degrees off in phi (as a run
    that left its starting basin by another route would), and so does the sampler: against
    reference-2 alone it fails, with the adaptive reference's floor it passes, and the
    report names which run set each floor.
    """
    shifted = {"phi": -60.0}
    results = _synthetic_results(
        np.random.default_rng(7),
        {
            "reference": {},
            "reference-2": {},
            "reference-adaptive": shifted,
            "boostmd-checked": shifted,
        },
    )
    settings = runs.MDSettings(300.0, 1.0, 1.0, 4000, 0, 100, 10, 500, 0)
    report = system_report("X", results, settings, atoms=5)
    without = system_report(
        "X", [r for r in results if r["job"].role != "reference-adaptive"], settings, atoms=5
    )
    assert without["metric_verdicts"]["boostmd-checked"]["pmf_phi_kT"] == "fail"
    assert report["metric_verdicts"]["boostmd-checked"]["pmf_phi_kT"] == "pass"
    sources = report["noise_floor_source"]
    assert sources["pmf_phi_kT"] == sources["jsd"] == "reference-adaptive"
    assert sources["pmf_psi_kT"] in ("reference-2", "reference-adaptive")
    for metric, floor in report["noise_floor"].items():
        assert floor >= without["noise_floor"][metric] or np.isnan(floor), metric
        other = report["reference_adaptive_vs_reference"][metric]
        larger = max(without["noise_floor"][metric], other)  # nan: no angles kept
        assert floor == pytest.approx(larger, nan_ok=True) or (
            metric in report["floor_standard_error"]  # mean differences: at least 2 x SE
        ), metric
    assert report["transitions"]["reference-adaptive"] >= 0


def test_every_dipeptide_starts_with_phi_in_its_main_basin():
    """RDKit's conformer 0 of GLN has phi = +86 degrees, which a reference run leaves late."""
    from boostmd.forcefields.peptides import capped_dipeptide
    from boostmd.validation.dihedrals import backbone_dihedrals, dihedral_angles
    from boostmd.validation.validate import MAIN_BASIN_PHI, starting_dipeptide

    def phi(atoms):
        return float(dihedral_angles(atoms.positions[None], backbone_dihedrals(atoms)[0])[0])

    assert phi(capped_dipeptide("GLN")) > 0
    for code in ("ALA", "GLN"):
        assert MAIN_BASIN_PHI[0] <= phi(starting_dipeptide(code)) <= MAIN_BASIN_PHI[1]
    # where conformer 0 is in the main basin it is the start, so stored runs stay valid
    assert np.array_equal(starting_dipeptide("ALA").positions, capped_dipeptide("ALA").positions)


def test_equilibration_steps_run_at_the_equilibration_friction_then_production():
    from ase.calculators.lj import LennardJones

    from boostmd.dynamics.md import ase_units, langevin

    atoms = molecule("H2O")
    atoms.calc = LennardJones()
    settings = runs.MDSettings(
        300.0, 1.0, 1.0, 6, 4, 0, 10, 500, 0, equilibration_friction_per_ps=50.0
    )
    dynamics = langevin(atoms, 300.0, 1.0, 1.0, rng=0)
    seen = []
    dynamics.attach(lambda: seen.append(dynamics.fr))
    job = runs.Job("X", "reference", 0)
    runs._advance(dynamics, job, settings, 0, 3)  # a checkpoint inside the equilibration
    runs._advance(dynamics, job, settings, 3, 7)
    strong, weak = ase_units(1.0, 50.0)[1], ase_units(1.0, 1.0)[1]
    # ASE observes the start, then each step after it is taken with the friction shown
    assert seen[1:] == [strong] * 4 + [weak] * 6
    nve = langevin(atoms, 300.0, 1.0, 0.0, rng=0)
    runs._advance(nve, runs.Job("X", "nve-reference", 0), settings, 0, 5)
    assert nve.fr == 0.0  # NVE runs have no equilibration friction


def test_cli_and_presets():
    args = _parser().parse_args(["--integrator", "ase", "--preset", "long", "--frame", "start"])
    assert (args.integrator, args.preset, args.frame) == ("ase", "long", "start")
    # the validated settings are the defaults, of the command and of the config
    defaults = _parser().parse_args([])
    config = ValidationConfig(out=Path("unused"))
    assert chosen_integrator(defaults) == config.integrator == "checked"
    assert chosen_integrator(_parser().parse_args(["--pressure", "1"])) == "checked"  # NPT too
    for settings in (defaults, config):
        assert settings.frame == "centred"
        assert settings.energy_consistent and settings.adaptive_reference
    assert defaults.adaptive_tau == config.adaptive_tau_fs == 100.0
    assert config.runs_adaptive_reference and config.friction_per_ps == 1.0
    costs = [reference_calls(**PRESETS[name]) for name in ("quick", "standard", "long", "full")]
    assert costs == sorted(costs)  # long sits between standard and full
    assert reference_calls(**PRESETS["quick"], integrator="both") > costs[0]
    assert reference_calls(**PRESETS["quick"], adaptive_reference=False) < costs[0]
    assert runs.roles("checked") == (
        ("reference", "reference-2", "boostmd-checked"),
        ("nve-reference", "nve-boostmd-consistent"),
    )
    with pytest.raises(ValueError, match="integrator must be one of"):
        runs.roles("verlet")


def test_collapse_detection():
    ethanol = molecule("CH3CH2OH")
    topology = BondTopology.of(ethanol)
    assert len(topology.pairs) == 8
    frames = np.repeat(ethanol.positions[None], 4, axis=0)
    assert first_collapse(frames, topology) is None
    frames[2:, 0] += [0.0, 0.0, 0.6]  # pull the first carbon off its neighbours
    frame, reason = first_collapse(frames, topology)
    assert frame == 2 and "off its starting length" in reason
    frames[1, 3] = np.nan
    assert first_collapse(frames, topology) == (1, "non-finite positions")


@pytest.fixture(scope="module")
def models():
    """The shipped models: a random MACE would break the peptide apart within steps."""
    return MODELS_DIR / "dipeptides-reference.pt", MODELS_DIR / "dipeptides-surrogate.pt"


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    reference_path = save_mace(
        build_mace(hidden_irreps="8x0e+8x1o", dtype=torch.float32, seed=3), root / "reference.pt"
    )
    reference = MACEReference.load(reference_path)
    surrogate = Surrogate.for_reference(reference, num_channels=4, hidden_dim=16)
    return reference_path, surrogate.save(root / "surrogate.pt")


def _config(models, out, **overrides):
    reference, surrogate = models
    values = {
        "out": out,
        "peptides": ["ALA"],
        "reference": reference,
        "surrogate": surrogate,
        "steps": 20,
        "equilibration_steps": 10,
        "replicas": 2,
        "nve_steps": 10,
        "interval": 5,
        "checkpoint_every": 10,
        "temperature_K": 200.0,
        # both samplers, framed at the start: what these tests were written for (the
        # defaults, checked and centred, are run in test_validation_any_molecule.py)
        "integrator": "both",
        "frame": "start",
    }
    return ValidationConfig(**{**values, **overrides})


def test_validation_writes_report_summary_and_plots(models, tmp_path):
    (report,) = validate(_config(models, tmp_path), command="test")
    roles = ("reference", "reference-2", "reference-adaptive", "boostmd", "boostmd-checked")
    assert report["frames"] == dict.fromkeys(roles, 40)
    assert report["verdict"] in ("pass", "fail")
    assert not any(report["collapses"].values())
    metrics = {*METRICS, "reference_energy_ks"}
    assert set(report["noise_floor"]) == set(report["reference_2_vs_reference"]) == metrics
    for sampler in ("boostmd", "boostmd-checked"):
        for key in ("vs_reference", "ratio_to_noise_floor", "metric_verdicts"):
            assert set(report[key][sampler]) == metrics
        details = report["samplers"][sampler]
        assert details["verdict"] in ("pass", "fail") and details["fallbacks"] == 0
        assert details["refresh_energy_error_meV"]["all_windows"]["count"] == 2 * 6
        assert np.isfinite(details["nve"]["drift_meV_per_ps_per_atom"])
    boost, checked = report["samplers"]["boostmd"], report["samplers"]["boostmd-checked"]
    assert boost["reference_calls"] == 2 * 7  # 31 frames per replica, reference every 5th
    assert boost["surrogate_calls"] == 2 * 24
    assert boost["reference_call_speedup"] == pytest.approx(60 / 14)
    assert boost["refresh_energy_error_meV"]["frames"]["count"] == 2 * 4  # after equilibration
    # a rolled-back window of 5 steps is rerun with 5 reference calls
    assert checked["windows"] == 2 * 6
    assert checked["reference_calls"] == 2 * 7 + 5 * checked["rollbacks"]
    assert set(report["nve_drift_meV_per_ps_per_atom"]) == {
        "reference",
        "boostmd",
        "boostmd-consistent",
    }
    for groups in report["group_temperature_K"].values():
        assert 0 < groups["hydrogen"]["mean"] < 1000 and groups["heavy"]["standard_error"] > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["systems"][0]["system"] == "ALA"
    assert saved["config"]["integrator"] == "both"
    summary = (tmp_path / "summary.md").read_text()
    for metric in METRICS:
        assert f"| ALA | {metric} |" in summary
    assert "| ALA | boostmd-checked |" in summary
    for name in ("ALA-free-energy.png", "ALA-pmf.png", "ALA-bonds-temperatures.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    checkpoint = np.load(tmp_path / "checkpoints" / "ALA-boostmd-0.npz")
    assert checkpoint["bonds_xh"].shape == (31, 12) and checkpoint["bonds_xh"].dtype == np.float32
    assert checkpoint["bonds_heavy"].shape == (31, 9)
    assert np.isfinite(checkpoint["refresh_energy_error"]).sum() == 6


def test_no_nve_steps_runs_no_nve_jobs(models, tmp_path):
    """``--nve-steps 0`` skips the NVE runs (it used to fail on their missing checkpoints)."""
    config = _config(models, tmp_path, integrator="checked", replicas=1, nve_steps=0)
    (report,) = validate(config, command="test")
    assert report["nve_drift_meV_per_ps_per_atom"] == {}
    assert not list((tmp_path / "checkpoints").glob("ALA-nve-*"))
    assert report["frames"]["boostmd-checked"] == 20


def test_an_error_target_sets_the_window_lengths_and_is_checkpointed(models, tmp_path):
    config = _config(models, tmp_path, integrator="ase", replicas=1, target_refresh_error_meV=1e-9)
    (report,) = validate(config, command="test")
    checkpoint = np.load(tmp_path / "checkpoints" / "ALA-boostmd-0.npz")
    scheduled = np.flatnonzero(checkpoint["scheduled_reference"])
    # one window of --interval 5, then every window as short as allowed (2 steps)
    assert scheduled.tolist() == [0, 5, *range(7, 31, 2)]
    assert np.isfinite(checkpoint["refresh_energy_error"][scheduled[1:]]).all()
    learned = json.loads(str(checkpoint["schedule"]))
    assert learned["interval"] == 2 and learned["reports"] == len(scheduled) - 1
    assert report["samplers"]["boostmd"]["reference_calls"] == len(scheduled)
    assert "per window for 1e-09 meV RMS dE" in (tmp_path / "summary.md").read_text()


def test_interrupted_validation_resumes_to_the_same_result(
    models, tmp_path, monkeypatch, one_thread
):
    # two segments of 10 steps per sampling run; the curvature fit must resume too
    short = {"replicas": 1, "steps": 10, "calibrate": True, "batch": False}
    (uninterrupted,) = validate(_config(models, tmp_path / "a", **short))
    real_save, stopped = runs._save, set()

    def save_then_stop(path, state):  # every sampling job stops once, after its 1st segment
        real_save(path, state)
        if path.name not in stopped and not state["finished"]:
            stopped.add(path.name)
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_save", save_then_stop)
    for _ in range(5):  # reference, reference-2, reference-adaptive, boostmd, boostmd-checked
        with pytest.raises(KeyboardInterrupt):
            validate(_config(models, tmp_path / "b", **short))
    (resumed,) = validate(_config(models, tmp_path / "b", **short))
    for key in ("vs_reference", "noise_floor", "transitions", "frames", "collapses"):
        np.testing.assert_equal(resumed[key], uninterrupted[key])
    for sampler in ("boostmd", "boostmd-checked"):
        for key in ("rollbacks", "windows", "fallbacks", "surrogate_calls", "curvature_scale"):
            assert resumed["samplers"][sampler][key] == uninterrupted["samplers"][sampler][key]
    for job in ("boostmd-0", "boostmd-checked-0"):
        a = np.load(tmp_path / "a" / "checkpoints" / f"ALA-{job}.npz")
        b = np.load(tmp_path / "b" / "checkpoints" / f"ALA-{job}.npz")
        for key in (
            "phi",
            "bonds_xh",
            "refresh_energy_error",
            "positions",
            "refresh_errors",
            "refresh_force_errors",
        ):
            np.testing.assert_array_equal(a[key], b[key])
        # the curvature fit goes on from where it stopped, not from scratch
        assert json.loads(str(b["calibration"]))["windows"] == len(b["refresh_errors"])
        assert str(a["calibration"]) == str(b["calibration"])


def test_batched_runs_equal_runs_one_after_the_other_to_rounding(models, tmp_path):
    common = {"integrator": "checked", "equilibration_steps": 0, "nve_steps": 10}
    (alone,) = validate(_config(models, tmp_path / "alone", batch=False, **common))
    (together,) = validate(_config(models, tmp_path / "together", **common))
    assert together["frames"] == alone["frames"] and together["collapses"] == alone["collapses"]
    # a run's wall time in a batch includes the others' calls: no wall-clock speedup
    assert np.isnan(together["samplers"]["boostmd-checked"]["speedup"])
    assert "n/a (batched)" in (tmp_path / "together" / "summary.md").read_text()
    assert alone["samplers"]["boostmd-checked"]["speedup"] > 0
    for key in ("reference_calls", "surrogate_calls", "windows", "rollbacks"):
        assert (
            together["samplers"]["boostmd-checked"][key]
            == alone["samplers"]["boostmd-checked"][key]
        )
    for job in ("reference-0", "reference-2-1", "boostmd-checked-1", "nve-boostmd-consistent-0"):
        a = np.load(tmp_path / "alone" / "checkpoints" / f"ALA-{job}.npz")
        b = np.load(tmp_path / "together" / "checkpoints" / f"ALA-{job}.npz")
        # float32 models: batched passes add up in another order
        np.testing.assert_allclose(b["positions"], a["positions"], atol=1e-3)
        np.testing.assert_allclose(b["potential_energy"], a["potential_energy"], atol=1e-3)


def test_two_processes_give_the_same_report_as_one(models, tmp_path):
    reference, surrogate = models
    common = [
        "--peptide", "ALA", "--reference", str(reference), "--surrogate", str(surrogate),
        "--steps", "20", "--equilibration-steps", "0", "--replicas", "2", "--nve-steps", "10",
        "--interval", "5", "--checkpoint-every", "10", "--integrator", "checked", "--no-batch",
    ]  # fmt: skip
    # Both in fresh processes with one thread each: reductions add up in the same order, and
    # neither inherits this process's history (an earlier test here that ran MACE's own
    # calculator changes later results in the last bits).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [sys.executable, "-m", "boostmd.validation.validate"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    for command, out in ((single, "one"), ([*launch, "-m", "boostmd.validation.validate"], "two")):
        subprocess.run(
            [*command, *common, "--out", str(tmp_path / out)],
            check=True,
            env=env,
            capture_output=True,
        )
    one = json.loads((tmp_path / "one" / "report.json").read_text())["systems"][0]
    two = json.loads((tmp_path / "two" / "report.json").read_text())["systems"][0]
    for key in ("vs_reference", "noise_floor", "transitions", "frames", "collapses"):
        np.testing.assert_equal(one[key], two[key])


def test_a_collapse_fails_the_validation_and_says_where(random_models, tmp_path):
    (report,) = validate(_config(random_models, tmp_path, replicas=1, integrator="ase"))
    assert list(report["samplers"]) == ["boostmd"]
    (collapse,) = report["collapses"]["boostmd"]
    assert collapse["frame"] > 0 and "off its starting length" in collapse["reason"]
    # only frames before the collapse (and after the 10 equilibration steps) are samples
    assert report["frames"]["boostmd"] == max(0, collapse["frame"] - 11)
    assert report["verdict"] == report["samplers"]["boostmd"]["verdict"] == "fail"
    assert any(f.startswith("boostmd: boostmd collapsed") for f in report["failures"])


def test_bad_input_is_named(models, tmp_path):
    with pytest.raises(ValueError, match="multiple of --interval"):
        validate(_config(models, tmp_path, checkpoint_every=7))
    with pytest.raises(ValueError, match="needs its surrogate: pass --surrogate"):
        validate(_config(models, tmp_path, surrogate=None))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate(_config(models, tmp_path, peptides=[], structure=tmp_path / "missing.xyz"))
    with pytest.raises(ValueError, match="nothing to validate"):
        validate(_config(models, tmp_path, peptides=[]))
    with pytest.raises(ValueError, match="integrator must be one of"):
        validate(_config(models, tmp_path, integrator="verlet"))


@pytest.mark.slow
def test_quick_preset_with_the_shipped_models(tmp_path):
    (report,) = validate(ValidationConfig(out=tmp_path, peptides=["ALA"]))
    assert report["frames"]["reference"] == report["frames"]["reference-2"] == 2500
    assert list(report["samplers"]) == ["boostmd-checked"]  # the default sampler
    for sampler, details in report["samplers"].items():
        assert report["frames"][sampler] <= 2500
        # the verdict follows the figures (the shipped surrogate may fail: README)
        passed = (
            not report["collapses"][sampler]
            and not report["collapses"][runs.NVE_OF[sampler]]
            and not any(
                report["collapses"].get(r) for r in ("reference", "reference-2", "nve-reference")
            )
            and all(
                ratio <= TOLERANCES[metric]
                for metric, ratio in report["ratio_to_noise_floor"][sampler].items()
                if metric in METRICS and metric not in report["not_computed"][sampler]
            )
        )
        assert details["verdict"] == ("pass" if passed else "fail")
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "ALA-pmf.png").is_file()


def test_centred_frames_compare_the_reference_energy_at_the_frames(models, tmp_path):
    config = _config(models, tmp_path, integrator="ase", replicas=1, frame="centred")
    (report,) = validate(config, command="test")
    run = np.load(tmp_path / "checkpoints" / "ALA-boostmd-0.npz")
    scheduled = np.flatnonzero(run["scheduled_reference"])
    assert scheduled.tolist() == list(range(0, 31, 5))
    # after the first window the reference runs at predicted centres, not at the steps
    energy, at_frame = run["potential_energy"], run["reference_energy"]
    assert energy[0] == at_frame[0]
    assert not np.isclose(energy[scheduled[1:]], at_frame[scheduled[1:]]).any()
    surrogate_steps = np.setdiff1d(np.arange(len(energy)), scheduled)
    np.testing.assert_array_equal(energy[surrogate_steps], at_frame[surrogate_steps])
    # so the validation calls the reference itself at every interval-th frame's positions
    audited = np.flatnonzero(run["audited"])
    assert audited.tolist() == list(range(0, len(energy), 5))
    assert run["audited_energy"][0] == pytest.approx(at_frame[0], abs=1e-5)  # the start
    assert np.isnan(np.delete(run["audited_energy"], audited)).all()
    assert np.isfinite(run["reference_force_sq"][audited]).all()
    assert np.isnan(np.delete(run["reference_force_sq"], audited, axis=0)).all()
    # and judges the energies and the configurational temperatures there
    skip = config.settings().equilibration_steps
    kept = audited[audited >= skip]
    ours = runs.job_result(runs.Job("ALA", "boostmd", 0), dict(run))
    expected = run["audited_energy"][kept]
    np.testing.assert_array_equal(_energy_frames([ours], skip, 5), expected)
    assert np.isfinite(report["vs_reference"]["boostmd"]["reference_energy_w1_meV"])
    assert recorded([ours])
    hydrogens = force_series([ours], "hydrogen", skip, 5)[0]
    np.testing.assert_array_equal(hydrogens, run["reference_force_sq"][kept, 0])


def test_centred_frames_need_a_fixed_interval_and_no_calibration(models, tmp_path):
    for overrides, given in (
        ({"target_refresh_error_meV": 13.0}, "--target-error"),
        ({"calibrate": True}, "--calibrate"),
    ):
        with pytest.raises(ValueError, match=f"{given} needs --frame start"):
            _config(models, tmp_path, frame="centred", **overrides).settings()
        # the default frame is centred: the option alone asks for --frame start
        with pytest.raises(ValueError, match="--frame centred \\(the default\\)"):
            ValidationConfig(out=tmp_path, **overrides).settings()
        assert ValidationConfig(out=tmp_path, frame="start", **overrides).settings()


def test_reference_runs_are_stored_once_and_reused_when_everything_matches(models, tmp_path):
    from boostmd.forcefields.peptides import capped_dipeptide
    from boostmd.validation.stored import ANGLE_QUANTUM, BOND_QUANTUM, load_run, run_key

    store = tmp_path / "store"
    small = {"replicas": 1, "batch": False, "reference_runs": store}
    only = _config(models, tmp_path / "a", integrator="none", store_reference_runs=True, **small)
    (references_only,) = validate(only)
    assert references_only["verdict"] == "no sampler"
    # reference, reference-2, reference-adaptive, nve-reference
    assert len(list(store.glob("ALA-*.npz"))) == 4
    # storing again runs only what the store lacks: nothing
    again = _config(models, tmp_path / "d", integrator="none", store_reference_runs=True, **small)
    validate(again)
    assert not list((tmp_path / "d" / "checkpoints").glob("*.npz"))
    (reused,) = validate(_config(models, tmp_path / "b", integrator="checked", **small))
    made = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("*.npz"))
    assert made == ["ALA-boostmd-checked-0.npz", "ALA-nve-boostmd-consistent-0.npz"]
    # the stored runs are the runs: the same floors as from the runs' own checkpoints
    (own,) = validate(_config(models, tmp_path / "a", integrator="checked", **small))
    for metric, floor in own["noise_floor"].items():
        quantum = {"bond": 1000 * BOND_QUANTUM, "angle": ANGLE_QUANTUM}  # as stored
        tolerance = next((q for kind, q in quantum.items() if kind in metric), 1e-6)
        assert reused["noise_floor"][metric] == pytest.approx(floor, abs=tolerance, nan_ok=True)
    # another temperature, model or structure is another run: not taken from the store
    config = _config(models, tmp_path / "c", integrator="checked", **small)
    job, atoms = runs.Job("ALA", "reference", 0), capped_dipeptide("ALA")
    fingerprint = MACEReference.load(models[0]).fingerprint
    key = run_key(job, atoms, fingerprint, config.settings())
    assert load_run(store, key) is not None
    warmer = replace(config, temperature_K=250.0).settings()
    assert load_run(store, run_key(job, atoms, fingerprint, warmer)) is None
    assert load_run(store, run_key(job, atoms, "another model", config.settings())) is None
    # the reference-adaptive run is integrated with the adaptive friction, keyed by its tau
    adaptive = load_run(
        store,
        run_key(runs.Job("ALA", "reference-adaptive", 0), atoms, fingerprint, config.settings()),
    )
    assert adaptive["adaptive_friction"].shape == (31, len(atoms))
    assert np.abs(adaptive["adaptive_friction"][1:]).min() > 0
    slower = replace(config, adaptive_tau_fs=50.0).settings()
    adaptive_job = runs.Job("ALA", "reference-adaptive", 0)
    assert load_run(store, run_key(adaptive_job, atoms, fingerprint, slower)) is None
    assert load_run(store, run_key(job, atoms, fingerprint, slower)) is not None
    atoms.positions[0] += 0.01
    assert load_run(store, run_key(job, atoms, fingerprint, config.settings())) is None


def test_forces_at_predicted_centres_are_no_samples_of_the_configurational_temperature():
    from boostmd.dynamics.stability import BondTopology
    from boostmd.forcefields.peptides import capped_dipeptide

    atoms = capped_dipeptide("ALA")
    recorder = runs._Recorder(atoms, BondTopology.of(atoms))
    forces = np.random.default_rng(0).normal(size=(len(atoms), 3))
    hydrogen = atoms.numbers == 1
    at_frame = recorder._reference_force_sq({"forces": forces}, "reference", centred=False)
    expected = [np.sum(forces[group] ** 2, axis=1).mean() for group in (hydrogen, ~hydrogen)]
    np.testing.assert_allclose(at_frame, expected)
    at_centre = {"forces": forces, "boostmd_reference_energy": -1.0}
    assert np.isnan(recorder._reference_force_sq(at_centre, "reference", centred=True)).all()
    # a centred run's reference calls at its own positions (reruns, fallbacks) are picked
    # by the surrogate's error: no samples either
    assert np.isnan(recorder._reference_force_sq({"forces": forces}, "reference", True)).all()
    assert np.isnan(recorder._reference_force_sq({"forces": forces}, "surrogate", False)).all()


def test_a_checkpoint_from_another_starting_structure_is_not_resumed(reference, tmp_path):
    from boostmd.forcefields.peptides import capped_dipeptide
    from boostmd.validation.dihedrals import backbone_dihedrals

    atoms = capped_dipeptide("ALA")
    dihedrals = backbone_dihedrals(atoms)
    settings = runs.MDSettings(300.0, 1.0, 1.0, 3, 0, 0, 2, 2, 0, adaptive_tau_fs=None)
    job = runs.Job("ALA", "reference", 0)
    done = runs.run_job(job, atoms, dihedrals, reference, None, settings, tmp_path)
    moved = atoms.copy()
    moved.positions[0] += 0.05
    with pytest.raises(ValueError, match="another starting structure"):
        runs.run_job(job, moved, dihedrals, reference, None, settings, tmp_path)
    again = runs.run_job(job, atoms, dihedrals, reference, None, settings, tmp_path)
    np.testing.assert_array_equal(again["phi"], done["phi"])


def test_adaptive_friction_by_element_shows_energy_moved_between_elements():
    # water: the thermostat cools the hydrogens (xi > 0) and heats the oxygen (xi < 0)
    xi = np.array([[-0.6, 0.3, 0.4], [-0.6, 0.3, 0.4]])
    runs = [{"adaptive_friction": np.vstack([np.full((2, 3), 9.0), xi])}] * 2
    stats = adaptive_friction_stats(runs, skip=2, numbers=[8, 1, 1])
    assert stats["by_element"] == pytest.approx({"H": 0.35, "O": -0.6})
    assert stats["atom"] == 0 and stats["largest_mean"] == pytest.approx(-0.6)
    assert "by_element" not in adaptive_friction_stats(runs, skip=2)
    assert adaptive_friction_stats([{}], skip=0) == {}
