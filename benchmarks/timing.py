"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

import statistics
import time


def median_ms(fn, repeats=20, sync=None):
    """Median wall time of ``fn()`` over ``repeats`` calls, in milliseconds.

    ``sync`` (``torch.cuda.synchronize`` on a GPU) runs before each call and before each
    reading of the clock after it, so that queued device work is counted.
    """
    times = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def device_sync(device):
    """``torch.cuda.synchronize`` for a CUDA device, else ``None`` (nothing to wait for)."""
    import torch

    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
