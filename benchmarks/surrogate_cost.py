"""Claim: a surrogate step costs at most 3% of a MACE-OFF-medium-like reference call.

Alanine dipeptide (22 atoms), float32, this CPU. Reference: random-weight ScaleShiftMACE
with 96x0e+96x1o hidden irreps, 2 interactions, 5 Å cutoff, correlation 3 (the cost of a
MACE depends on its width, not on its weights). Both compute energy and forces; timings
are interleaved in one run and the median per call is reported. Prints one JSON line.

    python benchmarks/surrogate_cost.py
"""

import argparse
import json
import statistics

import numpy as np
import torch
from timing import median_ms

from boostmd import BoostMDCalculator, MACEReference, Surrogate
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.testing import build_mace


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    atoms = capped_dipeptide("ALA")
    reference = MACEReference(build_mace("96x0e+96x1o", dtype=torch.float32))
    surrogate = Surrogate.for_reference(reference)
    result = reference(atoms)
    with torch.no_grad():
        frame = surrogate.prepare(
            atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
        )
    moved = atoms.positions + np.random.default_rng(0).normal(0, 0.02, atoms.positions.shape)

    calc = BoostMDCalculator(reference, surrogate, interval=10**9, frame="start")
    atoms.calc = calc
    atoms.get_forces()  # the reference step of the calculator

    def calculator_reuse_step():
        atoms.positions += 1e-4  # a new step: ASE sees changed positions
        atoms.get_forces()

    timings = {"reference": [], "surrogate": [], "calculator_reuse": [], "prepare": []}
    for _ in range(args.rounds):
        timings["reference"].append(median_ms(lambda: reference(atoms), args.repeats))
        timings["surrogate"].append(
            median_ms(lambda: surrogate.energy_and_forces(frame, moved), args.repeats)
        )
        timings["calculator_reuse"].append(median_ms(calculator_reuse_step, args.repeats))
        with torch.no_grad():
            timings["prepare"].append(
                median_ms(
                    lambda: surrogate.prepare(
                        atoms.numbers,
                        result.node_features,
                        atoms.positions,
                        result.energy,
                        result.forces,
                    ),
                    args.repeats,
                )
            )
    ms = {name: statistics.median(values) for name, values in timings.items()}
    print(
        json.dumps(
            {
                "benchmark": "surrogate_cost",
                "atoms": len(atoms),
                "dtype": "float32",
                "threads": torch.get_num_threads(),
                "reference_ms": round(ms["reference"], 3),
                "surrogate_ms": round(ms["surrogate"], 3),
                "calculator_reuse_step_ms": round(ms["calculator_reuse"], 3),
                "prepare_per_reference_call_ms": round(ms["prepare"], 3),
                "surrogate_over_reference": round(ms["surrogate"] / ms["reference"], 4),
                "calculator_reuse_over_reference": round(
                    ms["calculator_reuse"] / ms["reference"], 4
                ),
                "target_max_ratio": 0.03,
            }
        )
    )


if __name__ == "__main__":
    main()
