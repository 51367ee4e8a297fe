"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

import statistics
import time


def median_ms(fn, repeats=20):
    """Median wall time of ``fn()`` over ``repeats`` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
