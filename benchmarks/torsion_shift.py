"""Claim: windows of N >= 15 shift ALA's phi population; N = 10 stays within the reference's noise.

The long validation's phi PMF is an RMS over 10-degree bins that counts any bin with 20
frames, so a few sparsely visited bins at the basins' edges set it; it failed N = 10 and
N = 20 alike (2.04x and 2.10x). This script asks a coarser, steadier question of the same
runs: the fraction of frames with phi between -120 and -60 degrees (the C7eq side of
ALA's beta basin), per 5 ps block. The reference's value comes from all six stored exact
replicas of the long preset (``reference``, ``reference-2``, ``reference-adaptive``), each
sampler's from the checkpoints of ``python -m boostmd.validate --preset long --peptide ALA
--out DIR``. The standard error treats the blocks as independent (block variance over the
number of blocks).

It also asks whether a sampler's configurations are equally hot on both sides: the mean
``|F_i|^2`` of the reference's forces over the hydrogens and over the heavy atoms, on the
C7eq side against the C5 side (phi below -120 degrees), as a ratio. For the reference it
is the same on both sides (the configurational temperature is the bath's everywhere);
its forces are taken every 20th frame, as BoostMD's are audited (every N-th frame). A
ratio above 1 says the sampler's effective potential is softer on the C7eq side than on
the C5 side, which favours C7eq by vibrational entropy. Its standard error treats the
frames as independent. Prints one JSON line::

    python benchmarks/torsion_shift.py --runs N10=runs/val-long-ALA-n10 N20=runs/val-long-ALA
"""

import argparse
import json
from pathlib import Path

import numpy as np

from boostmd.validation.stored import STORE, stored_sampling_runs
from boostmd.validation.validate import PRESETS

LOW, HIGH = -120.0, -60.0
BLOCK_STEPS = 5000
AUDIT_EVERY = 20  # the reference's forces every this many frames, as BoostMD's N = 20 audits


def _blocks(phi_degrees: np.ndarray, skip: int) -> np.ndarray:
    phi = np.asarray(phi_degrees[skip:], dtype=float)
    inside = (phi > LOW) & (phi < HIGH)
    return np.array([block.mean() for block in np.array_split(inside, len(inside) // BLOCK_STEPS)])


def _side_ratio(runs: list[dict], skip: int, every: int) -> dict[str, list[float]]:
    """C7eq-side over C5-side mean reference ``|F|^2`` (hydrogens, heavy atoms), +- error."""
    sides = {"c7eq": [], "c5": []}
    for run in runs:
        phi = np.asarray(run["phi"][skip::every], dtype=float)
        forces = np.asarray(run["reference_force_sq"][skip::every], dtype=float)
        known = np.isfinite(forces).all(axis=1)
        sides["c7eq"].append(forces[known & (phi > LOW) & (phi < HIGH)])
        sides["c5"].append(forces[known & (phi <= LOW)])
    c7eq, c5 = (np.concatenate(sides[side]) for side in ("c7eq", "c5"))
    ratio = c7eq.mean(axis=0) / c5.mean(axis=0)
    relative = np.hypot(
        c7eq.std(axis=0) / c7eq.mean(axis=0) / np.sqrt(len(c7eq)),
        c5.std(axis=0) / c5.mean(axis=0) / np.sqrt(len(c5)),
    )
    return {
        group: [round(float(ratio[k]), 3), round(float(ratio[k] * relative[k]), 3)]
        for k, group in enumerate(("hydrogen", "heavy"))
    }


def _summary(blocks: list[np.ndarray]) -> dict[str, float]:
    values = np.concatenate(blocks)
    return {
        "runs": len(blocks),
        "blocks": len(values),
        "fraction": round(float(values.mean()), 3),
        "standard_error": round(float(values.std(ddof=1) / np.sqrt(len(values))), 3),
        "per_run": [round(float(b.mean()), 3) for b in blocks],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", nargs="*", default=[], metavar="LABEL=DIR", help="validation output directories"
    )
    args = parser.parse_args()
    skip = PRESETS["long"]["equilibration_steps"] + 1
    exact = stored_sampling_runs(STORE, "ALA", PRESETS["long"]["steps"])
    reference = _summary([_blocks(run["phi"], skip) for run in exact])
    reference["force_sq_c7eq_over_c5"] = _side_ratio(exact, skip, AUDIT_EVERY)
    figures = {"phi_range_deg": [LOW, HIGH], "block_ps": BLOCK_STEPS / 1000}
    figures["reference"] = reference
    for item in args.runs:
        label, _, folder = item.partition("=")
        paths = sorted(Path(folder, "checkpoints").glob("ALA-boostmd-checked-*.npz"))
        if not paths:
            raise SystemExit(f"no ALA-boostmd-checked-*.npz checkpoints under {folder}/checkpoints")
        runs = [dict(np.load(path)) for path in paths]
        summary = _summary([_blocks(run["phi"], skip) for run in runs])
        summary["force_sq_c7eq_over_c5"] = _side_ratio(runs, skip, 1)  # audited frames only
        shift = summary["fraction"] - reference["fraction"]
        error = np.hypot(summary["standard_error"], reference["standard_error"])
        summary["shift"] = round(shift, 3)
        summary["shift_sigmas"] = round(float(shift / error), 1)
        figures[label] = summary
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
