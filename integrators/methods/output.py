"""Output-level methods: cache the whole denoiser call, step by step.

Each method is a small frozen config. ``make_cache(fn)`` builds a fresh
:class:`~integrators.cache.Cache` around ``fn`` from it, so one config serves any number
of generations (and the conditional and unconditional contexts of a transformer) without
sharing state. Pass a config as ``cache=`` to a sampler (:mod:`integrators.samplers`) or
to :func:`integrators.diffusers.apply_cache`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from integrators.cache import Cache
from integrators.methods._predictors import make_predictor
from integrators.predictors import PerDimension, _HistoryPredictor
from integrators.schedules import Periodic, Profiled, Threshold, Warmup, decide, relative_l1

__all__ = [
    "FORA",
    "ABCache",
    "ERTACache",
    "HyCa",
    "InputChange",
    "OutputCache",
    "OutputMethod",
    "TaylorSeer",
    "TeaCache",
]


def check_int(value: int, name: str, minimum: int) -> int:
    """Return ``value`` if it is an integer ``>= minimum``, else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def interval_schedule(interval: int, warmup: int, owner: str) -> object:
    """``Periodic(interval)``, with the first ``warmup`` steps always full."""
    check_int(interval, f"{owner}(interval=...)", 1)
    check_int(warmup, f"{owner}(warmup=...)", 0)
    return Warmup(Periodic(interval), first=warmup) if warmup else Periodic(interval)


class OutputMethod:
    """Base of the output-level methods: a schedule, a predictor and an optional indicator."""

    level: ClassVar[str] = "output"

    def __post_init__(self) -> None:
        """Build the schedule and predictor once, so that a bad parameter fails here."""
        self.schedule()
        self.predictor()

    def schedule(self) -> object:
        """Return a fresh schedule."""
        raise NotImplementedError

    def predictor(self) -> object:
        """Return a fresh predictor (plain reuse unless a method says otherwise)."""
        return make_predictor("reuse")

    def indicator(self) -> Callable[[Any, float], float] | None:
        """Return a fresh cheap indicator, or ``None`` if the schedule needs none."""
        return None

    def make_cache(self, fn: Callable[..., Any]) -> Cache:
        """Return a new cache running ``fn`` on full steps."""
        return Cache(fn, self.schedule(), self.predictor(), self.indicator())


@dataclass(frozen=True)
class OutputCache(OutputMethod):
    """Any schedule and predictor from the core, as an output-level method.

    The schedule, predictor and indicator are copied for every cache built, so the
    objects given here are never mutated.

    Parameters
    ----------
    schedule_
        A schedule (:mod:`integrators.schedules`).
    predictor_
        A predictor (:mod:`integrators.predictors`).
    indicator_
        Optional cheap indicator ``(x, t) -> float`` for threshold schedules.

    Examples
    --------
    >>> import torch
    >>> from integrators import Periodic, Reuse
    >>> from integrators.samplers import FlowEuler, flow_timesteps
    >>> model = lambda x, t, cond: -x
    >>> x_T, times = torch.ones(3), flow_timesteps(8)
    >>> cached = FlowEuler().sample(model, x_T, times, cache=OutputCache(Periodic(1), Reuse()))
    >>> torch.equal(cached, FlowEuler().sample(model, x_T, times))
    True
    """

    schedule_: object
    predictor_: object
    indicator_: Callable[[Any, float], float] | None = None

    def schedule(self) -> object:
        """Return a copy of the schedule."""
        return copy.deepcopy(self.schedule_)

    def predictor(self) -> object:
        """Return a copy of the predictor."""
        return copy.deepcopy(self.predictor_)

    def indicator(self) -> Callable[[Any, float], float] | None:
        """Return a copy of the indicator."""
        return copy.deepcopy(self.indicator_)


@dataclass(frozen=True)
class FORA(OutputMethod):
    """Reuse the last full output for ``interval - 1`` steps (FORA-style fixed interval).

    FORA (Selvaraju et al. 2024, "Fast-Forward Caching in Diffusion Transformer
    Acceleration") and DeepCache reuse features on a fixed interval; here the whole
    denoiser output is reused. Trade-off: cost falls to ``1 / interval`` with no
    overhead, but the reused output lags the trajectory, so the error grows with the
    interval.

    Parameters
    ----------
    interval
        A full step every ``interval`` steps.
    warmup
        Leading steps always computed.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, flow_timesteps
    >>> sampler = FlowEuler()
    >>> _ = sampler.sample(lambda x, t, c: -x, torch.ones(2), flow_timesteps(9),
    ...                    cache=FORA(interval=3))
    >>> sampler.stats.full_steps, sampler.stats.reuse_steps
    (3, 6)
    """

    interval: int = 3
    warmup: int = 0

    def schedule(self) -> object:
        """``Periodic(interval)`` after ``warmup`` full steps."""
        return interval_schedule(self.interval, self.warmup, "FORA")


@dataclass(frozen=True)
class ABCache(OutputMethod):
    """Adams-Bashforth extrapolation of the last ``order`` full outputs (AB-Cache).

    AB-Cache (Yu et al. 2025, "AB-Cache: Training-Free Acceleration of Diffusion Models
    via Adams-Bashforth Cached Feature Reuse") combines cached outputs with
    Adams-Bashforth weights; nearly 3x on FLUX and HunyuanVideo. Trade-off: exact for
    output trajectories polynomial of degree below ``order`` (truncation ``O(h^order)``),
    but higher orders amplify noise in the history (their weights grow) and need
    ``order`` full steps before they act at full order.

    Parameters
    ----------
    order
        Number of past full outputs combined.
    interval
        A full step every ``interval`` steps.
    warmup
        Leading steps always computed.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, flow_timesteps
    >>> quadratic = lambda x, t, c: torch.full_like(x, t * t)  # output polynomial in t
    >>> times = flow_timesteps(12)
    >>> exact = FlowEuler().sample(quadratic, torch.zeros(1), times)
    >>> cached = FlowEuler().sample(quadratic, torch.zeros(1), times,
    ...                             cache=ABCache(order=3, interval=3, warmup=3))
    >>> torch.allclose(cached, exact)
    True
    """

    order: int = 2
    interval: int = 3
    warmup: int = 0

    def schedule(self) -> object:
        """``Periodic(interval)`` after ``warmup`` full steps."""
        return interval_schedule(self.interval, self.warmup, "ABCache")

    def predictor(self) -> object:
        """``AdamsBashforth(order)``."""
        return make_predictor(f"ab{check_int(self.order, 'ABCache(order=...)', 1)}")


@dataclass(frozen=True)
class TaylorSeer(OutputMethod):
    """Taylor expansion with finite-difference derivatives of the full outputs (TaylorSeer).

    TaylorSeer (Liu et al. 2025, "From Reusing to Forecasting: Accelerating Diffusion
    Models with TaylorSeers", arXiv 2503.06923; 4.99x FLOPs / 3.5x latency on FLUX)
    forecasts features from derivatives estimated on full steps. Trade-off: exact for
    polynomials of degree ``<= order``; derivatives come from full steps ``interval``
    apart, so large intervals make them coarse and high orders noisy.

    Parameters
    ----------
    order
        Highest derivative in the expansion.
    interval
        A full step every ``interval`` steps.
    warmup
        Leading steps always computed.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, flow_timesteps
    >>> sampler = FlowEuler()
    >>> _ = sampler.sample(lambda x, t, c: -x, torch.ones(2), flow_timesteps(10),
    ...                    cache=TaylorSeer(order=1, interval=4, warmup=2))
    >>> sampler.stats.full_steps
    4
    """

    order: int = 1
    interval: int = 3
    warmup: int = 0

    def schedule(self) -> object:
        """``Periodic(interval)`` after ``warmup`` full steps."""
        return interval_schedule(self.interval, self.warmup, "TaylorSeer")

    def predictor(self) -> object:
        """``Taylor(order)``."""
        return make_predictor(f"taylor{check_int(self.order, 'TaylorSeer(order=...)', 1)}")


class InputChange:
    """Cheap indicator: relative L1 change of the denoiser input since the previous step.

    The raw change ``c`` is mapped through the polynomial ``rescale`` (highest power
    first, as :func:`numpy.polyval`) and clipped at zero.

    Parameters
    ----------
    rescale
        Polynomial coefficients; ``(1.0, 0.0)`` leaves the change as it is.
    """

    def __init__(self, rescale: Sequence[float] = (1.0, 0.0)) -> None:
        self.rescale = tuple(float(c) for c in rescale)
        self.previous: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, t: float) -> float:
        """Return the rescaled change of ``x`` since the last call (0 on the first)."""
        previous, self.previous = self.previous, x.detach().clone()
        if previous is None:
            return 0.0
        return max(0.0, float(np.polyval(self.rescale, relative_l1(x, previous))))

    def reset(self) -> None:
        """Forget the previous input."""
        self.previous = None

    def __repr__(self) -> str:
        return f"InputChange(rescale={self.rescale})"


@dataclass(frozen=True)
class TeaCache(OutputMethod):
    """Full step once an accumulated cheap input change exceeds ``threshold`` (TeaCache-style).

    TeaCache (Liu et al. 2025, "Timestep Embedding Tells: It's Time to Cache for Video
    Diffusion Model", arXiv 2411.19108) accumulates the relative L1 change of the
    timestep-modulated input, rescaled by a polynomial fitted offline to the output
    change, and recomputes once the sum passes a threshold. Here the signal is the
    denoiser input itself (no model internals needed); :meth:`fit_rescale` fits the
    polynomial from one recorded trajectory. Trade-off: adapts the number of full steps
    to how fast the trajectory moves, at the price of a calibration and a signal that
    only approximates the output change.

    Parameters
    ----------
    threshold
        Accumulated (rescaled) change above which a full step runs.
    max_reuse
        Longest run of reuse steps (``None``: no limit).
    rescale
        Polynomial from input change to expected output change (highest power first).
    warmup
        Leading steps always computed.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, Recorder, flow_timesteps
    >>> model = lambda x, t, c: -x * (1 + t)
    >>> x_T, times = torch.ones(4), flow_timesteps(20)
    >>> recorder = Recorder()
    >>> _ = FlowEuler().sample(model, x_T, times, cache=recorder)
    >>> rescale = TeaCache.fit_rescale(recorder.inputs, recorder.outputs, degree=1)
    >>> sampler = FlowEuler()
    >>> _ = sampler.sample(model, x_T, times, cache=TeaCache(0.1, rescale=rescale))
    >>> sampler.stats.full_steps < len(times)
    True
    """

    threshold: float = 0.1
    max_reuse: int | None = None
    rescale: tuple[float, ...] = (1.0, 0.0)
    warmup: int = 1

    def schedule(self) -> object:
        """``Threshold(threshold, max_reuse)`` after ``warmup`` full steps."""
        inner = Threshold(self.threshold, self.max_reuse)
        warmup = check_int(self.warmup, "TeaCache(warmup=...)", 0)
        return Warmup(inner, first=warmup) if warmup else inner

    def indicator(self) -> InputChange:
        """Return the rescaled input change."""
        return InputChange(self.rescale)

    @staticmethod
    def fit_rescale(
        inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], degree: int = 2
    ) -> tuple[float, ...]:
        """Fit the polynomial from input change to output change on one full trajectory.

        Parameters
        ----------
        inputs, outputs
            Denoiser inputs and outputs at consecutive steps (a :class:`Recorder`'s).
        degree
            Polynomial degree.

        Returns
        -------
        tuple of float
            Coefficients, highest power first.
        """
        if len(inputs) != len(outputs) or len(inputs) < degree + 2:
            raise ValueError(
                f"fit_rescale needs equally many inputs and outputs, at least {degree + 2}; "
                f"got {len(inputs)} and {len(outputs)}"
            )
        x = [relative_l1(b, a) for a, b in itertools.pairwise(inputs)]
        y = [relative_l1(b, a) for a, b in itertools.pairwise(outputs)]
        return tuple(float(c) for c in np.polyfit(x, y, degree))


class _Rectified(_HistoryPredictor):
    """Reuse the last full output with per-step gains: ``a v_1 + b (v_1 - v_0)``."""

    def __init__(self, gains: Mapping[float, tuple[float, float]]) -> None:
        super().__init__(capacity=2)
        self.gains = dict(gains)

    def predict(self, t: float) -> torch.Tensor:
        """Apply the calibrated gains of step ``t`` to the last two full outputs."""
        self._require_history()
        if float(t) not in self.gains:
            raise ValueError(
                f"ERTACache has no gains for timestep {t}; calibrate with the timesteps "
                "you sample with"
            )
        a, b = self.gains[float(t)]
        if self.num_recorded == 1 or b == 0.0:
            return self._values[-1] * a
        return self._values[-1] * (a + b) - self._values[0] * b


def _fit_gains(
    history: list[torch.Tensor], target: torch.Tensor
) -> tuple[tuple[float, float], Any]:
    """Least-squares ``target ~ a v_1 + b (v_1 - v_0)`` over all elements (float64)."""
    basis = [history[-1]] + ([history[-1] - history[-2]] if len(history) > 1 else [])
    matrix = torch.stack([v.double().reshape(-1) for v in basis], dim=1)
    solution = torch.linalg.lstsq(matrix, target.double().reshape(-1, 1)).solution.flatten()
    gains = (float(solution[0]), float(solution[1]) if len(basis) > 1 else 0.0)
    prediction = (matrix @ solution).reshape(target.shape).to(target.dtype)
    return gains, prediction


@dataclass(frozen=True, eq=False)
class ERTACache(OutputMethod):
    """Offline-profiled reuse steps with calibrated step gains (ERTACache-style).

    ERTACache (2025, "Error Rectification and Timesteps Adjustment for Efficient
    Diffusion"; 2x on Wan2.1) profiles the reuse error offline to pick the reusable
    steps, adjusts the timesteps and corrects the cached residual with a closed-form
    linearisation. Here :meth:`calibrate` walks one full trajectory and, per step, fits in
    closed form (least squares) ``v ~ a v_1 + b (v_1 - v_0)`` from the last two full
    outputs: ``a`` rescales the step taken with the cached output (for an Euler step it
    is exactly a timestep adjustment), ``b`` is the linear error correction. A step is
    reused when the corrected error stays within ``tol``. Trade-off: the best fixed
    schedule for one model, sampler and step count, but it must be recalibrated when
    they change.

    Parameters
    ----------
    mask
        Per step, True for a full step.
    timesteps
        The calibration timesteps (sampling must use the same).
    gains
        Per step, ``(a, b)`` on reuse steps and ``None`` on full steps.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, Recorder, flow_timesteps
    >>> model = lambda x, t, c: -x * (1 + t)
    >>> x_T, times = torch.ones(4), flow_timesteps(12)
    >>> recorder = Recorder()
    >>> exact = FlowEuler().sample(model, x_T, times, cache=recorder)
    >>> method = ERTACache.calibrate(recorder.outputs, recorder.times, tol=0.01)
    >>> sampler = FlowEuler()
    >>> cached = sampler.sample(model, x_T, times, cache=method)
    >>> sampler.stats.full_steps < len(times), torch.allclose(cached, exact, rtol=0.02)
    (True, True)
    """

    mask: tuple[bool, ...]
    timesteps: tuple[float, ...]
    gains: tuple[tuple[float, float] | None, ...]

    def __post_init__(self) -> None:
        """Check that mask, timesteps and gains describe the same steps."""
        if not len(self.mask) == len(self.timesteps) == len(self.gains):
            raise ValueError(
                f"ERTACache needs one mask entry, timestep and gain per step; got "
                f"{len(self.mask)}, {len(self.timesteps)} and {len(self.gains)}"
            )
        super().__post_init__()

    @classmethod
    def calibrate(
        cls,
        outputs: Sequence[torch.Tensor],
        timesteps: Sequence[float],
        tol: float,
        max_reuse: int | None = None,
        metric: Callable[[Any, Any], float] = relative_l1,
    ) -> ERTACache:
        """Choose the reuse steps and their gains from one trajectory computed in full.

        Parameters
        ----------
        outputs
            The denoiser output at every step (a :class:`Recorder`'s).
        timesteps
            The time of every step.
        tol
            Largest acceptable ``metric(corrected prediction, output)``.
        max_reuse
            Longest run of reuse steps (``None``: no limit).
        metric
            Error of a prediction against the computed output.
        """
        if len(outputs) != len(timesteps):
            raise ValueError(f"calibrate got {len(outputs)} outputs but {len(timesteps)} timesteps")
        mask: list[bool] = []
        gains: list[tuple[float, float] | None] = []
        history: list[torch.Tensor] = []
        run = 0
        for output in outputs:
            if history and (max_reuse is None or run < max_reuse):
                step_gains, prediction = _fit_gains(history, output)
                if metric(prediction, output) <= tol:
                    mask.append(False)
                    gains.append(step_gains)
                    run += 1
                    continue
            mask.append(True)
            gains.append(None)
            history = [*history, output][-2:]
            run = 0
        return cls(tuple(mask), tuple(float(t) for t in timesteps), tuple(gains))

    def schedule(self) -> Profiled:
        """Return the profiled mask as a schedule."""
        return Profiled(self.mask)

    def predictor(self) -> _Rectified:
        """Reuse with the calibrated gains."""
        reuse_gains = {t: g for t, g in zip(self.timesteps, self.gains) if g is not None}
        return _Rectified(reuse_gains)

    def __repr__(self) -> str:
        return f"ERTACache(full={sum(self.mask)}/{len(self.mask)})"


def _reuse_errors(
    outputs: Sequence[torch.Tensor], timesteps: Sequence[float], schedule: object, predictor: object
) -> torch.Tensor:
    """Mean absolute error per dimension (batch averaged) of ``predictor`` on reuse steps."""
    total = torch.zeros_like(outputs[0][0], dtype=torch.float64)
    for step, (output, t) in enumerate(zip(outputs, timesteps)):
        if decide(schedule, step, force=step == 0):
            predictor.update(t, output)
        else:
            total += (predictor.predict(t) - output).double().abs().mean(dim=0)
    return total


def _first_best(errors: torch.Tensor, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per dimension, the first candidate whose error is the smallest up to rounding."""
    scale = float(torch.stack([o.double().abs().mean() for o in outputs]).mean())
    best = errors.min(dim=0).values
    near = errors <= best + 1e-9 * (best + scale)
    return near.int().argmax(dim=0)


@dataclass(frozen=True, eq=False)
class HyCa(OutputMethod):
    """Each output dimension gets the predictor that fits it best offline (HyCa).

    HyCa (2025, "Let Features Decide Their Own Solvers: Hybrid Feature Caching for
    Diffusion Transformers"; 5.55x on FLUX, 6.24x on Qwen-Image) clusters feature
    dimensions offline and gives each cluster its own ODE-solver style predictor. Here
    :meth:`calibrate` scores every candidate predictor on every dimension (all but the
    batch axis) of one recorded trajectory and assigns each dimension its best one; the
    dimensions sharing a predictor form its cluster. Trade-off: better forecasts than
    any single predictor on mixed dynamics, for a calibration run and a few predictions
    per reuse step.

    Parameters
    ----------
    assignment
        Index into ``candidates`` per dimension (shape of an output without its batch).
    candidates
        Predictor names (``"reuse"``, ``"linear"``, ``"ab<k>"``, ``"taylor<k>"``).
    interval
        A full step every ``interval`` steps.
    warmup
        Leading steps always computed.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, Recorder, flow_timesteps
    >>> def model(x, t, c):  # first dimension constant in t, second quadratic
    ...     return torch.stack([torch.ones_like(x[:, 0]), t * t * torch.ones_like(x[:, 1])], 1)
    >>> x_T, times = torch.zeros(2, 2), flow_timesteps(12)
    >>> recorder = Recorder()
    >>> _ = FlowEuler().sample(model, x_T, times, cache=recorder)
    >>> method = HyCa.calibrate(recorder.outputs, recorder.times, interval=3, warmup=3,
    ...                         candidates=("reuse", "ab2", "ab3"))
    >>> method.assignment  # reuse for the constant, order 3 for the quadratic
    tensor([0, 2])
    """

    assignment: torch.Tensor
    candidates: tuple[str, ...] = ("reuse", "ab2", "ab3")
    interval: int = 3
    warmup: int = 0
    errors: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def calibrate(
        cls,
        outputs: Sequence[torch.Tensor],
        timesteps: Sequence[float],
        interval: int = 3,
        candidates: Sequence[str] = ("reuse", "ab2", "ab3", "taylor2"),
        warmup: int = 0,
    ) -> HyCa:
        """Assign each dimension the candidate with the smallest reuse error.

        Parameters
        ----------
        outputs
            Batched denoiser outputs at every step of a full trajectory.
        timesteps
            The time of every step.
        interval, warmup
            The schedule the method will sample with.
        candidates
            Predictor names to choose from; ties (up to rounding) go to the earlier name.
        """
        if len(outputs) != len(timesteps):
            raise ValueError(f"calibrate got {len(outputs)} outputs but {len(timesteps)} timesteps")
        errors = torch.stack(
            [
                _reuse_errors(
                    outputs,
                    timesteps,
                    interval_schedule(interval, warmup, "HyCa"),
                    make_predictor(name),
                )
                for name in candidates
            ]
        )
        return cls(_first_best(errors, outputs), tuple(candidates), interval, warmup, errors)

    def schedule(self) -> object:
        """``Periodic(interval)`` after ``warmup`` full steps."""
        return interval_schedule(self.interval, self.warmup, "HyCa")

    def predictor(self) -> PerDimension:
        """Return the per-dimension mixture of the candidates."""
        return PerDimension([make_predictor(name) for name in self.candidates], self.assignment)

    def __repr__(self) -> str:
        counts = torch.bincount(self.assignment.flatten(), minlength=len(self.candidates))
        shares = ", ".join(
            f"{name}: {n / max(1, self.assignment.numel()):.0%}"
            for name, n in zip(self.candidates, counts.tolist())
        )
        return f"HyCa(interval={self.interval}, warmup={self.warmup}, {shares})"
