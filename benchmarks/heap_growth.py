"""Claim: a fixed glibc mmap threshold bounds the heap of long reference MD at no cost.

The shipped reference runs Langevin MD (300 K, 1 fs, 1/ps) on GLN dipeptide, alone, in
fresh worker processes that alternate between glibc's default allocator settings and
:func:`boostmd.bound_heap_growth`. Each worker reports its seconds per reference call,
and, every 50 calls, the heap's size and the bytes in use (``mallinfo2``). Prints one JSON
line: per setting the median seconds per call, the largest heap and in-use sizes (GB),
and the ratio of the call times. Fragmentation starts at a time that depends on the
process's history, so short workers may not show it under the default setting; the
validation's 3300-step GLN runs reached 3 GB of heap (23 GB once) with 0.21 GB in use.

    python benchmarks/heap_growth.py --steps 1500 --repeats 2
"""

import argparse
import ctypes
import json
import subprocess
import sys
import time

import numpy as np

FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (*FIELDS, "fordblks", "keepcost")]


def worker(steps: int, bounded: bool) -> dict:
    from boostmd import bound_heap_growth
    from boostmd.dynamics.calculator import ReferenceCalculator
    from boostmd.dynamics.md import langevin, thermal_momenta
    from boostmd.forcefields.pretrained import load_pretrained
    from boostmd.validation.validate import starting_dipeptide

    if bounded:
        bound_heap_growth()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    reference, _ = load_pretrained()
    atoms = starting_dipeptide("GLN")
    thermal_momenta(atoms, 300.0, np.random.default_rng(0))
    atoms.calc = ReferenceCalculator(reference)
    dynamics = langevin(atoms, 300.0, 1.0, 1.0, rng=0)
    heap, in_use = [], []

    def sample() -> None:
        info = libc.mallinfo2()
        heap.append(info.arena / 1e9)
        in_use.append(info.uordblks / 1e9)

    dynamics.attach(sample, interval=50)
    start = time.perf_counter()
    dynamics.run(steps)
    seconds = time.perf_counter() - start
    return {"seconds_per_call": seconds / steps, "heap_GB": max(heap), "in_use_GB": max(in_use)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="MD steps per worker")
    parser.add_argument("--repeats", type=int, default=2, help="workers per setting")
    parser.add_argument("--worker", choices=("default", "bounded"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.worker == "bounded")))
        return
    results: dict[str, list[dict]] = {"default": [], "bounded": []}
    for _ in range(args.repeats):
        for setting in results:
            command = [sys.executable, __file__, "--steps", str(args.steps), "--worker", setting]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[setting].append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        setting: {
            "seconds_per_call": float(np.median([r["seconds_per_call"] for r in runs])),
            "largest_heap_GB": max(r["heap_GB"] for r in runs),
            "largest_in_use_GB": max(r["in_use_GB"] for r in runs),
        }
        for setting, runs in results.items()
    }
    summary["call_time_ratio_bounded_over_default"] = (
        summary["bounded"]["seconds_per_call"] / summary["default"]["seconds_per_call"]
    )
    print(json.dumps({"steps": args.steps, "repeats": args.repeats, **summary}))


if __name__ == "__main__":
    main()
