"""Plots of a validation: free-energy surfaces, PMFs, bond lengths and group temperatures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from boostmd.validation.sampling import free_energy_surface, pmf, ramachandran_histogram

__all__ = [
    "plot_against_reference",
    "plot_bonds_and_temperatures",
    "plot_free_energy_surfaces",
    "plot_pmfs",
]

LABELS = {
    "reference": "reference",
    "reference-2": "reference, 2nd run",
    "reference-adaptive": "reference, adaptive friction",
    "boostmd": "BoostMD (ASE Langevin)",
    "boostmd-checked": "BoostMD (checked windows)",
}
STYLES = {
    "reference": "k-",
    "reference-2": "k:",
    "reference-adaptive": "C2-",
    "boostmd": "C3-",
    "boostmd-checked": "C0-",
}


def _colour(role: str) -> str:
    return STYLES.get(role, "C1-")[:-1]


CEILING_KT = 8.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_free_energy_surfaces(path: Path, samples: dict, title: str, bins: int = 36) -> None:
    """One panel per run: ``-ln p(phi, psi)`` in kT, white where never visited."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(4.6 * len(samples), 4.4), sharey=True)
    extent = (-180, 180, -180, 180)
    for ax, (role, (phi, psi)) in zip(np.atleast_1d(axes), samples.items()):
        surface = free_energy_surface(ramachandran_histogram(phi, psi, bins))
        image = ax.imshow(
            np.minimum(surface, CEILING_KT).T,
            origin="lower",
            extent=extent,
            cmap="viridis",
            vmin=0,
            vmax=CEILING_KT,
        )
        ax.set(title=LABELS.get(role, role), xlabel="phi (degrees)")
        ax.set_xticks(range(-180, 181, 90))
        ax.set_yticks(range(-180, 181, 90))
    np.atleast_1d(axes)[0].set_ylabel("psi (degrees)")
    fig.colorbar(image, ax=axes, label="free energy (kT)", shrink=0.85)
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_pmfs(path: Path, samples: dict, title: str, bins: int = 36) -> None:
    """PMFs along phi and psi; the band between the two reference runs is the noise floor."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (ax, name) in enumerate(zip(axes, ("phi", "psi"))):
        curves = {role: pmf(angles[axis], bins) for role, angles in samples.items()}
        centres = curves["reference"][0]
        low = np.fmin(curves["reference"][1], curves["reference-2"][1])
        high = np.fmax(curves["reference"][1], curves["reference-2"][1])
        finite = np.isfinite(low) & np.isfinite(high)
        ax.fill_between(
            centres,
            np.where(finite, low, np.nan),
            np.where(finite, high, np.nan),
            color="0.8",
            label="reference noise floor",
        )
        for role, curve in curves.items():
            ax.plot(centres, curve[1], STYLES.get(role, "-"), label=LABELS.get(role, role))
        ax.set(xlabel=f"{name} (degrees)", ylabel="PMF (kT)", xlim=(-180, 180))
        ax.set_xticks(range(-180, 181, 90))
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bonds_and_temperatures(
    path: Path, bonds: dict, temperatures: dict, target_K: float, title: str, bins: int = 80
) -> None:
    """Plot bond-length histograms and the kinetic temperature per element group.

    One histogram per run of the X-H and of the heavy-atom bond lengths (all bonds of a
    kind pooled), and the mean temperature of hydrogens and heavy atoms with error bars.

    Parameters
    ----------
    path
        PNG to write.
    bonds
        Role to ``(X-H lengths, heavy-atom lengths)`` in Å (1-D, pooled).
    temperatures
        Role to ``{"hydrogen": {"mean", "standard_error"}, "heavy": {...}}`` in K.
    target_K
        The thermostat temperature (a dashed line).
    title
        Figure title.
    bins
        Histogram bins.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, kind, index in zip(axes[:2], ("X-H bonds", "heavy-atom bonds"), (0, 1)):
        pooled = [lengths[index] for lengths in bonds.values() if len(lengths[index])]
        if not pooled:
            ax.set(title=f"{kind}: none")
            continue
        edges = np.histogram_bin_edges(np.concatenate(pooled), bins=bins)
        for role, lengths in bonds.items():
            if len(lengths[index]):
                ax.hist(
                    lengths[index],
                    bins=edges,
                    density=True,
                    histtype="step",
                    color=_colour(role),
                    linestyle=":" if role == "reference-2" else "-",
                    label=LABELS.get(role, role),
                )
        ax.set(title=kind, xlabel="length (Å)", ylabel="density")
    axes[0].legend(fontsize=8)
    ax = axes[2]
    width = 0.8 / max(len(temperatures), 1)
    for offset, (role, groups) in enumerate(temperatures.items()):
        means = [groups[g]["mean"] for g in ("hydrogen", "heavy")]
        errors = [np.nan_to_num(groups[g]["standard_error"]) for g in ("hydrogen", "heavy")]
        ax.bar(
            np.arange(2) + (offset - (len(temperatures) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            color=_colour(role),
            alpha=0.5 if role == "reference-2" else 0.9,
            label=LABELS.get(role, role),
        )
    ax.axhline(target_K, color="0.4", linestyle="--", linewidth=1)
    ax.set_xticks(range(2))
    ax.set_xticklabels(["hydrogens", "heavy atoms"])
    ax.set(ylabel="kinetic temperature (K)", title="equipartition (block-averaged error)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_against_reference(path: Path, observables: dict, title: str, bins: int = 60) -> None:
    """Plot a run's bond lengths, reference energies and phi/psi over the reference's.

    Four panels: the X-H and the heavy-atom bond lengths (every bond of a kind pooled),
    the reference's potential energy at the frames (relative to the reference run's
    mean) and every frame's phi and psi.

    Parameters
    ----------
    path
        PNG to write.
    observables
        Role (``reference`` first, ``reference-2`` optional, then the run shown) to the
        arrays of :func:`boostmd.validation.report.sampled_observables`.
    title
        Figure title.
    bins
        Histogram bins.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    offset = float(np.mean(observables["reference"]["reference_energy"]))
    panels = (
        ("bonds_xh", "X-H bond lengths", "length (Å)", 1.0, 0.0),
        ("bonds_heavy", "heavy-atom bond lengths", "length (Å)", 1.0, 0.0),
        (
            "reference_energy",
            "reference energy at the frames",
            "energy - reference mean (meV)",
            1000.0,
            offset,
        ),
    )
    for ax, (key, name, unit, scale, shift) in zip(axes.ravel(), panels):
        values = {role: scale * (obs[key] - shift) for role, obs in observables.items()}
        pooled = np.concatenate([v for v in values.values() if len(v)])
        fewest = min(len(v) for v in values.values() if len(v))
        count = int(min(bins, max(10, 2 * np.sqrt(fewest))))  # bins the smallest sample fills
        edges = np.histogram_bin_edges(pooled, bins=count, range=np.percentile(pooled, [0.1, 99.9]))
        for role, value in values.items():
            if len(value):
                ax.hist(
                    value,
                    bins=edges,
                    density=True,
                    histtype="stepfilled" if role == "reference" else "step",
                    color="0.75" if role == "reference" else _colour(role),
                    linestyle=":" if role == "reference-2" else "-",
                    linewidth=1.4,
                    label=f"{LABELS.get(role, role)} ({len(value):,} samples)",
                )
        ax.set(title=name, xlabel=unit, ylabel="density")
        ax.legend(fontsize=7)
    ax = axes[1, 1]
    for role, obs in observables.items():
        if role != "reference-2":
            ax.plot(
                obs["phi"],
                obs["psi"],
                ".",
                markersize=1.5 if role == "reference" else 1.0,
                color="0.7" if role == "reference" else _colour(role),
                alpha=0.3 if role == "reference" else 0.6,
                label=LABELS.get(role, role),
            )
    ax.set(
        title="phi/psi: every frame",
        xlabel="phi (degrees)",
        ylabel="psi (degrees)",
        xlim=(-180, 180),
        ylim=(-180, 180),
        xticks=range(-180, 181, 90),
        yticks=range(-180, 181, 90),
    )
    ax.legend(fontsize=7, markerscale=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
