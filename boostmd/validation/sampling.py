"""Do two sets of samples come from the same distribution? Metrics and their units.

All angles are in degrees on (-180, 180]; free energies are in units of kT.

- :func:`ramachandran_histogram`: normalised 2-D histogram of (phi, psi).
- :func:`jensen_shannon`: Jensen-Shannon divergence of two histograms, in nats
  (0 for equal distributions, at most ln 2).
- :func:`pmf_error`: RMS difference of two 1-D potentials of mean force ``-ln p`` over
  the bins both runs sample well, after removing the arbitrary constant offset.
- :func:`count_transitions`: crossings between conformational basins (core to core), how
  much of the landscape a run has actually explored.

Observables that converge in picoseconds (any unit; the caller scales):

- :func:`wasserstein`: Wasserstein-1 (earth mover's) distance of two 1-D samples, in the
  samples' unit; :func:`ks_statistic`: the two-sample Kolmogorov-Smirnov statistic.
- :func:`block_standard_error`: standard error of the mean of correlated time series by
  block averaging (Flyvbjerg and Petersen, J. Chem. Phys. 91, 461, 1989).
- :func:`mean_difference_floor`: the noise floor of a difference of two means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BASINS",
    "block_standard_error",
    "count_transitions",
    "free_energy_surface",
    "jensen_shannon",
    "ks_statistic",
    "mean_difference_floor",
    "pmf",
    "pmf_error",
    "ramachandran_histogram",
    "wasserstein",
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


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance of two 1-D samples (their unit); ``nan`` if either is empty.

    >>> wasserstein(np.array([0.0, 1.0]), np.array([0.5, 1.5]))
    0.5
    """
    from scipy.stats import wasserstein_distance

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if not len(a) or not len(b):
        return float("nan")
    return float(wasserstein_distance(a, b))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (0 to 1); ``nan`` if either sample is empty."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if not len(a) or not len(b):
        return float("nan")
    return float(ks_2samp(a, b).statistic)


def _series(series: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(series, np.ndarray) and series.ndim == 1:
        return [np.asarray(series, dtype=float)]
    return [np.asarray(s, dtype=float).ravel() for s in series]


def block_standard_error(series: np.ndarray | Sequence[np.ndarray], min_blocks: int = 8) -> float:
    """Estimate the standard error of the mean of correlated series by block averaging.

    Each series (a replica) is cut into blocks of 1, 2, 4, ... frames; the block means of
    all series together give an estimate ``std(block means) / sqrt(blocks)`` for each
    block length with at least ``min_blocks`` blocks, and the largest estimate is
    returned (the plateau, or an upper bound of it when the runs are too short to reach
    it). For uncorrelated data this is about the naive ``std / sqrt(n)``; for correlated
    data it is larger.

    Parameters
    ----------
    series
        One 1-D time series, or a sequence of them (independent replicas).
    min_blocks
        Fewest blocks an estimate may rest on.

    Returns
    -------
    float
        The standard error, or ``nan`` with fewer than ``min_blocks`` frames in all.
    """
    runs = [run[np.isfinite(run)] for run in _series(series)]
    best, length = math.nan, 1
    while True:
        means = np.concatenate(
            [run[: len(run) // length * length].reshape(-1, length).mean(axis=1) for run in runs]
        )
        if len(means) < max(min_blocks, 2):
            return best
        estimate = float(means.std(ddof=1) / math.sqrt(len(means)))
        best = estimate if math.isnan(best) else max(best, estimate)
        length *= 2


def mean_difference_floor(
    a: np.ndarray | Sequence[np.ndarray], b: np.ndarray | Sequence[np.ndarray]
) -> tuple[float, float, float]:
    """Noise floor of the difference of the means of two runs (each one or more series).

    One pair of short runs can agree by chance, so the floor is the larger of the observed
    difference and twice its standard error:
    ``max(|mean(b) - mean(a)|, 2 sqrt(se(a)^2 + se(b)^2))`` with
    :func:`block_standard_error` per run.

    Returns
    -------
    floor, difference, standard_error
        The floor, ``|mean(b) - mean(a)|`` and the standard error of that difference
        (``nan`` where a run is too short to estimate it, and then the floor is ``nan``).
    """
    values_a, values_b = np.concatenate(_series(a)), np.concatenate(_series(b))
    if not len(values_a) or not len(values_b):
        return math.nan, math.nan, math.nan
    difference = abs(float(np.nanmean(values_b)) - float(np.nanmean(values_a)))
    error = math.hypot(block_standard_error(a), block_standard_error(b))
    return max(difference, 2 * error) if not math.isnan(error) else math.nan, difference, error
