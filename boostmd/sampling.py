"""Do two sets of phi/psi samples come from the same distribution? Metrics and their units.

All angles are in degrees on (-180, 180]; free energies are in units of kT.

- :func:`ramachandran_histogram`: normalised 2-D histogram of (phi, psi).
- :func:`jensen_shannon`: Jensen-Shannon divergence of two histograms, in nats
  (0 for equal distributions, at most ln 2).
- :func:`pmf_error`: RMS difference of two 1-D potentials of mean force ``-ln p`` over
  the bins both runs sample well, after removing the arbitrary constant offset.
- :func:`count_transitions`: crossings between conformational basins (core to core), how
  much of the landscape a run has actually explored.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BASINS",
    "count_transitions",
    "free_energy_surface",
    "jensen_shannon",
    "pmf",
    "pmf_error",
    "ramachandran_histogram",
]

ANGLE_RANGE = (-180.0, 180.0)

# Cores of the backbone basins (phi range, psi range), degrees. Frames outside every core
# keep the last basin, so recrossings of a barrier top are not counted as transitions.
BASINS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "beta/C7eq": ((-180.0, -30.0), (50.0, 180.0)),
    "alpha_R": ((-180.0, -30.0), (-120.0, 20.0)),
    "alpha_L/C7ax": ((30.0, 180.0), (-180.0, 180.0)),
}


def ramachandran_histogram(phi: np.ndarray, psi: np.ndarray, bins: int = 36) -> np.ndarray:
    """Normalised 2-D histogram of (phi, psi), shape ``(bins, bins)``, summing to 1."""
    counts, _, _ = np.histogram2d(phi, psi, bins=bins, range=[ANGLE_RANGE, ANGLE_RANGE])
    return counts / max(counts.sum(), 1)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) of two histograms of the same shape.

    >>> round(jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])), 6)  # ln 2
    0.693147
    """
    p = np.asarray(p, dtype=float).ravel()
    q = np.asarray(q, dtype=float).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / m[mask])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def pmf(angles: np.ndarray, bins: int = 36) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D potential of mean force ``-ln p`` in kT (minimum 0; ``inf`` where unsampled).

    Returns
    -------
    centres, free_energy, counts
        Bin centres (degrees), PMF per bin (kT) and the number of samples per bin.
    """
    counts, edges = np.histogram(angles, bins=bins, range=ANGLE_RANGE)
    with np.errstate(divide="ignore"):
        free_energy = -np.log(counts / max(counts.sum(), 1))
    finite = np.isfinite(free_energy)
    if finite.any():
        free_energy -= free_energy[finite].min()
    return 0.5 * (edges[1:] + edges[:-1]), free_energy, counts


def pmf_error(a: np.ndarray, b: np.ndarray, bins: int = 36, min_count: int = 20) -> float:
    """RMS difference (kT) of the PMFs of two angle samples over well-sampled bins.

    A bin counts when both samples hold at least ``min_count`` frames in it. The PMFs are
    aligned by their mean difference over those bins (a PMF is defined up to a constant).
    Returns ``nan`` when fewer than two bins qualify.
    """
    _, fa, ca = pmf(a, bins)
    _, fb, cb = pmf(b, bins)
    good = (ca >= min_count) & (cb >= min_count)
    if good.sum() < 2:
        return float("nan")
    difference = fa[good] - fb[good]
    return float(np.sqrt(np.mean((difference - difference.mean()) ** 2)))


def free_energy_surface(histogram: np.ndarray) -> np.ndarray:
    """``-ln p`` of a 2-D histogram in kT, minimum 0, ``nan`` where unsampled."""
    with np.errstate(divide="ignore"):
        surface = -np.log(histogram)
    surface[~np.isfinite(surface)] = np.nan
    return surface - np.nanmin(surface)


def _basin_labels(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    labels = np.full(len(phi), -1)
    for index, ((phi_lo, phi_hi), (psi_lo, psi_hi)) in enumerate(BASINS.values()):
        inside = (phi >= phi_lo) & (phi <= phi_hi) & (psi >= psi_lo) & (psi <= psi_hi)
        labels[inside & (labels < 0)] = index
    return labels


def count_transitions(phi: np.ndarray, psi: np.ndarray) -> int:
    """Count the moves from one basin core (:data:`BASINS`) into another.

    >>> count_transitions(np.array([-70, -70, -70, 60, -70]), np.array([150, 0, 100, 0, 0]))
    4
    """
    labels = _basin_labels(np.asarray(phi), np.asarray(psi))
    visited = labels[labels >= 0]
    return int(np.count_nonzero(visited[1:] != visited[:-1]))
