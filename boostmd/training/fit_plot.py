"""The fit's report as a picture: errors by step, reruns by round, bonds, speed."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["plot_fit_report"]

GROUPS = {"xh": "X-H bonds", "heavy": "heavy-atom bonds"}


def _errors_by_k(ax, report: dict) -> None:
    forces = report["validation_force_rmse_meV_per_A_by_k"]
    energies = report["validation_energy_rmse_meV_by_k"]
    if not forces:
        ax.set_title("no training metrics")
        return
    ks = [int(k) for k in forces]
    ax.plot(ks, list(forces.values()), "o-", label="force RMSE (meV/Å)")
    ax.plot(ks, list(energies.values()), "s-", label="energy RMSE (meV)")
    ax.axvline(report["interval"], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="steps since the reference frame, k", title="held-out error by step")
    ax.legend(fontsize=7)


def _reruns(ax, report: dict) -> None:
    rounds = report["rounds"]
    names = [c["structure"] for c in rounds[0]["checks"]]
    for name in names:
        fractions = [
            100 * next(c["rerun_fraction"] for c in r["checks"] if c["structure"] == name)
            for r in rounds
        ]
        ax.plot(range(1, len(rounds) + 1), fractions, "o-", label=name)
    ax.axhline(100 * report["config"]["target_rerun_fraction"], color="grey", ls="--")
    ax.set(xlabel="round", ylabel="windows rerun (%)", title="check runs")
    ax.set_xticks(range(1, len(rounds) + 1))
    ax.legend(fontsize=7)


def _bonds(ax, check: dict, group: str) -> None:
    histogram = check["histograms"].get(group)
    if histogram is None:
        ax.set_title(f"{check['structure']}: no {GROUPS[group]}")
        return
    edges = histogram["edges"]
    centres = [(a + b) / 2 for a, b in pairwise(edges)]
    ax.plot(centres, histogram["reference"], color="k", label="reference MD")
    if "exact" in histogram:
        ax.plot(centres, histogram["exact"], color="grey", ls="--", label="reference, as checked")
    ax.plot(centres, histogram["run"], color="C3", label=f"BoostMD, N = {check['interval']}")
    title = f"{check['structure']} {GROUPS[group]}: spread {check['spreads'][group]['ratio']:.3f}x"
    if "stiffness" in check:
        title += f", stiffness {check['stiffness'][group]:.3f}x"
    ax.set(xlabel="length - reference mean (Å)", title=title)
    ax.legend(fontsize=7)


def plot_fit_report(path: Path, report: dict) -> None:
    """Draw a fit's ``report.json`` into ``path`` (a PNG)."""
    checks = report["rounds"][-1]["checks"]
    for extra in report["shorter_interval_checks"]:
        if extra["interval"] == report["interval"]:
            checks = extra["checks"]
    rows = 1 + len(checks)
    fig = Figure(figsize=(10, 3.2 * rows))
    axes = fig.subplots(rows, 2, squeeze=False)
    _errors_by_k(axes[0, 0], report)
    _reruns(axes[0, 1], report)
    for row, check in enumerate(checks, start=1):
        for column, group in enumerate(GROUPS):
            _bonds(axes[row, column], check, group)
    speedup = report["speedup"]
    title = f"fit: N = {report['interval']}"
    if speedup:
        title += (
            f", {speedup['speedup']:.1f}x faster than the reference alone "
            f"({speedup['structure']}, every call counted)"
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
