"""Choosing how many perturbed copies one call evaluates, by timing real queries.

Whether batching queries pays depends on the device, the stage and the input shape: on a
CPU a query's forward is compute-bound already and ``vmap``'s memory shuffles make
batches slower; on a GPU the small late stages are bound by launch latency and large
batches win, while the early stages of a large input batch fill the device alone. So the
batch is measured, as cuDNN's benchmark mode measures algorithms: for each parameter (its
stage sets the cost) and input shape, the estimator runs its first query chunks at sizes
1, 2, 4, ... (each size once to warm up, then three timed calls whose median counts;
these are real queries, and their results are used), stops growing at the first size
that is not faster per query, and keeps the fastest. A size above 1 is kept only when it
is at least 20% faster than one query at a time, so that timing noise cannot make the
choice slower than one query at a time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

__all__ = ["QueryBatchTuner", "device_clock", "largest_query_batch"]

_ELEMENTS_PER_CALL = 2**24
_MAX_QUERY_BATCH = 64


def largest_query_batch(state_size: int) -> int:
    """Largest query batch tried: about 2**24 activation elements per call, at most 64.

    Parameters
    ----------
    state_size
        Elements of the stage input of one query.
    """
    return max(1, min(_MAX_QUERY_BATCH, _ELEMENTS_PER_CALL // max(state_size, 1)))


@dataclass
class _Trial:
    """The measurements of one key (parameter, input shape, dtype, device)."""

    candidates: list[int]
    index: int = 0
    warmed: bool = False
    samples: list[float] = field(default_factory=list)
    per_query: dict[int, float] = field(default_factory=dict)
    chosen: int | None = None


class QueryBatchTuner:
    """Per-key choice of the query batch from timed chunks of real queries.

    Parameters
    ----------
    margin
        A batch above 1 is kept only if its time per query is at most ``margin`` times
        that of one query at a time.
    samples
        Timed calls per size (after one warm-up call); their median counts.

    Examples
    --------
    >>> tuner = QueryBatchTuner()
    >>> tuner.size("stage 3", largest=4)
    1
    """

    def __init__(self, margin: float = 0.8, samples: int = 3) -> None:
        if not 0 < margin <= 1:
            raise ValueError(f"margin must be in (0, 1], got {margin}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.margin = margin
        self.samples = samples
        self._trials: dict[Hashable, _Trial] = {}

    def size(self, key: Hashable, largest: int) -> int:
        """Return the queries to evaluate in the next call for ``key`` (tried or chosen).

        Parameters
        ----------
        key
            What the choice depends on (parameter, input shape, dtype, device).
        largest
            Largest size to try for this key (memory, coordinates); read on its first use.
        """
        trial = self._trials.get(key)
        if trial is None:
            sizes = [1]
            while sizes[-1] * 2 <= largest:
                sizes.append(sizes[-1] * 2)
            trial = self._trials[key] = _Trial(sizes, chosen=1 if largest <= 1 else None)
        return trial.chosen if trial.chosen is not None else trial.candidates[trial.index]

    def record(self, key: Hashable, size: int, seconds: float, count: int) -> None:
        """Report a call of ``count`` queries at ``size`` that took ``seconds``.

        Calls while the key is decided, or with fewer queries than the size tried (the
        last chunk of a parameter), are ignored.
        """
        trial = self._trials[key]
        if trial.chosen is not None or count < size or size != trial.candidates[trial.index]:
            return
        if not trial.warmed:
            trial.warmed = True
            return
        trial.samples.append(seconds / count)
        if len(trial.samples) < self.samples:
            return
        trial.per_query[size] = statistics.median(trial.samples)
        trial.samples = []
        previous = [trial.per_query[s] for s in trial.candidates[: trial.index]]
        grows = not previous or trial.per_query[size] < min(previous)
        if grows and trial.index + 1 < len(trial.candidates):
            trial.index += 1
            trial.warmed = False
            return
        trial.chosen = self._fastest(trial)

    def _fastest(self, trial: _Trial) -> int:
        best = min(trial.per_query, key=trial.per_query.__getitem__)
        if best != 1 and trial.per_query[best] > self.margin * trial.per_query[1]:
            return 1
        return best

    def measuring(self, key: Hashable) -> bool:
        """Whether calls for ``key`` are still timed (it has been sized and is undecided)."""
        trial = self._trials.get(key)
        return trial is not None and trial.chosen is None

    @property
    def chosen(self) -> dict[Hashable, int]:
        """The decided sizes by key."""
        return {key: t.chosen for key, t in self._trials.items() if t.chosen is not None}

    @property
    def settled(self) -> bool:
        """Whether every key seen so far is decided."""
        return all(t.chosen is not None for t in self._trials.values())

    @property
    def measurements(self) -> dict[Hashable, dict[int, float]]:
        """Seconds per query by key and size, as timed."""
        return {key: dict(t.per_query) for key, t in self._trials.items()}


def device_clock(device: torch.device) -> Callable[[], float]:
    """Return a clock for ``device`` that waits for queued GPU work before reading the time."""

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now
