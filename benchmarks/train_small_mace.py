"""Baseline for boostmd_speed.py: a small MACE trained on the surrogate's own data.

The paper's claim is that BoostMD beats shrinking the model to the surrogate's cost. This
trains the smallest sensible MACE (16x0e, one interaction, 4 Å) with mace-torch's
``mace_run_train`` on frames of the same reference MD runs the surrogate was trained on,
and saves it in the safe weights format for the benchmark.

    python benchmarks/train_small_mace.py --data data/pairs --runs ALA_300K ALA_500K ...
"""

import argparse
import random
import subprocess
from pathlib import Path

import torch
from ase.io import read, write

from boostmd.forcefields.mace_io import save_mace


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/pairs"))
    parser.add_argument("--runs", nargs="*", help="run names (default: all in --data)")
    parser.add_argument("--out", type=Path, default=Path("runs/small-mace"))
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    files = sorted(args.data.glob("*.extxyz"))
    if args.runs:
        files = [f for f in files if f.stem in set(args.runs)]
    frames = []
    for path in files:  # the first 80% of each run: the surrogate's training block
        run = read(path, index=":")
        frames.extend(run[: int(0.8 * len(run))])
    random.Random(0).shuffle(frames)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.extxyz", frames[: args.frames], format="extxyz")
    subprocess.run(
        [
            "mace_run_train",
            "--name",
            "small-mace",
            "--train_file",
            "train.extxyz",
            "--valid_fraction",
            "0.05",
            "--E0s",
            "average",
            "--model",
            "MACE",
            "--hidden_irreps",
            "16x0e",
            "--num_interactions",
            "1",
            "--r_max",
            "4.0",
            "--max_ell",
            "2",
            "--correlation",
            "2",
            "--batch_size",
            "8",
            "--max_num_epochs",
            str(args.epochs),
            "--energy_key",
            "REF_energy",
            "--forces_key",
            "REF_forces",
            "--forces_weight",
            "100",
            "--device",
            "cpu",
            "--default_dtype",
            "float32",
            "--seed",
            "1",
            "--restart_latest",
        ],
        cwd=args.out,
        check=True,
    )
    model = torch.load(args.out / "small-mace.model", weights_only=False)  # our own run
    print(save_mace(model.float(), args.out / "small-mace.pt", overwrite=True))


if __name__ == "__main__":
    main()
