"""Claim: a BoostMD frame preparation costs at most 10% of a reference call at 2,750 atoms.

Boxes of ``side**3`` alanine dipeptides on a 12 Å grid (22, 594, 2,750 and 11,264 atoms;
neighbouring copies share edges, so each box is one connected graph) with the shipped
reference and surrogate, float32, on this machine's threads. Per size: the reference
call (energy, forces, node features), the frame preparation (``Surrogate.prepare``:
neighbour graph, central pair-force decompositions, per-edge coefficients) and one
surrogate step (energy and forces), as medians; and the pair-force solve alone (its
conjugate-gradient iterations). Prints one JSON line per size and a summary line.

    python benchmarks/boostmd_scaling.py
    python benchmarks/boostmd_scaling.py --sides 1 3 --repeats 1     # a quick look
    python benchmarks/boostmd_scaling.py --device cuda               # where a GPU is lent
"""

import argparse
import json
import time

import numpy as np
import torch
from ase import Atoms
from timing import device_sync, median_ms

from boostmd.forcefields.graph import radius_graph, solve_pair_forces
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained


def box(side, spacing=12.0):
    """``side**3`` copies of alanine dipeptide on a cubic grid."""
    base = capped_dipeptide("ALA")
    centred = base.get_positions() - base.get_positions().mean(0)
    cells = [(i, j, k) for i in range(side) for j in range(side) for k in range(side)]
    positions = np.concatenate([centred + spacing * np.array(cell) for cell in cells])
    return Atoms(numbers=np.tile(base.numbers, len(cells)), positions=positions)


def measure(reference, surrogate, atoms, repeats, device):
    sync = device_sync(device)
    result = reference(atoms)

    def prepare():
        with torch.no_grad():
            return surrogate.prepare(
                atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
            )

    frame = prepare()
    moved = atoms.positions + np.random.default_rng(0).normal(0, 0.02, atoms.positions.shape)
    edges, _ = radius_graph(atoms.positions, surrogate.config.cutoff)
    edge_index = torch.as_tensor(edges, device=device)
    positions = torch.as_tensor(atoms.positions, device=device)
    shifts = torch.zeros(edge_index.shape[1], 3, dtype=torch.float64, device=device)
    if sync is not None:
        sync()
    start = time.perf_counter()
    solution = solve_pair_forces(positions, result.forces, edge_index, shifts)
    if sync is not None:
        sync()
    solve_ms = 1000 * (time.perf_counter() - start)
    reference_ms = median_ms(lambda: reference(atoms), repeats, sync)
    prepare_ms = median_ms(prepare, repeats, sync)
    step_ms = median_ms(lambda: surrogate.energy_and_forces(frame, moved), max(3, repeats), sync)
    return {
        "atoms": len(atoms),
        "edges": int(edge_index.shape[1]),
        "reference_ms": round(reference_ms, 1),
        "prepare_ms": round(prepare_ms, 1),
        "prepare_over_reference": round(prepare_ms / reference_ms, 4),
        "surrogate_step_ms": round(step_ms, 2),
        "pair_force_solve_ms": round(solve_ms, 1),
        "pair_force_iterations": solution.iterations,
        "pair_force_residual": solution.residual,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[1, 3, 5, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference, surrogate = load_pretrained(device=args.device)
    records = []
    for side in args.sides:
        records.append(measure(reference, surrogate, box(side), args.repeats, args.device))
        print(json.dumps(records[-1]), flush=True)
    at = {r["atoms"]: r for r in records}
    summary = {
        "summary": "boostmd_scaling",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "prepare_over_reference": {n: r["prepare_over_reference"] for n, r in at.items()},
        "target_at_2750_atoms": 0.10,
        "met": at[2750]["prepare_over_reference"] <= 0.10 if 2750 in at else None,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
