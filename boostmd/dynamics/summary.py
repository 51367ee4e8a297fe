"""What a BoostMD run cost and how well its surrogate fitted, in one object to print or log."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RunSummary"]


@dataclass(frozen=True)
class RunSummary:
    """A BoostMD run's calls, reruns and refresh errors, and the speedup they imply.

    Attributes
    ----------
    steps
        MD steps the run took (accepted steps).
    reference_calls, surrogate_calls
        Every model call made, reruns included.
    windows
        Windows that ended with a refresh (their ``dE`` is known).
    windows_rerun
        Of those, windows rejected and rerun with the reference (``None`` when the
        integrator does not check windows, as ASE's own).
    fallbacks
        Surrogate steps the force guard replaced by a reference call.
    refresh_error_rms_meV, refresh_error_mean_meV
        Root mean square and mean of the windows' refresh energy errors ``dE`` (meV).
    reference_seconds, surrogate_seconds
        Wall time of the reference steps (with the centred frames' prediction and the
        refresh errors' evaluation) and of the surrogate steps.
    """

    steps: int
    reference_calls: int
    surrogate_calls: int
    windows: int
    windows_rerun: int | None
    fallbacks: int
    refresh_error_rms_meV: float
    refresh_error_mean_meV: float
    reference_seconds: float
    surrogate_seconds: float

    @classmethod
    def of(cls, calc, steps: int, windows_rerun: int | None = None) -> RunSummary:
        """Summarise a :class:`~boostmd.BoostMDCalculator` after ``steps`` MD steps."""
        errors = np.asarray(calc.refresh_errors, dtype=float)
        errors = errors[np.isfinite(errors)]
        stats = calc.stats
        return cls(
            steps=int(steps),
            reference_calls=stats.full_steps,
            surrogate_calls=stats.reuse_steps,
            windows=len(calc.refresh_errors),
            windows_rerun=windows_rerun,
            fallbacks=calc.fallbacks,
            refresh_error_rms_meV=1000 * math.sqrt(np.mean(errors**2)) if errors.size else math.nan,
            refresh_error_mean_meV=1000 * float(errors.mean()) if errors.size else math.nan,
            reference_seconds=stats.full_time_s,
            surrogate_seconds=stats.reuse_time_s,
        )

    @property
    def reference_calls_per_step(self) -> float:
        """Reference calls per MD step (``1 / N`` at best, 1 or more for the reference alone)."""
        return self.reference_calls / self.steps if self.steps else math.nan

    @property
    def rerun_fraction(self) -> float:
        """Fraction of the windows rerun with the reference (``nan`` if unknown)."""
        if self.windows_rerun is None or not self.windows:
            return math.nan
        return self.windows_rerun / self.windows

    @property
    def implied_speedup(self) -> float:
        """The run's speedup over the reference alone implied by its calls and their times.

        ``steps`` reference calls at this run's mean time per reference step, over the
        time this run spent in all its calls. The reference steps' time includes the
        centred frames' prediction, so this is an estimate; ``benchmarks/`` measure it.
        """
        spent = self.reference_seconds + self.surrogate_seconds
        if not (self.reference_calls and spent > 0):
            return math.nan
        return self.steps * self.reference_seconds / self.reference_calls / spent

    def as_dict(self) -> dict[str, float | int | None]:
        """Return the figures and the derived ones as a JSON-ready dict."""
        return {
            **asdict(self),
            "reference_calls_per_step": self.reference_calls_per_step,
            "rerun_fraction": self.rerun_fraction,
            "implied_speedup": self.implied_speedup,
        }

    def __str__(self) -> str:
        rerun = (
            "no window checking"
            if self.windows_rerun is None
            else f"{self.windows_rerun} of {self.windows} windows rerun"
        )
        return (
            f"BoostMD: {self.steps} steps, {self.reference_calls} reference calls "
            f"({self.reference_calls_per_step:.3f} per step), {self.surrogate_calls} surrogate "
            f"calls; {rerun}, {self.fallbacks} fallbacks; refresh error dE "
            f"{self.refresh_error_rms_meV:.1f} meV RMS, mean {self.refresh_error_mean_meV:+.1f}; "
            f"implied speedup {self.implied_speedup:.1f}x"
        )
