"""Replicas advanced together: their model calls gathered into batched calls.

Many independent MD runs (replicas, or different systems) each keep their own integrator,
calculator and random numbers, so every decision a run makes is its own: where its
window ends, whether :class:`~boostmd.dynamics.integrator.BoostLangevin` rejects the window and
reruns it with the reference, its force guard, its curvature fit. What they share is the
models. :meth:`ReplicaBatch.run` runs each replica in its own thread; every model call a
replica's calculator makes waits until each running replica has made one, and then all
of them run at once, one batched call per kind::

    reference   MACEReference.compute_many over every replica that needs the reference
    frame       Surrogate.prepare_many over those replicas' new reference frames
    surrogate   one surrogate pass over ReferenceFrame.join of every replica's frame
    window      the surrogate steps of every replica's window, integrated together on the
                models' device (BoostLangevin's device windows, boostmd.dynamics.device_window)

So ``BoostLangevin`` replicas in step make one batched reference call, one batched frame
preparation and one batched window per window (with ``device_windows=False`` or ASE's
integrators, one batched surrogate call per step), and a replica that reruns a rejected
window with the reference shares those calls with the others' windows. The thread that
called :meth:`~ReplicaBatch.run` makes the batched calls while the replicas wait; the
Python work of the integrators (ASE's Langevin step, the calculators' bookkeeping) runs
one replica after the other, under the GIL.

With one replica every call is the unbatched call, so its results are those of the
unbatched path bit for bit. With more, batched calls equal single calls to rounding, and a
run's numbers can depend in the last bits on which other replicas shared its calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from boostmd.dynamics.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.dynamics.model_calls import ModelCalls
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate

__all__ = ["ReplicaBatch", "ReplicaStopped"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The order in which a round's calls run: a replica waits on one call at a time, so the
# order only decides which batch runs first.
_KINDS = ("reference", "frame", "surrogate", "window")


_PENDING = object()  # a request's result before its call is made


class ReplicaStopped(RuntimeError):
    """A replica was stopped because another one failed or the run was interrupted."""


@dataclass(eq=False)
class _Request:
    kind: str
    args: tuple
    replica: int
    result: Any = _PENDING
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ReplicaBatch(ModelCalls):
    """Run several MD replicas together, batching their reference and surrogate calls.

    Parameters
    ----------
    reference
        The reference force field every replica uses.
    surrogate
        Its surrogate (``None`` when only reference-only replicas run).
    max_atoms
        The most atoms one batched call may hold; a round's calls of one kind beyond it are
        made as several batched calls (default: no limit). Bounds the memory of a round
        on a GPU, as TorchSim's autobatching does by memory.

    Attributes
    ----------
    batched_calls, requests
        Per kind of call (``reference``, ``frame``, ``surrogate``, ``window``): the batched
        calls made and the replicas' calls they served (``requests / batched_calls`` is the
        mean batch size). Calls made outside :meth:`run` are not counted.
    model_seconds
        Wall time spent in the batched calls; the rest of a run is the integrators' and
        calculators' Python work and the hand-overs between threads.

    Examples
    --------
    >>> batch = ReplicaBatch(reference, surrogate)  # doctest: +SKIP
    >>> runs = []  # doctest: +SKIP
    >>> for seed, atoms in enumerate(replicas):  # doctest: +SKIP
    ...     atoms.calc = batch.boostmd_calculator(interval=10)
    ...     runs.append(BoostLangevin(atoms, 1 * units.fs, 300, 0.001 / units.fs, rng=seed))
    >>> batch.run([lambda run=run: run.run(1000) for run in runs])  # doctest: +SKIP
    """

    def __init__(
        self,
        reference: MACEReference,
        surrogate: Surrogate | None = None,
        max_atoms: int | None = None,
    ) -> None:
        if max_atoms is not None and not (isinstance(max_atoms, int) and max_atoms > 0):
            raise ValueError(f"max_atoms must be a positive integer or None, got {max_atoms!r}")
        self.max_atoms = max_atoms
        if surrogate is not None:
            surrogate = surrogate.to(dtype=reference.dtype, device=reference.device).eval()
        super().__init__(reference, surrogate)
        self.batched_calls: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.model_seconds = 0.0
        self._condition = threading.Condition()
        self._local = threading.local()
        self._waiting: list[_Request] = []
        self._active = 0
        self._stopping = False
        self._joined: tuple[tuple[ReferenceFrame, ...], ReferenceFrame] | None = None

    # ----------------------------------------------------------------- building
    def boostmd_calculator(self, **kwargs: Any) -> BoostMDCalculator:
        """Build a :class:`~boostmd.dynamics.calculator.BoostMDCalculator` whose calls this batches.

        Parameters
        ----------
        **kwargs
            Passed to :class:`~boostmd.dynamics.calculator.BoostMDCalculator` (``interval``,
            ``schedule``, ``frame``, ...).
        """
        if self.surrogate_model is None:
            raise ValueError("this ReplicaBatch has no surrogate: pass one to run BoostMD")
        return BoostMDCalculator(self.reference_model, self.surrogate_model, calls=self, **kwargs)

    def reference_calculator(self, **kwargs: Any) -> ReferenceCalculator:
        """Build a :class:`~boostmd.dynamics.calculator.ReferenceCalculator` batched by this."""
        return ReferenceCalculator(self.reference_model, calls=self, **kwargs)

    # ----------------------------------------------------------------- running
    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """Run each task (e.g. ``lambda: dynamics.run(1000)``) as a replica; their results.

        Each task runs in a thread of its own, and this thread makes the batched model
        calls (so torch always computes on the caller's thread, as without batching).
        Model calls of this batch's calculators made inside a task are batched with the
        other tasks'; anywhere else they are made at once, alone. The first error of a task
        stops the others at their next model call (:class:`ReplicaStopped`) and is raised
        here, as is a ``KeyboardInterrupt``.
        """
        tasks = list(tasks)
        with self._condition:
            if self._active:
                raise RuntimeError("this ReplicaBatch is already running replicas")
            self._active, self._stopping, self._joined = len(tasks), False, None
        results: list[Any] = [None] * len(tasks)
        errors: list[BaseException | None] = [None] * len(tasks)
        threads = [
            threading.Thread(
                target=self._replica,
                args=(index, task, results, errors),
                name=f"replica-{index}",
                daemon=True,
            )
            for index, task in enumerate(tasks)
        ]
        for thread in threads:
            thread.start()
        try:
            self._serve()
        except BaseException:  # KeyboardInterrupt: stop the replicas, then raise it
            self._stop()
            self._serve()
            raise
        finally:
            for thread in threads:
                thread.join()
            self._joined = None
        for error in errors:
            if error is not None and not isinstance(error, ReplicaStopped):
                raise error
        return results

    def _replica(self, index: int, task: Callable, results: list, errors: list) -> None:
        self._local.replica = index
        try:
            results[index] = task()
        except BaseException as error:  # handed to run(), which raises it
            errors[index] = error
            if not isinstance(error, ReplicaStopped):
                logger.debug("replica %d failed (%s); stopping the others", index, error)
                self._stop()
        finally:
            self._local.replica = None
            with self._condition:
                self._active -= 1
                self._condition.notify()

    def _stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()

    def _serve(self) -> None:
        """Make each round's calls once every running replica waits on one, until all end."""
        while True:
            with self._condition:
                while not self._waiting or (
                    len(self._waiting) < self._active and not self._stopping
                ):
                    if not self._active:
                        return
                    self._condition.wait(0.2)  # a timeout keeps Ctrl-C responsive
                requests = sorted(self._waiting, key=lambda request: request.replica)
                self._waiting = []
                stopping = self._stopping
            try:
                for kind in _KINDS:
                    group = [request for request in requests if request.kind == kind]
                    for chunk in self._chunks(group) if not stopping else ():
                        self._execute(kind, chunk)
            finally:  # interrupted or stopping: the calls not made stop their replicas
                for request in requests:
                    if request.result is _PENDING and request.error is None:
                        request.error = ReplicaStopped(
                            "stopped: another replica failed or the run was interrupted"
                        )
                    request.done.set()

    # ----------------------------------------------------------------- model calls
    def _call(self, kind: str, args: tuple) -> Any:
        """Wait for this round's batched call of ``kind`` (at once, alone, outside run())."""
        replica = getattr(self._local, "replica", None)
        if replica is None:  # not inside run(): nothing to wait for
            return super()._call(kind, args)
        request = _Request(kind, args, replica)
        with self._condition:
            if self._stopping:
                raise ReplicaStopped("stopped: another replica failed or the run was interrupted")
            self._waiting.append(request)
            self._condition.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _chunks(self, group: list[_Request]) -> list[list[_Request]]:
        """Split a round's calls of one kind into batches of at most ``max_atoms`` atoms."""
        if self.max_atoms is None or not group:
            return [group] if group else []
        chunks: list[list[_Request]] = [[]]
        atoms = 0
        for request in group:
            first = request.args[0]  # the atoms, or the frame of a surrogate call or window
            size = len(first.positions) if isinstance(first, ReferenceFrame) else len(first)
            if chunks[-1] and atoms + size > self.max_atoms:
                chunks.append([])
                atoms = 0
            chunks[-1].append(request)
            atoms += size
        return chunks

    def _execute(self, kind: str, group: list[_Request]) -> None:
        self.batched_calls[kind] += 1
        self.requests[kind] += len(group)
        start = time.perf_counter()
        try:
            results = self.many(kind, [request.args for request in group])
        except Exception as error:
            if len(group) == 1:
                group[0].error = error
                return
            for request in group:  # find whose call failed: each alone, errors to their own
                try:
                    request.result = self.many(kind, [request.args])[0]
                except Exception as own:
                    request.error = own
            return
        finally:
            self.model_seconds += time.perf_counter() - start
        for request, result in zip(group, results):
            request.result = result

    def _join(self, frames: Sequence[ReferenceFrame]) -> ReferenceFrame:
        """``ReferenceFrame.join(frames)``, made once while the same frames step together.

        A window and the refresh that ends it use the same frames: one join serves both.
        """
        frames = tuple(frames)
        cached = self._joined
        if cached is not None and len(cached[0]) == len(frames):
            if all(a is b for a, b in zip(cached[0], frames)):
                return cached[1]
        joined = ReferenceFrame.join(frames)
        self._joined = (frames, joined)
        return joined
