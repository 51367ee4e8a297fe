"""How often the verdict fails a sampler that is exact: its false-alarm rate.

The verdict (:func:`boostmd.validation.report.system_report`) compares a sampler with
the reference run and divides by a noise floor, the larger of two other exact runs'
distances from the reference. Each of those distances is one draw of a noisy quantity,
so the ratio scatters even when the sampler is exact, and a tolerance has to be wide
enough for that scatter. This module measures it on runs of the exact model alone.

Given ``n`` independent replicas of the exact model (the validation's ``reference``,
``reference-2`` and ``reference-adaptive`` replicas, each a sample on its own), every
assignment of one replica as the sampler, one as the reference and two as the floor runs
is a verdict on an exact sampler: ``n (n - 1) (n - 2) (n - 3) / 2`` of them (180 for six
replicas). They are not independent (they share replicas), so the rates are estimates,
and a replica is a smaller sample than a validation's role, which pools its replicas;
the ratio of two distances, each set by the sampling noise, depends little on the sample
size (checked on 3 and 20 ps runs, ``benchmarks/validation_false_alarms.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from boostmd.validation.report import metric_tolerance, noise_floor

__all__ = ["false_alarm_rates", "null_ratios"]


def null_ratios(
    runs: list[dict],
    metrics: list[str],
    skip: int,
    interval: int,
    temperature_K: float,
    bins: int = 36,
) -> dict[str, np.ndarray]:
    """Ratio to the noise floor of every metric in every verdict on an exact replica.

    Parameters
    ----------
    runs
        Job results of independent runs of the exact model (one replica each), at least 4.
    metrics
        The metrics to judge (:data:`boostmd.validation.report.METRICS`).
    skip, interval, temperature_K, bins
        As for :func:`boostmd.validation.report.compare_runs`.

    Returns
    -------
    dict of str to numpy.ndarray
        Metric name to its ratios, one per assignment (sampler, reference, two floor runs),
        in the same order for every metric.
    """
    if len(runs) < 4:
        raise ValueError(f"false-alarm rates need at least 4 exact runs, got {len(runs)}")
    pairs = {}
    for first, second in itertools.permutations(range(len(runs)), 2):
        raw, floors, _ = noise_floor(
            [runs[first]], [runs[second]], skip, interval, temperature_K, bins
        )
        pairs[first, second] = raw, floors
    ratios: dict[str, list[float]] = {metric: [] for metric in metrics}
    for sampler, reference in itertools.permutations(range(len(runs)), 2):
        values = pairs[reference, sampler][0]
        rest = [i for i in range(len(runs)) if i not in (sampler, reference)]
        for one, two in itertools.combinations(rest, 2):
            for metric in metrics:
                floor = max(pairs[reference, one][1][metric], pairs[reference, two][1][metric])
                ratio = values[metric] / floor if floor > 0 else math.nan
                ratios[metric].append(ratio)
    return {metric: np.asarray(values) for metric, values in ratios.items()}


def false_alarm_rates(
    ratios: Mapping[str, np.ndarray], tolerance: float | Mapping[str, float]
) -> dict[str, float]:
    """Fraction of the verdicts on exact replicas that fail, per metric and in all.

    Parameters
    ----------
    ratios
        From :func:`null_ratios`.
    tolerance
        One for every metric, or one per metric (:data:`~boostmd.validation.report.TOLERANCES`).

    Returns
    -------
    dict of str to float
        Metric name to the fraction of assignments it fails, and ``"any"``: the fraction
        that fail at least one metric (the verdict's false-alarm rate).
    """
    failed = np.stack(
        [~(np.asarray(r) <= metric_tolerance(tolerance, m)) for m, r in ratios.items()], axis=1
    )  # nan (no ratio) fails, as in the verdict
    rates = {metric: float(failed[:, j].mean()) for j, metric in enumerate(ratios)}
    rates["any"] = float(failed.any(axis=1).mean())
    return rates
