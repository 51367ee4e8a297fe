"""Plots of a validation: free-energy surfaces side by side, PMFs with the noise floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from boostmd.sampling import free_energy_surface, pmf, ramachandran_histogram

__all__ = ["plot_free_energy_surfaces", "plot_pmfs"]

LABELS = {"reference": "reference", "reference-2": "reference, 2nd run", "boostmd": "BoostMD"}
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
        for role, style in (("reference", "k-"), ("reference-2", "k:"), ("boostmd", "C3-")):
            ax.plot(centres, curves[role][1], style, label=LABELS[role])
        ax.set(xlabel=f"{name} (degrees)", ylabel="PMF (kT)", xlim=(-180, 180))
        ax.set_xticks(range(-180, 181, 90))
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
