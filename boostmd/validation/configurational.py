"""Configurational temperatures of a sampler from the reference's forces at its frames.

A thermostat that enforces kinetic temperatures (:class:`~boostmd.AdaptiveLangevin` sets
each atom's) makes them no evidence that a sampler samples right; the forces the
configurations feel are. For a Boltzmann distribution at temperature ``T`` the
configurational temperature of a group of atoms ``g`` satisfies
``kB T <sum_(i in g) lap_i U> = <sum_(i in g) |F_i|^2>``. The Laplacian needs second
derivatives of the reference; the validation already has a reference run at the bath
temperature, whose configurations give ``<|F_g|^2>`` at ``T``, so where the two
distributions agree on the Laplacian the sampler's configurational temperature is

    T_conf,g = T <|F_g|^2>_sampler / <|F_g|^2>_reference,

with ``|F_g|^2`` the mean over the group's atoms of ``|F_i|^2`` (the reference's forces).
A sampler whose windows pump the X-H vibrations spreads the hydrogens further from their
minima and raises ``T_conf`` of the hydrogens, whatever their kinetic temperature.

For BoostMD the forces are the reference's at its scheduled refresh frames (reruns and
force-guard fallbacks are left out, being picked by the surrogate's error; with centred
frames the reference runs at a predicted window centre, which is no sampled frame, so
the validation calls the reference itself at every ``interval``-th frame, the
``audited`` frames; centred runs recorded before that have no configurational
temperature), for the reference runs at every frame, and for the
second reference run, which makes the noise floor, at every ``interval``-th frame (as many
samples as a sampler has).
"""

from __future__ import annotations

import math

import numpy as np

from boostmd.validation.sampling import mean_difference_floor

__all__ = [
    "GROUPS",
    "KEY",
    "audited_frames",
    "configurational_temperatures",
    "force_series",
    "recorded",
]

KEY = "reference_force_sq"  # per frame: mean |F_i|^2 over the hydrogens and the heavy atoms
GROUPS = ("hydrogen", "heavy")


def audited_frames(run: dict) -> np.ndarray | None:
    """Return the frames where the validation called the reference itself (``None``: none).

    Those of a centred-frame BoostMD run (``audited``); runs made before the audit, and
    runs whose own reference calls are at their frames, have none.
    """
    if not run["job"].uses_boostmd or not np.any(run.get("audited", False)):
        return None
    return np.asarray(run["audited"], dtype=bool)


def recorded(runs: list[dict]) -> bool:
    """Whether every run recorded the reference's forces at some frame.

    Runs made before the forces were kept did not, nor do BoostMD runs with centred
    frames made before the validation audited them (their own reference calls are at
    predicted window centres, not at sampled frames).
    """
    return bool(runs) and all(KEY in run and np.isfinite(run[KEY]).any() for run in runs)


def force_series(runs: list[dict], group: str, skip: int, interval: int | None) -> list:
    """Return each run's ``|F_g|^2`` (eV^2/Å^2) at its frames after ``skip``.

    Parameters
    ----------
    runs
        Job results of one role.
    group
        ``"hydrogen"`` or ``"heavy"``.
    skip
        Equilibration frames to leave out.
    interval
        For a reference run, keep every ``interval``-th frame (``None``: every frame);
        a BoostMD run keeps its scheduled refresh frames.
    """
    column = GROUPS.index(group)
    series = []
    for run in runs:
        values = np.asarray(run[KEY], dtype=float)[:, column]
        frames = np.arange(len(values))
        audited = audited_frames(run)
        if audited is not None:
            keep = audited[: len(values)]
        elif run["job"].uses_boostmd:
            keep = np.asarray(run["scheduled_reference"], dtype=bool)[: len(values)]
        elif interval is None:
            keep = np.ones(len(values), dtype=bool)
        else:
            keep = frames % interval == 0
        series.append(values[keep & (frames >= skip) & np.isfinite(values)])
    return series


def configurational_temperatures(
    reference: list[dict], other: list[dict], temperature_K: float, skip: int, interval: int
) -> dict[str, tuple[float, float, float]]:
    """Return per group ``(T_conf of other, |T_conf - T| floor, standard error)`` in K.

    ``T_conf`` is ``temperature_K`` times ``other``'s mean ``|F_g|^2`` over the
    reference's; the floor is :func:`~boostmd.validation.sampling.mean_difference_floor` of the two
    scaled series, so called with ``other`` the second reference run it is the metric's
    noise floor. ``nan`` throughout when a group is empty or a run recorded no forces.
    """
    result = {}
    for group in GROUPS:
        if not (recorded(reference) and recorded(other)):
            result[group] = (math.nan, math.nan, math.nan)
            continue
        first = force_series(reference, group, skip, None)
        second = force_series(other, group, skip, interval)
        pooled = np.concatenate(first) if first else np.zeros(0)
        scale = temperature_K / pooled.mean() if len(pooled) and pooled.mean() > 0 else math.nan
        if math.isnan(scale) or not sum(len(s) for s in second):
            result[group] = (math.nan, math.nan, math.nan)
            continue
        floor, _, error = mean_difference_floor(
            [s * scale for s in first], [s * scale for s in second]
        )
        result[group] = (float(np.concatenate(second).mean() * scale), floor, error)
    return result
