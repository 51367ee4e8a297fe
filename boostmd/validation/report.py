"""From the runs of a validation to its verdict: metrics, noise floor, JSON and Markdown.

BoostMD is compared with a reference run, and so is a second, independent reference run
of the same length from the same starting structures: that second comparison is the
**noise floor**, how far the reference differs from itself with this much sampling.
BoostMD passes on a metric when it is within ``tolerance`` (1.5) times the noise floor.
"""

from __future__ import annotations

import math

import numpy as np

from boostmd.sampling import count_transitions, jensen_shannon, pmf_error, ramachandran_histogram
from boostmd.validation.runs import SAMPLING_ROLES

__all__ = ["METRICS", "summary_markdown", "system_report"]

METRICS = ("jsd", "pmf_phi_kT", "pmf_psi_kT")


def _pooled(results: list[dict], role: str, skip: int) -> tuple[np.ndarray, np.ndarray]:
    runs = [r for r in results if r["job"].role == role]
    phi = np.concatenate([r["phi"][skip:] for r in runs])
    psi = np.concatenate([r["psi"][skip:] for r in runs])
    return phi, psi


def _compare(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], bins: int):
    return {
        "jsd": jensen_shannon(ramachandran_histogram(*a, bins), ramachandran_histogram(*b, bins)),
        "pmf_phi_kT": pmf_error(a[0], b[0], bins),
        "pmf_psi_kT": pmf_error(a[1], b[1], bins),
    }


def _drift_meV_per_ps(result: dict, timestep_fs: float, atoms: int) -> float:
    """Slope of the total energy (meV/ps per atom); BoostMD: at reference frames only."""
    keep = (
        result["is_reference"]
        if result["job"].uses_boostmd
        else np.ones_like(result["energy"], dtype=bool)
    )
    time_ps = np.flatnonzero(keep) * timestep_fs / 1000
    if len(time_ps) < 2:
        return float("nan")
    slope = np.polyfit(time_ps, result["energy"][keep], 1)[0]
    return 1000 * float(slope) / atoms


def system_report(
    system: str,
    results: list[dict],
    settings,
    atoms: int,
    bins: int = 36,
    tolerance: float = 1.5,
) -> dict:
    """Metrics, noise floor and verdict of one system.

    Parameters
    ----------
    system
        Name of the system.
    results
        Every job result of this system (:func:`~boostmd.validation.runs.run_job`).
    settings
        The :class:`~boostmd.validation.runs.MDSettings` of the runs.
    atoms
        Number of atoms (for per-atom drifts).
    bins
        Histogram bins per angle (36: 10 degrees).
    tolerance
        A metric passes at most ``tolerance`` times its noise floor.
    """
    skip = settings.equilibration_steps + 1
    samples = {role: _pooled(results, role, skip) for role in SAMPLING_ROLES}
    boost = _compare(samples["reference"], samples["boostmd"], bins)
    floor = _compare(samples["reference"], samples["reference-2"], bins)
    ratios = {m: boost[m] / floor[m] if floor[m] > 0 else math.nan for m in METRICS}
    by_role = {role: [r for r in results if r["job"].role == role] for role in samples}
    collapses = {
        role: [
            {"replica": r["job"].replica, "frame": r["collapse"][0], "reason": r["collapse"][1]}
            for r in runs
            if r["collapse"] is not None
        ]
        for role, runs in by_role.items()
    }
    failures = [
        f"{m} is {ratios[m]:.2f}x the noise floor" for m in METRICS if not ratios[m] <= tolerance
    ]
    failures += [
        f"BoostMD collapsed ({c['reason']}, replica {c['replica']})" for c in collapses["boostmd"]
    ]

    def per_step(role: str) -> float:
        runs = by_role[role]
        return sum(r["seconds"] for r in runs) / max(sum(r["steps"] for r in runs), 1)

    nve = {r["job"].role: r for r in results if r["job"].role.startswith("nve")}
    boost_runs = by_role["boostmd"]
    return {
        "system": system,
        "frames": {role: len(phi) for role, (phi, _) in samples.items()},
        "transitions": {
            role: int(sum(count_transitions(r["phi"][skip:], r["psi"][skip:]) for r in runs))
            for role, runs in by_role.items()
        },
        "boostmd_vs_reference": boost,
        "noise_floor": floor,
        "ratio_to_noise_floor": ratios,
        "tolerance": tolerance,
        "collapses": collapses,
        "mean_temperature_K": {
            role: float(np.mean(np.concatenate([r["temperature"][skip:] for r in runs])))
            for role, runs in by_role.items()
        },
        "nve_drift_meV_per_ps_per_atom": {
            role.removeprefix("nve-"): _drift_meV_per_ps(r, settings.timestep_fs, atoms)
            for role, r in nve.items()
        },
        "reference_calls": int(sum(r["reference_calls"] for r in boost_runs)),
        "surrogate_calls": int(sum(r["surrogate_calls"] for r in boost_runs)),
        "speedup": per_step("reference") / per_step("boostmd"),
        "verdict": "pass" if not failures else "fail",
        "failures": failures,
    }


def summary_markdown(reports: list[dict], settings, command: str) -> str:
    """Format a short Markdown summary: one table row per metric and system, then the details."""
    lines = [
        "# BoostMD sampling validation",
        "",
        f"Langevin MD at {settings.temperature_K:g} K, timestep {settings.timestep_fs:g} fs, "
        f"friction {settings.friction_per_ps:g}/ps, {settings.steps} steps per run after "
        f"{settings.equilibration_steps} of equilibration; BoostMD interval "
        f"N = {settings.interval}. Noise floor: a second, independent reference run of the "
        "same length from the same starts.",
        "",
        f"Command: `{command}`",
        "",
        "| system | metric | BoostMD vs reference | noise floor | ratio | verdict | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for metric in METRICS:
            lines.append(
                f"| {report['system']} | {metric} | {report['boostmd_vs_reference'][metric]:.4f} "
                f"| {report['noise_floor'][metric]:.4f} "
                f"| {report['ratio_to_noise_floor'][metric]:.2f} | {report['verdict']} "
                f"| {report['speedup']:.1f}x |"
            )
    lines.append("")
    for report in reports:
        transitions = ", ".join(f"{k} {v}" for k, v in report["transitions"].items())
        drift = ", ".join(
            f"{k} {v:.3f}" for k, v in report["nve_drift_meV_per_ps_per_atom"].items()
        )
        temperature = ", ".join(f"{k} {v:.0f} K" for k, v in report["mean_temperature_K"].items())
        lines += [
            f"## {report['system']}: {report['verdict']}",
            "",
            f"- basin transitions: {transitions}",
            f"- mean temperature: {temperature}",
            f"- NVE energy drift (meV/ps/atom): {drift}",
            f"- BoostMD calls: {report['reference_calls']} reference, "
            f"{report['surrogate_calls']} surrogate",
        ]
        lines += [f"- **{failure}**" for failure in report["failures"]]
        lines.append("")
    return "\n".join(lines)
