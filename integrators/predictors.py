"""Predictors: fill a reuse step from the values stored on earlier full steps.

Every predictor records full steps with ``update(t, value)`` and answers reuse steps with
``predict(t)``. Values are tensors (or tuples, lists and dicts of tensors); they keep
their dtype and device. Extrapolation weights are computed in double precision from the
actual step times, so non-uniform steps are handled exactly.

=====================  ========================  =======================================
predictor              history it keeps          exact for polynomials in ``t`` of
=====================  ========================  =======================================
``Reuse()``            last value                degree 0
``Linear(weight=1)``   last two values           degree 1 (``weight=1``), else 0
``AdamsBashforth(k)``  last ``k`` values         degree below ``k``
``Taylor(k)``          last ``k + 1`` values     degree at most ``k``
``PerDimension(...)``  each inner predictor's    each dimension as its predictor
=====================  ========================  =======================================

With less history than its order needs, a predictor uses the highest order it can;
``effective_order`` and ``exact_degree`` say what the next prediction will use.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from math import factorial, prod

import torch

from integrators._tree import Value, detach, weighted_sum

__all__ = ["AdamsBashforth", "Linear", "PerDimension", "Reuse", "Taylor"]


def _check_order(order: int, name: str) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"{name}(order=...) must be an integer >= 1, got {order!r}")
    return order


def lagrange_weights(nodes: list[float], t: float) -> list[float]:
    """Weights ``w_j`` with ``p(t) = sum_j w_j p(nodes[j])`` for every polynomial ``p``.

    Parameters
    ----------
    nodes
        Distinct step times.
    t
        Where to evaluate (usually outside the nodes: extrapolation).

    Returns
    -------
    list of float
        One weight per node; exact for polynomials of degree below ``len(nodes)``.
    """
    return [
        prod((t - other) / (node - other) for m, other in enumerate(nodes) if m != j)
        for j, node in enumerate(nodes)
    ]


class _HistoryPredictor:
    """Shared bookkeeping: a bounded, time-ordered history of full-step values."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._times: deque[float] = deque(maxlen=capacity)
        self._values: deque[Value] = deque(maxlen=capacity)

    def update(self, t: float, value: Value) -> None:
        """Record the value of a full step at time ``t``.

        Raises
        ------
        ValueError
            If ``t`` is not finite or repeats a time already in the history.
        """
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"step time must be finite, got {t}")
        if t in self._times:
            raise ValueError(
                f"step time {t} is already in the history {list(self._times)}; "
                "full steps must have distinct times (call reset() between trajectories)"
            )
        self._times.append(t)
        self._values.append(detach(value))
        self._on_update()

    def _on_update(self) -> None:
        """Precompute per full step (a hook for subclasses)."""

    def reset(self) -> None:
        """Forget the history (start of a new trajectory)."""
        self._times.clear()
        self._values.clear()

    @property
    def times(self) -> list[float]:
        """Times of the stored full steps, oldest first."""
        return list(self._times)

    @property
    def num_recorded(self) -> int:
        """Number of full steps currently stored."""
        return len(self._times)

    def _require_history(self) -> None:
        if not self._times:
            raise RuntimeError(
                f"{type(self).__name__}.predict() called before any full step; "
                "call update(t, value) with a computed value first"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(recorded={self.num_recorded})"


class Reuse(_HistoryPredictor):
    """Return the last computed value unchanged (DeepCache, FORA, plain caching).

    Examples
    --------
    >>> import torch
    >>> p = Reuse()
    >>> p.update(0.0, torch.ones(2))
    >>> p.predict(0.5)
    tensor([1., 1.])
    """

    def __init__(self) -> None:
        super().__init__(capacity=1)

    @property
    def exact_degree(self) -> int:
        """Highest polynomial degree the next prediction reproduces (-1: none yet)."""
        return 0 if self._times else -1

    def predict(self, t: float) -> Value:
        """Return the last stored value (the same tensors, not a copy)."""
        self._require_history()
        return self._values[-1]


class Linear(_HistoryPredictor):
    """Linear extrapolation from the last two full steps, scaled by ``weight``.

    ``v(t) = v1 + weight * (t - t1) / (t1 - t0) * (v1 - v0)``: with ``weight=1`` it is
    exact for values linear in ``t``; FasterCache uses a weight that tempers the trend.

    Parameters
    ----------
    weight
        Scale of the extrapolated trend; ``0`` reduces to plain reuse.

    Examples
    --------
    >>> import torch
    >>> p = Linear()
    >>> p.update(0.0, torch.tensor([0.0]))
    >>> p.update(1.0, torch.tensor([2.0]))
    >>> p.predict(1.5)
    tensor([3.])
    """

    def __init__(self, weight: float = 1.0) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"Linear(weight=...) must be a real number, got {weight!r}")
        if not math.isfinite(weight):
            raise ValueError(f"Linear(weight=...) must be finite, got {weight!r}")
        super().__init__(capacity=2)
        self.weight = float(weight)

    @property
    def exact_degree(self) -> int:
        """Highest polynomial degree the next prediction reproduces (-1: none yet)."""
        if not self._times:
            return -1
        return 1 if self.num_recorded == 2 and self.weight == 1.0 else 0

    def predict(self, t: float) -> Value:
        """Extrapolate the last two values linearly to time ``t``."""
        self._require_history()
        if self.num_recorded == 1:
            return self._values[-1]
        (t0, t1), (v0, v1) = self._times, self._values
        ratio = self.weight * (float(t) - t1) / (t1 - t0)
        return weighted_sum([1.0 + ratio, -ratio], [v1, v0])

    def __repr__(self) -> str:
        return f"Linear(weight={self.weight}, recorded={self.num_recorded})"


class AdamsBashforth(_HistoryPredictor):
    """Order-``k`` Adams-Bashforth extrapolation of cached outputs (AB-Cache).

    The prediction combines the last ``k`` full-step values with the weights of the
    polynomial through them, ``v(t) = sum_j w_j v_j``. On uniform steps these are
    AB-Cache's coefficients (``1``; ``2, -1``; ``3, -3, 1``; ``4, -6, 4, -1``); on
    non-uniform steps they follow the actual step times. Exact for polynomials in ``t``
    of degree below ``k``; the truncation error is ``O(h^k)``.

    Parameters
    ----------
    order
        Number of past values combined (``1`` is plain reuse).

    Examples
    --------
    >>> import torch
    >>> p = AdamsBashforth(order=3)
    >>> for t in (0.0, 1.0, 3.0):
    ...     p.update(t, torch.tensor([t**2]))
    >>> p.predict(4.0)
    tensor([16.])
    """

    def __init__(self, order: int = 2) -> None:
        self.order = _check_order(order, "AdamsBashforth")
        super().__init__(capacity=self.order)

    @property
    def effective_order(self) -> int:
        """Order the next prediction uses: ``min(order, recorded)``."""
        return self.num_recorded

    @property
    def exact_degree(self) -> int:
        """Highest polynomial degree the next prediction reproduces (-1: none yet)."""
        return self.effective_order - 1

    def predict(self, t: float) -> Value:
        """Extrapolate the stored values to time ``t``."""
        self._require_history()
        weights = lagrange_weights(self.times, float(t))
        return weighted_sum(weights, list(self._values))

    def __repr__(self) -> str:
        return f"AdamsBashforth(order={self.order}, effective_order={self.effective_order})"


def _taylor_weights(nodes: list[float]) -> list[list[float]]:
    """Weights turning values at ``nodes`` into Taylor coefficients at ``nodes[-1]``.

    Returns ``W`` with ``a_j = sum_k W[j][k] v_k``, where ``a_j = p^(j)(t0) / j!`` are the
    Taylor coefficients at the newest node ``t0`` of the polynomial ``p`` through all
    nodes. Built from Newton's divided differences, ordered newest first, with every
    weight computed in double precision.
    """
    newest_first = nodes[::-1]
    n = len(newest_first)
    t0 = newest_first[0]
    # Divided difference f[t_0..t_i] = sum_k v_k / prod_{m != k, m <= i} (t_k - t_m).
    divided = [
        [
            1.0 / prod(newest_first[k] - newest_first[m] for m in range(i + 1) if m != k)
            if k <= i
            else 0.0
            for k in range(n)
        ]
        for i in range(n)
    ]
    # Newton basis prod_{m < i} (s + t0 - t_m) expanded in powers of s = t - t0.
    basis = [[1.0]]
    for i in range(1, n):
        shift = t0 - newest_first[i - 1]
        prev = basis[-1]
        basis.append(
            [
                (prev[j - 1] if j else 0.0) + shift * (prev[j] if j < i else 0.0)
                for j in range(i + 1)
            ]
        )
    weights = [
        [sum(basis[i][j] * divided[i][k] for i in range(j, n)) for k in range(n)] for j in range(n)
    ]
    # Columns follow ``newest_first``; reorder them to the oldest-first history.
    return [row[::-1] for row in weights]


class Taylor(_HistoryPredictor):
    """Order-``k`` Taylor expansion with finite-difference derivatives (TaylorSeer).

    After each full step the derivatives up to order ``k`` at that step are estimated
    from the last ``k + 1`` values (divided differences, correct on non-uniform steps),
    and reuse steps evaluate ``sum_j v^(j)(t_last) (t - t_last)^j / j!``. Exact for
    polynomials in ``t`` of degree at most ``k``.

    Parameters
    ----------
    order
        Highest derivative in the expansion.

    Examples
    --------
    >>> import torch
    >>> p = Taylor(order=2)
    >>> for t in (0.0, 1.0, 3.0):
    ...     p.update(t, torch.tensor([t**2]))
    >>> p.derivatives[1]  # d/dt t^2 at t = 3
    tensor([6.])
    >>> p.predict(4.0)
    tensor([16.])
    """

    def __init__(self, order: int = 1) -> None:
        self.order = _check_order(order, "Taylor")
        super().__init__(capacity=self.order + 1)
        self._coefficients: list[Value] = []

    def _on_update(self) -> None:
        weights = _taylor_weights(self.times)
        values = list(self._values)
        self._coefficients = [weighted_sum(row, values) for row in weights]

    def reset(self) -> None:
        """Forget the history and the derivative estimates."""
        super().reset()
        self._coefficients = []

    @property
    def effective_order(self) -> int:
        """Highest derivative the next prediction uses (-1: none recorded yet)."""
        return self.num_recorded - 1

    @property
    def exact_degree(self) -> int:
        """Highest polynomial degree the next prediction reproduces (-1: none yet)."""
        return self.effective_order

    @property
    def derivatives(self) -> list[Value]:
        """Estimated derivatives ``v, v', v'', ...`` at the last full step."""
        return [
            weighted_sum([float(factorial(j))], [coefficient])
            for j, coefficient in enumerate(self._coefficients)
        ]

    def predict(self, t: float) -> Value:
        """Evaluate the Taylor expansion around the last full step at time ``t``."""
        self._require_history()
        step = float(t) - self._times[-1]
        powers = [step**j for j in range(len(self._coefficients))]
        return weighted_sum(powers, self._coefficients)

    def __repr__(self) -> str:
        return f"Taylor(order={self.order}, effective_order={self.effective_order})"


class PerDimension:
    """Give every dimension of the value its own predictor (HyCa).

    All inner predictors see every full step; a reuse step takes, dimension by dimension,
    the prediction of the predictor ``assignment`` names there. An offline calibration
    picks the assignment (see :meth:`integrators.methods.HyCa.calibrate`).

    Parameters
    ----------
    predictors
        The candidate predictors.
    assignment
        Integer tensor of indices into ``predictors``, broadcastable against the value
        (for instance the value's shape without its batch dimension).

    Examples
    --------
    >>> import torch
    >>> from integrators import Linear, PerDimension, Reuse
    >>> p = PerDimension([Reuse(), Linear()], torch.tensor([0, 1]))
    >>> p.update(0.0, torch.tensor([1.0, 0.0]))
    >>> p.update(1.0, torch.tensor([1.0, 1.0]))
    >>> p.predict(2.0)  # first dimension reused, second extrapolated
    tensor([1., 2.])
    """

    def __init__(self, predictors: Sequence[object], assignment: torch.Tensor) -> None:
        if not predictors:
            raise ValueError("PerDimension(predictors=...) needs at least one predictor")
        assignment = torch.as_tensor(assignment)
        if assignment.dtype.is_floating_point or assignment.dtype == torch.bool:
            raise ValueError(
                f"PerDimension(assignment=...) must hold integers, got {assignment.dtype}"
            )
        if assignment.numel() and (assignment.min() < 0 or assignment.max() >= len(predictors)):
            raise ValueError(
                f"PerDimension assignment indices must lie in [0, {len(predictors) - 1}], got "
                f"[{int(assignment.min())}, {int(assignment.max())}]"
            )
        self.predictors = list(predictors)
        self.assignment = assignment
        self._used = sorted({int(i) for i in assignment.unique()})

    def update(self, t: float, value: torch.Tensor) -> None:
        """Record a full step in every predictor the assignment uses."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"PerDimension predicts tensors, got {type(value).__name__}")
        for index in self._used:
            self.predictors[index].update(t, value)

    def predict(self, t: float) -> torch.Tensor:
        """Return each dimension's prediction from its assigned predictor."""
        first, *rest = self._used
        out = self.predictors[first].predict(t)
        assignment = self.assignment.to(out.device)
        for index in rest:
            out = torch.where(assignment == index, self.predictors[index].predict(t), out)
        return out

    def reset(self) -> None:
        """Forget every inner predictor's history."""
        for predictor in self.predictors:
            predictor.reset()

    def __repr__(self) -> str:
        counts = {i: int((self.assignment == i).sum()) for i in self._used}
        parts = ", ".join(f"{self.predictors[i]!r}: {n}" for i, n in counts.items())
        return f"PerDimension({parts})"
