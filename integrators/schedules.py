"""Schedules: decide, step by step, whether to run the full computation.

A schedule sees the step index and, optionally, a cheap *indicator* (a number computed
without the expensive model, such as how far the input moved since the last full step).
It never sees the expensive output of the current step.

=========================  ==============================================================
schedule                   full step when
=========================  ==============================================================
``Periodic(every)``        ``step % every == 0`` (DeepCache, FORA, BoostMD's interval)
``Threshold(tol, ...)``    the indicator summed since the last full step exceeds ``tol``,
                           or after ``max_reuse`` reuse steps (TeaCache, First-Block-Cache,
                           MagCache)
``Warmup(s, first, last)`` within the first or last steps, else as ``s`` decides
``Profiled(mask)``         ``mask[step]``, from an offline calibration run (ERTACache)
``ErrorControlled(tol)``   the interval whose predicted reuse error is ``tol``, from the
                           errors measured at earlier full steps (step-size control)
=========================  ==============================================================

Besides ``should_compute`` and ``reset``, every schedule here has ``notify_full(step)``:
the caller says that a full step happened that the schedule did not ask for (the first
call of a cache, a forced warm-up step), so stateful schedules restart their count.
Schedules that learn from the error of their reuse steps also have
``report_error(error, steps)``: the caller measured, at a full step, the error the
predictor would have made there ``steps`` steps after the previous full step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from integrators._tree import Value, leaves

__all__ = [
    "ErrorControlled",
    "Periodic",
    "Profiled",
    "Threshold",
    "Warmup",
    "consult",
    "decide",
    "notify_full",
    "relative_l1",
]


def notify_full(schedule: object, step: int) -> None:
    """Tell ``schedule`` that ``step`` ran in full, if it keeps state that cares."""
    hook = getattr(schedule, "notify_full", None)
    if hook is not None:
        hook(step)


def consult(
    schedule: object, step: int, indicator: float | None = None, force: bool = False
) -> tuple[bool, bool]:
    """Ask ``schedule`` about ``step``; return ``(full, scheduled)``.

    ``scheduled`` is the schedule's own answer; ``full`` is True when it or ``force``
    asks for a full step. The schedule is always consulted, so stateful schedules see
    every step; when a full step is forced against its advice, it is told through
    :func:`notify_full`.
    """
    scheduled = schedule.should_compute(step, indicator)
    if force and not scheduled:
        notify_full(schedule, step)
    return scheduled or force, scheduled


def decide(
    schedule: object, step: int, indicator: float | None = None, force: bool = False
) -> bool:
    """Ask ``schedule`` about ``step``; with ``force``, run in full whatever it says.

    As :func:`consult`, returning only whether the step runs in full.
    """
    return consult(schedule, step, indicator, force)[0]


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return step


class Periodic:
    """A full step every ``every`` steps, starting at step 0.

    Parameters
    ----------
    every
        Period; ``1`` computes every step (no caching).

    Examples
    --------
    >>> s = Periodic(3)
    >>> [s.should_compute(i) for i in range(6)]
    [True, False, False, True, False, False]
    """

    def __init__(self, every: int) -> None:
        self.every = _check_int(every, "Periodic(every=...)", 1)

    def should_compute(self, step: int, indicator: float | None = None) -> bool:
        """Return True on steps ``0, every, 2 * every, ...``."""
        return _check_step(step) % self.every == 0

    def reset(self) -> None:
        """Nothing to forget: the decision depends on the step alone."""

    def __repr__(self) -> str:
        return f"Periodic(every={self.every})"


class Threshold:
    """A full step once the indicator accumulated since the last full step exceeds ``tol``.

    The caller passes a cheap indicator with each step (TeaCache: relative L1 change of
    the modulated input; First-Block-Cache: relative change of block 0's residual;
    BoostMD: largest displacement since the reference frame). Smaller ``tol`` means more
    full steps and smaller error. The first step after ``reset`` is always full.

    Parameters
    ----------
    tol
        Accumulated indicator above which a full step runs (``>= 0``).
    max_reuse
        Reuse steps allowed in a row before a full step is forced (``None``: no limit).

    Examples
    --------
    >>> s = Threshold(tol=1.0, max_reuse=3)
    >>> [s.should_compute(i, 0.4) for i in range(7)]
    [True, False, False, True, False, False, True]
    """

    def __init__(self, tol: float, max_reuse: int | None = None) -> None:
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
            raise ValueError(f"Threshold(tol=...) must be a number >= 0, got {tol!r}")
        if math.isinf(tol):
            raise ValueError("Threshold(tol=inf) never computes; use max_reuse or Periodic")
        if max_reuse is not None:
            _check_int(max_reuse, "Threshold(max_reuse=...)", 0)
        self.tol = float(tol)
        self.max_reuse = max_reuse
        self.reset()

    def should_compute(self, step: int, indicator: float | None = None) -> bool:
        """Accumulate ``indicator`` and decide; the indicator is optional only at the start."""
        _check_step(step)
        if not self._started:
            self.notify_full(step)
            return True
        if indicator is None:
            raise ValueError(
                "Threshold needs an indicator on every step after the first; pass "
                "should_compute(step, indicator) or give the cache an indicator function"
            )
        indicator = float(indicator)
        if not (math.isfinite(indicator) and indicator >= 0):
            raise ValueError(f"indicator must be finite and >= 0, got {indicator}")
        self.accumulated += indicator
        limit_reached = self.max_reuse is not None and self.reuse_run >= self.max_reuse
        if self.accumulated > self.tol or limit_reached:
            self.notify_full(step)
            return True
        self.reuse_run += 1
        return False

    def notify_full(self, step: int) -> None:
        """Restart the accumulation after a full step."""
        self._started = True
        self.accumulated = 0.0
        self.reuse_run = 0

    def reset(self) -> None:
        """Forget the accumulation; the next step will be full."""
        self._started = False
        self.accumulated = 0.0
        self.reuse_run = 0

    def __repr__(self) -> str:
        return f"Threshold(tol={self.tol}, max_reuse={self.max_reuse})"


class Warmup:
    """Force full steps in the first ``first`` and last ``last`` steps of a trajectory.

    Diffusion samplers change fastest at the start and their last steps set fine detail,
    so caching methods run them in full. Between them, ``schedule`` decides.

    Parameters
    ----------
    schedule
        The schedule for the steps in between.
    first
        Number of leading steps always computed.
    last
        Number of trailing steps always computed; needs ``total``.
    total
        Number of steps in the trajectory.

    Examples
    --------
    >>> s = Warmup(Periodic(4), first=2, last=1, total=8)
    >>> [s.should_compute(i) for i in range(8)]
    [True, True, False, False, True, False, False, True]
    """

    def __init__(
        self, schedule: object, first: int = 0, last: int = 0, total: int | None = None
    ) -> None:
        self.first = _check_int(first, "Warmup(first=...)", 0)
        self.last = _check_int(last, "Warmup(last=...)", 0)
        if total is not None:
            _check_int(total, "Warmup(total=...)", 1)
        if self.last and total is None:
            raise ValueError(f"Warmup(last={last}) needs total=<number of steps>")
        if total is not None and self.first + self.last > total:
            raise ValueError(
                f"Warmup(first={first}, last={last}) forces more steps than total={total}"
            )
        self.schedule = schedule
        self.total = total

    def should_compute(self, step: int, indicator: float | None = None) -> bool:
        """Full in the warm-up and cool-down windows, else ask the inner schedule."""
        _check_step(step)
        if self.total is not None and step >= self.total:
            raise ValueError(f"step {step} is beyond Warmup(total={self.total})")
        in_tail = self.total is not None and step >= self.total - self.last
        if step < self.first or in_tail:
            notify_full(self.schedule, step)
            return True
        return self.schedule.should_compute(step, indicator)

    def notify_full(self, step: int) -> None:
        """Pass the news of an unrequested full step on to the inner schedule."""
        notify_full(self.schedule, step)

    def reset(self) -> None:
        """Reset the inner schedule."""
        self.schedule.reset()

    def __repr__(self) -> str:
        return (
            f"Warmup({self.schedule!r}, first={self.first}, last={self.last}, total={self.total})"
        )


def relative_l1(prediction: Value, target: Value) -> float:
    """Relative L1 error ``sum |prediction - target| / sum |target|`` over all leaves."""
    pairs = zip(leaves(prediction), leaves(target))
    diff = sum(float((p - t).detach().abs().sum()) for p, t in pairs)
    norm = sum(float(t.detach().abs().sum()) for t in leaves(target))
    return diff / max(norm, 1e-30)


class Profiled:
    """Full or reuse from an explicit per-step mask, usually made by calibration.

    ERTACache-style: run the expensive model once on every step (a calibration
    trajectory), then decide offline which steps a predictor can fill within a tolerance
    (:meth:`calibrate`). The mask is fixed: sampling costs exactly ``mask.count(True)``
    full steps.

    Parameters
    ----------
    mask
        ``mask[i]`` is True where step ``i`` runs in full.
    num_steps
        If given, the mask must have exactly this length.

    Examples
    --------
    >>> s = Profiled([True, False, True])
    >>> [s.should_compute(i) for i in range(3)]
    [True, False, True]
    """

    def __init__(self, mask: Sequence[bool], num_steps: int | None = None) -> None:
        mask = [bool(m) for m in (mask.tolist() if isinstance(mask, torch.Tensor) else mask)]
        if not mask:
            raise ValueError("Profiled(mask=...) must hold at least one step")
        if num_steps is not None and len(mask) != num_steps:
            raise ValueError(
                f"Profiled mask has {len(mask)} entries but num_steps={num_steps}; "
                "calibrate with the same number of steps you sample with"
            )
        self.mask = tuple(mask)
        self.errors: list[float | None] | None = None

    @classmethod
    def calibrate(
        cls,
        outputs: Sequence[Value],
        timesteps: Sequence[float],
        predictor: object,
        tol: float,
        max_reuse: int | None = None,
        metric: Callable[[Value, Value], float] = relative_l1,
    ) -> Profiled:
        """Build the mask from the outputs of a calibration run with every step computed.

        Walks the steps in order as a cache would: a step is reused when ``predictor``,
        fed only with the steps marked full so far, predicts its output within ``tol``
        (measured by ``metric``) and fewer than ``max_reuse`` steps were reused in a row.

        Parameters
        ----------
        outputs
            The model output at each step of the calibration trajectory.
        timesteps
            The time of each step.
        predictor
            The predictor the cache will use (it is reset before and after).
        tol
            Largest acceptable ``metric(prediction, output)``.
        max_reuse
            Longest run of reuse steps (``None``: no limit).
        metric
            Error of a prediction against the computed output.

        Returns
        -------
        Profiled
            The schedule; ``errors[i]`` holds the predicted error of each reuse step
            (``None`` on full steps).
        """
        if len(outputs) != len(timesteps):
            raise ValueError(f"calibrate got {len(outputs)} outputs but {len(timesteps)} timesteps")
        if not tol >= 0:
            raise ValueError(f"calibrate(tol=...) must be >= 0, got {tol!r}")
        predictor.reset()
        mask: list[bool] = []
        errors: list[float | None] = []
        run = 0
        for output, t in zip(outputs, timesteps):
            error = metric(predictor.predict(t), output) if mask else math.inf
            if error <= tol and (max_reuse is None or run < max_reuse):
                mask.append(False)
                errors.append(error)
                run += 1
            else:
                predictor.update(t, output)
                mask.append(True)
                errors.append(None)
                run = 0
        predictor.reset()
        schedule = cls(mask)
        schedule.errors = errors
        return schedule

    def should_compute(self, step: int, indicator: float | None = None) -> bool:
        """Return ``mask[step]``."""
        _check_step(step)
        if step >= len(self.mask):
            raise ValueError(
                f"Profiled mask covers {len(self.mask)} steps; got step {step}. "
                "Calibrate with the number of steps you sample with"
            )
        return self.mask[step]

    def reset(self) -> None:
        """Nothing to forget: the mask is fixed."""

    @property
    def num_full(self) -> int:
        """Number of full steps the mask asks for."""
        return sum(self.mask)

    def __repr__(self) -> str:
        return f"Profiled(full={self.num_full}/{len(self.mask)})"


@dataclass
class _ErrorModel:
    """What an :class:`ErrorControlled` learned: its interval and error constant.

    ``mean_square`` is the running mean of ``(error / steps**order)**2``.
    """

    interval: int
    mean_square: float = 0.0
    reports: int = 0


class ErrorControlled:
    """An interval between full steps chosen from the errors measured at earlier ones.

    Adaptive step-size control for caches: the error of a prediction made ``k`` steps
    after a full step grows like ``C k**order``. Whenever a full step ends a run of reuse
    steps the caller may know what the predictor would have said there; it reports that
    error with :meth:`report_error` (BoostMD: the refresh energy error, free at every
    reference call). The schedule keeps the running mean ``m`` of ``(error / k**order)**2``
    over the last ``memory`` reports (an exponential average) and moves the interval
    towards the largest ``k`` with ``sqrt(m) k**order <= tol``, within ``[min_interval,
    max_interval]``, starting from ``initial``: down at once, up by at most half of it
    per report (as step-size controllers limit growth, so one lucky report cannot make
    the next window long). So ``tol`` is a target for the root mean square error at
    full steps, and the interval follows how well the predictor does on this trajectory
    instead of being tuned by hand.

    The learned error constant is shared between copies (``copy.deepcopy``): a caller
    that snapshots the schedule and restores it to undo steps (BoostMD's checked windows)
    keeps what the undone steps measured. :meth:`reset` restarts the count, not the
    learned constant (it describes the predictor, not one trajectory).

    Parameters
    ----------
    tol
        Target root mean square error at full steps (in the units of the reports).
    initial
        Interval (steps from one full step to the next) before any report.
    min_interval, max_interval
        Bounds of the interval.
    order
        Growth order of the error with the steps since the full step.
    memory
        Number of reports the average remembers (``1 / memory`` is the weight of a new one;
        the first ``memory`` reports are averaged equally).

    Examples
    --------
    >>> s = ErrorControlled(tol=1.0, initial=4, order=1.0)
    >>> [s.should_compute(i) for i in range(5)]
    [True, False, False, False, True]
    >>> s.report_error(2.0, steps=4)  # error 0.5 per step: a 2-step interval meets tol = 1
    >>> s.interval
    2
    """

    def __init__(
        self,
        tol: float,
        initial: int = 10,
        min_interval: int = 1,
        max_interval: int = 20,
        order: float = 2.0,
        memory: int = 20,
    ) -> None:
        if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and 0 < tol < math.inf):
            raise ValueError(f"ErrorControlled(tol=...) must be a number > 0, got {tol!r}")
        _check_int(min_interval, "ErrorControlled(min_interval=...)", 1)
        _check_int(max_interval, "ErrorControlled(max_interval=...)", min_interval)
        _check_int(initial, "ErrorControlled(initial=...)", 1)
        if not min_interval <= initial <= max_interval:
            raise ValueError(
                f"ErrorControlled(initial={initial}) must lie in [min_interval, max_interval] "
                f"= [{min_interval}, {max_interval}]"
            )
        if isinstance(order, bool) or not (isinstance(order, (int, float)) and order > 0):
            raise ValueError(f"ErrorControlled(order=...) must be a number > 0, got {order!r}")
        self.tol = float(tol)
        self.initial = initial
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.order = float(order)
        self.memory = _check_int(memory, "ErrorControlled(memory=...)", 1)
        self.model = _ErrorModel(interval=initial)
        self.reset()

    @property
    def interval(self) -> int:
        """The interval (steps from one full step to the next) in use."""
        return self.model.interval

    def _target_interval(self) -> int:
        """Return the longest interval whose predicted error is within ``tol``."""
        if self.model.mean_square <= 0:
            return self.max_interval
        steps = (self.tol / math.sqrt(self.model.mean_square)) ** (1 / self.order)
        return min(max(int(steps), self.min_interval), self.max_interval)

    def should_compute(self, step: int, indicator: float | None = None) -> bool:
        """Full on the first step and once ``interval`` steps have passed since the last."""
        _check_step(step)
        if not self._started or self.since_full + 1 >= self.interval:
            self.notify_full(step)
            return True
        self.since_full += 1
        return False

    def report_error(self, error: float, steps: int) -> None:
        """Add the error a prediction ``steps`` steps after a full step made at the next one.

        Non-finite errors are counted as ``tol`` times ``max_interval`` (a prediction
        that blew up asks for the shortest interval soon), not ignored.
        """
        _check_int(steps, "report_error(steps=...)", 1)
        error = abs(float(error))
        if not math.isfinite(error):
            error = self.tol * self.max_interval**self.order
        model = self.model
        model.reports += 1
        weight = 1 / min(model.reports, self.memory)
        scaled = (error / steps**self.order) ** 2
        model.mean_square += weight * (scaled - model.mean_square)
        target, now = self._target_interval(), model.interval
        model.interval = min(target, now + max(1, now // 2))

    def notify_full(self, step: int) -> None:
        """Restart the count after a full step."""
        self._started = True
        self.since_full = 0

    def reset(self) -> None:
        """Restart the count (the next step is full); the learned error model stays."""
        self._started = False
        self.since_full = 0

    def state(self) -> dict:
        """Return the learned error model (JSON-serialisable), to save with a checkpoint."""
        return asdict(self.model)

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`."""
        self.model = _ErrorModel(
            interval=int(state["interval"]),
            mean_square=float(state["mean_square"]),
            reports=int(state["reports"]),
        )

    def __deepcopy__(self, memo: dict) -> ErrorControlled:
        twin = copy.copy(self)  # shares self.model on purpose: see the class docstring
        memo[id(self)] = twin
        return twin

    def __repr__(self) -> str:
        return (
            f"ErrorControlled(tol={self.tol}, interval={self.interval}, "
            f"range=[{self.min_interval}, {self.max_interval}], order={self.order})"
        )
