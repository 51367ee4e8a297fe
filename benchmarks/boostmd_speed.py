"""Claims: BoostMD on alanine dipeptide with the shipped models, CPU, float32, 300 K.

- surrogate cost per call at most 3% of the reference's;
- MD speedup over reference-only MD (Langevin, friction 1/ps) at least 6x at N = 10 with
  ``BoostLangevin`` (checked windows: the timing counts every rerun reference call), also
  N = 5 and N = 20, and with ASE's plain ``Langevin`` (ideal N / (1 + (N-1) c));
- surrogate force RMSE against the reference over k = 1..10 at most 50 meV/Å, both on a
  fresh reference trajectory and on BoostMD's own trajectory (the configurations its
  dynamics actually visit), and lower than each baseline at the same k: the reference
  forces reused unchanged, the first-order expansion alone, and a small MACE trained on
  the same data (``benchmarks/train_small_mace.py``; reported as missing if not trained).

Timings are interleaved in one run. Prints one JSON line.

    python benchmarks/boostmd_speed.py
"""

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from timing import median_ms

from boostmd import BoostMDCalculator, MACEReference, Surrogate
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.md import boost_langevin
from boostmd.dynamics.md import langevin as run_langevin
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

SMALL_MACE = Path("runs/small-mace/small-mace.pt")


def langevin(atoms, calc, steps, seed, checked=False):
    atoms = atoms.copy()
    atoms.calc = calc
    make = boost_langevin if checked else run_langevin
    dynamics = make(atoms, 300.0, timestep_fs=1.0, friction_per_ps=1.0, rng=seed)
    positions = []
    dynamics.attach(lambda: positions.append(atoms.positions.copy()), interval=1)
    start = time.perf_counter()
    dynamics.run(steps)
    return time.perf_counter() - start, np.asarray(positions)


def cost_ratio(reference, surrogate, atoms):
    result = reference(atoms)
    with torch.no_grad():
        frame = surrogate.prepare(
            atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
        )
    moved = atoms.positions + np.random.default_rng(0).normal(0, 0.02, atoms.positions.shape)
    ref_ms, sur_ms = [], []
    for _ in range(5):
        ref_ms.append(median_ms(lambda: reference(atoms)))
        sur_ms.append(median_ms(lambda: surrogate.energy_and_forces(frame, moved)))
    return statistics.median(ref_ms), statistics.median(sur_ms)


def force_errors(reference, surrogate, numbers, positions, max_k, small_mace):
    """RMSE by k of the surrogate and the baselines over reference frames every max_k."""
    errors = {
        name: {k: [] for k in range(1, max_k + 1)}
        for name in ("surrogate", "reuse_reference_forces", "first_order", "small_mace")
    }
    labels = [reference.compute(numbers, p) for p in positions]
    for start in range(0, len(positions) - max_k, max_k):
        ref = labels[start]
        with torch.no_grad():
            frame = surrogate.prepare(
                numbers, ref.node_features, positions[start], ref.energy, ref.forces
            )
        linear = replace(frame, coefficients=torch.zeros_like(frame.coefficients))
        for k in range(1, max_k + 1):
            exact = labels[start + k].forces.double()
            predictions = {
                "surrogate": surrogate.energy_and_forces(frame, positions[start + k])[1],
                "reuse_reference_forces": ref.forces,
                "first_order": surrogate.energy_and_forces(linear, positions[start + k])[1],
            }
            if small_mace is not None:
                predictions["small_mace"] = small_mace.compute(numbers, positions[start + k]).forces
            for name, forces in predictions.items():
                errors[name][k].append(float(((forces.double() - exact) ** 2).mean()))
    return {
        name: {k: round(1000 * float(np.sqrt(np.mean(v))), 1) for k, v in by_k.items()}
        for name, by_k in errors.items()
        if by_k[1]
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="MD steps per timing run")
    parser.add_argument(
        "--test-steps",
        type=int,
        default=400,
        help="length of the fresh reference trajectory for force errors",
    )
    parser.add_argument("--reference", type=Path, help="default: shipped model")
    parser.add_argument("--surrogate", type=Path, help="default: shipped model")
    parser.add_argument("--small-mace", type=Path, default=SMALL_MACE)
    args = parser.parse_args()

    if args.reference and args.surrogate:
        reference = MACEReference.load(args.reference)
        surrogate = Surrogate.load(args.surrogate)
    else:
        reference, surrogate = load_pretrained("dipeptides")
    small_mace = MACEReference.load(args.small_mace) if args.small_mace.is_file() else None
    atoms = capped_dipeptide("ALA")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(11))

    reference_ms, surrogate_ms = cost_ratio(reference, surrogate, atoms)
    c = surrogate_ms / reference_ms
    md = {}
    reference_seconds = []
    for interval in (5, 10, 20):
        seconds_ref, _ = langevin(atoms, ReferenceCalculator(reference), args.steps, 3)
        reference_seconds.append(seconds_ref)
        for label, checked in (("checked", True), ("plain", False)):
            calc = BoostMDCalculator(reference, surrogate, interval=interval, frame="start")
            seconds_boost, _ = langevin(atoms, calc, args.steps, 3, checked=checked)
            md[f"N={interval}_{label}"] = {
                "speedup": round(seconds_ref / seconds_boost, 2),
                "ideal_from_cost_ratio": round(interval / (1 + (interval - 1) * c), 2),
                "reference_calls": calc.stats.full_steps,
                "surrogate_calls": calc.stats.reuse_steps,
            }
    _, test_positions = langevin(atoms, ReferenceCalculator(reference), args.test_steps, 12345)
    errors = force_errors(reference, surrogate, atoms.numbers, test_positions, 10, small_mace)
    worst = max(errors["surrogate"].values())
    # The surrogate's own trajectory: BoostMD (N = 10, windows at steps 0, 10, 20, ...)
    # moves the atoms; the same windows are re-prepared and compared with the reference.
    own_calc = BoostMDCalculator(reference, surrogate, interval=10, frame="start")
    _, own_positions = langevin(atoms, own_calc, args.test_steps, 54321, checked=True)
    own_errors = force_errors(reference, surrogate, atoms.numbers, own_positions, 10, None)[
        "surrogate"
    ]
    beats = {
        name: all(errors["surrogate"][k] < v for k, v in by_k.items())
        for name, by_k in errors.items()
        if name != "surrogate"
    }
    small_cost = None
    if small_mace is not None:
        small_cost = round(median_ms(lambda: small_mace(atoms)) / surrogate_ms, 1)
    print(
        json.dumps(
            {
                "benchmark": "boostmd_speed",
                "atoms": len(atoms),
                "dtype": "float32",
                "threads": torch.get_num_threads(),
                "md_steps": args.steps,
                "reference_ms": round(reference_ms, 2),
                "surrogate_ms": round(surrogate_ms, 3),
                "cost_ratio": round(c, 4),
                "cost_ratio_target_max": 0.03,
                "md": md,
                "speedup_target_min_at_N10": 6.0,
                "force_rmse_meV_per_A_by_k": errors,
                "surrogate_worst_k_rmse_meV_per_A": worst,
                "surrogate_force_rmse_on_own_trajectory_meV_per_A_by_k": own_errors,
                "surrogate_worst_k_rmse_on_own_trajectory_meV_per_A": max(own_errors.values()),
                "rmse_target_max": 50.0,
                "surrogate_beats_baseline_at_every_k": beats,
                "small_mace": str(args.small_mace)
                if small_mace
                else "missing: run benchmarks/train_small_mace.py",
                "small_mace_cost_over_surrogate": small_cost,
            }
        )
    )


if __name__ == "__main__":
    main()
