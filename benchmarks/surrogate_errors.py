"""Claim: how far a surrogate's energy is from the reference's k steps into a window.

For every reference frame of the given runs (reference MD from ``python -m boostmd.data``,
or on-policy windows from ``--windows-from``), the signed energy error
``E_reference - E_surrogate`` at ``k`` steps after the frame is BoostMD's refresh error
for windows of ``k`` steps; positive means the surrogate is too soft there. Reports, per
surrogate and ``k``: RMS and mean of the energy error (meV) and the force RMSE (meV/Å).
Only the held-out part of each run (its last ``--validation-fraction``) is used unless
``--all-frames``: the rest is what ``python -m boostmd.train`` trained on. Prints one
JSON line.

    python benchmarks/surrogate_errors.py \
        --surrogate boostmd/forcefields/models/dipeptides-surrogate.pt \
        --data data/pairs data/windows
"""

import argparse
import json
from pathlib import Path

import numpy as np

from boostmd import MACEReference, Surrogate
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.training.run_files import load_trajectories
from boostmd.training.train import Pair, TrainConfig, errors_by_k, split_pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surrogate", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="run directories")
    parser.add_argument("--reference", type=Path, default=MODELS_DIR / "dipeptides-reference.pt")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 12])
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--all-frames", action="store_true")
    args = parser.parse_args()

    reference = MACEReference.load(args.reference)
    files = sorted(f for directory in args.data for f in directory.glob("*.extxyz"))
    runs = load_trajectories(files, reference.cutoff, reference.fingerprint)
    if args.all_frames:
        pairs = [Pair(i, r, k) for i, run in enumerate(runs) for r, k in run.pairs(max(args.k))]
    else:  # the pairs python -m boostmd.train held out
        config = TrainConfig(
            reference=args.reference,
            data=files,
            out=Path(),
            max_k=max(args.k),
            validation_fraction=args.validation_fraction,
        )
        pairs = split_pairs(runs, config)[1]
    pairs = [pair for pair in pairs if pair.k in args.k]
    figures = {"data": [str(d) for d in args.data], "held_out_only": not args.all_frames}
    for path in args.surrogate:
        errors = errors_by_k(Surrogate.load(path), runs, pairs)
        figures[str(path)] = {
            k: {
                "energy_rms_meV": round(1000 * float(np.sqrt(np.mean(energy**2))), 1),
                "energy_mean_meV": round(1000 * float(np.mean(energy)), 1),
                "force_rmse_meV_per_A": round(1000 * float(np.sqrt(np.mean(forces))), 1),
                "windows": len(energy),
            }
            for k, (energy, forces) in errors.items()
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
