"""A validation's independent MD runs spread over worker processes.

Every run of a validation (each role, replica and system) needs nothing from the others
until the report, so ``python -m boostmd.validate --workers K`` hands them to an
executor with the :mod:`concurrent.futures` interface:

- on one machine (default), a :class:`~concurrent.futures.ProcessPoolExecutor` of ``K``
  processes started fresh (``spawn``), each with ``--threads-per-worker`` torch threads;
- on a cluster, ``--scheduler tcp://HOST:8786`` sends them to a running Dask scheduler
  (``pip install "boostmd[cluster]"``) through its ``concurrent.futures`` executor
  (:meth:`distributed.Client.get_executor`); ``--workers`` then limits how many runs are
  in flight at once.

A worker loads the models and builds the systems once per process
(:func:`run_in_worker`), and runs one job at a time, exactly as ``--no-batch`` does in
one process with the same threads. So the report does not depend on how many workers
there are: each run's numbers are those of the run alone.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

__all__ = ["executor", "map_in_order", "set_threads"]

logger = logging.getLogger(__name__)

CLUSTER_INSTALL = 'pip install "boostmd[cluster]" (Dask distributed)'


def set_threads(threads: int) -> None:
    """Give this worker process ``threads`` torch threads (a process pool's initializer)."""
    import torch

    torch.set_num_threads(threads)


@contextmanager
def executor(workers: int, threads: int, scheduler: str | None = None) -> Iterator[Executor]:
    """Open an executor for a validation's runs; shut it down on leaving.

    Parameters
    ----------
    workers
        Processes on this machine, or (with ``scheduler``) runs in flight at once.
    threads
        Torch threads per process on this machine (a Dask worker's tasks set it too).
    scheduler
        Address of a running Dask scheduler (``tcp://host:8786``), or ``None`` for a local
        process pool.

    Raises
    ------
    ValueError
        If ``workers`` or ``threads`` is below 1.
    ImportError
        If ``scheduler`` is given without Dask's ``distributed`` installed.
    """
    if workers < 1 or threads < 1:
        raise ValueError(
            f"--workers and --threads-per-worker must be at least 1, got {workers} and {threads}"
        )
    if scheduler is None:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=set_threads,
            initargs=(threads,),
        )
        with pool:
            yield pool
        return
    try:
        from distributed import Client
    except ImportError as error:
        raise ImportError(
            f"--scheduler {scheduler} needs Dask's distributed: {CLUSTER_INSTALL}"
        ) from error
    with Client(scheduler) as client:
        logger.info("validation runs go to the Dask scheduler at %s", scheduler)
        yield client.get_executor()


def map_in_order(
    pool: Executor,
    task: Callable[..., Any],
    items: Sequence[Any],
    *args: Any,
    limit: int | None = None,
    describe: Callable[[Any], str] = str,
) -> list[Any]:
    """Run ``task(item, *args)`` for every item on ``pool``; results in the items' order.

    At most ``limit`` tasks are in flight at once (``None``: all are submitted at once);
    a bar counts the finished ones. The first task that fails raises its error here
    (logged with the item's ``describe``); tasks not yet started are cancelled.
    """
    results: list[Any] = [None] * len(items)
    pending: dict = {}
    queue = list(enumerate(items))
    limit = limit or len(items) or 1
    with tqdm(total=len(items), desc="runs finished", unit="run") as bar:
        while queue or pending:
            while queue and len(pending) < limit:
                index, item = queue.pop(0)
                pending[pool.submit(task, item, *args)] = index
            done = next(as_completed(pending))
            index = pending.pop(done)
            try:
                results[index] = done.result()
            except Exception:
                logger.error("the run %s failed on its worker", describe(items[index]))
                for future in pending:
                    future.cancel()
                raise
            bar.update()
    return results
