"""Online calibration of the surrogate's curvature from the refresh energy errors.

On a molecule it never saw, the surrogate's learned (second and higher order) term tends
to be too soft or too stiff by the same factor nearly everywhere: on unseen THR the
shipped surrogate's curvature is about 7% too soft, which shows as a mean refresh error
of +47 meV per window. Every window ends with a reference call, so the energy error of
the surrogate there is known for free:

    dE = E_ref(x_N) - E_sur(x_N),   E_sur = E_base + s K,

with ``K`` the learned curvature energy at the window's end, ``E_base`` the rest (the
reference frame's energy and its exact first-order term, and the many-body term) and
``s`` the scale in use. So ``R = dE + s K`` is what the curvature term should have been,
and the best scale is the least-squares fit ``s = sum(R K) / sum(K K)`` over the windows
so far. The scale changes only between windows (each window stays exactly conservative)
and its changes shrink as ``1/windows`` (diminishing adaptation), so the sampled
distribution is that of the converged surrogate.

Measured on unseen THR (300 K, 1/ps, N = 10, the checked sampler with the
energy-consistent refresh, 2300 steps): the fit settles near ``s = 1.07``; 28 instead of 69
of 230 windows are rerun (4.5x instead of 2.5x fewer reference calls) and the mean
refresh error of accepted windows is -3.8 instead of +28.9 meV. But the validation's
heavy-atom bonds get worse (2.45x instead of 1.79x their noise floor): the amide bonds,
right before, become too stiff (length spread 0.6-0.7x the reference's) while the bonds
around THR's beta carbon, which no training dipeptide has, stay too soft (2.2x). On ILE
and GLN the fit went to 1.38 and 1.31 and sampling got worse still (ILE: five metrics over
their floors instead of two; GLN: heavy-atom temperature 8.7x instead of 4.6x its floor).
One scale cannot fix errors that differ from bond to bond, so the calculator leaves the
calibration off unless asked (``BoostMDCalculator(calibration=True)``); the fitted scale is
still a useful diagnostic of how far off the surrogate is on a system.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["CurvatureCalibration"]


@dataclass
class CurvatureCalibration:
    """Least-squares fit of the scale of the surrogate's curvature term, window by window.

    Parameters
    ----------
    min_windows
        The scale stays 1 until this many windows have ended.
    bounds
        The fitted scale is clipped to this range (a safety net for a surrogate that is
        badly wrong on the system; a clipped scale is logged by the calculator).
    sum_rk, sum_kk, windows
        The running sums and count (the state to save when a run checkpoints).
    """

    min_windows: int = 10
    bounds: tuple[float, float] = (0.5, 2.0)
    sum_rk: float = 0.0
    sum_kk: float = 0.0
    windows: int = 0

    def __post_init__(self) -> None:
        low, high = self.bounds
        if not 0 < low <= 1 <= high:
            raise ValueError(f"bounds must satisfy 0 < low <= 1 <= high, got {self.bounds}")
        if self.min_windows < 1:
            raise ValueError(f"min_windows must be at least 1, got {self.min_windows}")
        self.bounds = (float(low), float(high))

    @property
    def unclipped_scale(self) -> float:
        """The least-squares scale (1 before ``min_windows`` windows)."""
        if self.windows < self.min_windows or self.sum_kk <= 0:
            return 1.0
        return self.sum_rk / self.sum_kk

    @property
    def scale(self) -> float:
        """The scale to use for the next window."""
        return min(max(self.unclipped_scale, self.bounds[0]), self.bounds[1])

    def update(self, refresh_error: float, curvature_energy: float, scale_used: float) -> None:
        """Add one ended window.

        Parameters
        ----------
        refresh_error
            ``E_ref - E_sur`` at the window's end (eV).
        curvature_energy
            The unscaled learned curvature energy ``K`` there (eV).
        scale_used
            The scale the window ran with.
        """
        if not (math.isfinite(refresh_error) and math.isfinite(curvature_energy)):
            return
        target = refresh_error + scale_used * curvature_energy
        self.sum_rk += target * curvature_energy
        self.sum_kk += curvature_energy * curvature_energy
        self.windows += 1

    def state(self) -> dict:
        """Everything needed to continue the fit (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> CurvatureCalibration:
        """Rebuild from :meth:`state`."""
        return cls(**{**state, "bounds": tuple(state["bounds"])})
