"""The cache: run an expensive function on full steps, predict it on reuse steps.

``Cache(fn, schedule, predictor)`` is called like ``fn(x, t, ...)``. On each call the
schedule decides; a full step runs ``fn`` and hands the result to the predictor, a
reuse step returns the predictor's extrapolation to ``t``. ``stats`` counts both kinds
and the time spent in each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from integrators._tree import Value
from integrators.schedules import decide

__all__ = ["Cache", "CacheStats", "Predictor", "Schedule"]

logger = logging.getLogger(__name__)

Source = Literal["full", "reuse"]


@runtime_checkable
class Schedule(Protocol):
    """Decides, step by step, whether to run the full computation.

    A schedule may also define ``notify_full(step)``, called when a full step ran that
    it did not ask for (see :func:`integrators.schedules.notify_full`).
    """

    def should_compute(self, step: int, indicator: float | None = None) -> bool:
        """Return True for a full step, False for a reuse step."""
        ...

    def reset(self) -> None:
        """Forget per-trajectory state."""
        ...


@runtime_checkable
class Predictor(Protocol):
    """Fills reuse steps from the values recorded on full steps."""

    def update(self, t: float, value: Value) -> None:
        """Record the value computed on a full step at time ``t``."""
        ...

    def predict(self, t: float) -> Value:
        """Return the predicted value at time ``t``."""
        ...

    def reset(self) -> None:
        """Forget the recorded history."""
        ...


@dataclass
class CacheStats:
    """Counts and wall time of full and reuse steps.

    Times are host wall-clock seconds (``time.perf_counter``); on an asynchronous device
    synchronise inside ``fn`` if you need device time.
    """

    full_steps: int = 0
    reuse_steps: int = 0
    full_time_s: float = 0.0
    reuse_time_s: float = 0.0

    def record(self, source: Source, seconds: float) -> None:
        """Add one step of kind ``source`` that took ``seconds``."""
        if source == "full":
            self.full_steps += 1
            self.full_time_s += seconds
        else:
            self.reuse_steps += 1
            self.reuse_time_s += seconds

    @property
    def total_steps(self) -> int:
        """Full plus reuse steps."""
        return self.full_steps + self.reuse_steps

    @property
    def full_fraction(self) -> float:
        """Fraction of steps that ran in full (1.0 before any step)."""
        return self.full_steps / self.total_steps if self.total_steps else 1.0

    def as_dict(self) -> dict[str, float]:
        """Return the counts, times and full fraction as a plain dict (for JSON)."""
        return {**asdict(self), "full_fraction": self.full_fraction}

    def __str__(self) -> str:
        return (
            f"{self.full_steps} full ({self.full_time_s:.3f} s), "
            f"{self.reuse_steps} reuse ({self.reuse_time_s:.3f} s)"
        )


class Cache:
    """Run ``fn`` on full steps and a predictor on reuse steps.

    Parameters
    ----------
    fn
        The expensive computation, called as ``fn(x, t, *args, **kwargs)``. It returns
        a tensor or a tuple, list or dict of tensors.
    schedule
        Decides full or reuse at each call (see :mod:`integrators.schedules`).
    predictor
        Fills reuse steps (see :mod:`integrators.predictors`).
    indicator
        Optional cheap signal ``indicator(x, t) -> float`` passed to the schedule (for
        :class:`~integrators.schedules.Threshold`). If it has a ``reset`` method, it is
        called by :meth:`reset`.

    Notes
    -----
    The first call after construction or :meth:`reset` always runs ``fn``, whatever the
    schedule says: there is nothing to predict from yet. Returned tensors are the ones
    ``fn`` produced or the predictor built; do not modify them in place.

    Examples
    --------
    >>> import torch
    >>> from integrators import Cache, Periodic, Taylor
    >>> cache = Cache(lambda x, t: x * t, Periodic(2), Taylor(order=1))
    >>> x = torch.ones(3)
    >>> outputs = [cache(x, t) for t in (0.0, 1.0, 2.0, 3.0)]
    >>> outputs[3]  # reuse step, extrapolated linearly from t = 0 and t = 2
    tensor([3., 3., 3.])
    >>> cache.stats.full_steps, cache.stats.reuse_steps
    (2, 2)
    """

    def __init__(
        self,
        fn: Callable[..., Value],
        schedule: Schedule,
        predictor: Predictor,
        indicator: Callable[[Any, float], float] | None = None,
    ) -> None:
        for obj, protocol, role in (
            (schedule, Schedule, "schedule"),
            (predictor, Predictor, "predictor"),
        ):
            if not isinstance(obj, protocol):
                raise TypeError(
                    f"Cache({role}=...) got {type(obj).__name__}, which lacks the "
                    f"{protocol.__name__} methods; see integrators.{protocol.__name__}"
                )
        if not callable(fn):
            raise TypeError(f"Cache(fn=...) must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.schedule = schedule
        self.predictor = predictor
        self.indicator = indicator
        self.stats = CacheStats()
        self.step = 0
        self.last_source: Source | None = None
        self._recorded = 0

    def __call__(self, x: Any, t: float, *args: Any, **kwargs: Any) -> Value:
        """Return ``fn(x, t, *args, **kwargs)`` or its prediction, as the schedule decides."""
        start = time.perf_counter()
        indicator = self.indicator(x, t) if self.indicator is not None else None
        full = decide(self.schedule, self.step, indicator, force=self._recorded == 0)
        if full:
            value = self.fn(x, t, *args, **kwargs)
            self.predictor.update(float(t), value)
            self._recorded += 1
        else:
            value = self.predictor.predict(float(t))
        source: Source = "full" if full else "reuse"
        self.stats.record(source, time.perf_counter() - start)
        self.last_source = source
        self.step += 1
        return value

    def reset(self) -> None:
        """Start a new trajectory: clear the history, the step count and the stats."""
        self.schedule.reset()
        self.predictor.reset()
        reset_indicator = getattr(self.indicator, "reset", None)
        if reset_indicator is not None:
            reset_indicator()
        self.stats = CacheStats()
        self.step = 0
        self.last_source = None
        self._recorded = 0

    def __repr__(self) -> str:
        return (
            f"Cache(schedule={self.schedule!r}, predictor={self.predictor!r}, stats=[{self.stats}])"
        )
