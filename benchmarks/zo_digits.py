"""Claim: sparse CGE (90%) trains a CNN on digits to 95% test accuracy within 15 minutes here.

The run of ``python -m zo.train`` on scikit-learn's 8x8 digits (1,437 training and 360
test images), small CNN (16 and 32 channels, 6.2 k parameters), batch 64, 50 epochs,
SGD lr 0.1 (3 warm-up epochs, cosine), momentum 0.9, weight decay 5e-4; CGE with mu 5e-3,
ZO-GraSP ratios at 90% sparsity and the mask re-drawn every epoch. The same model and
settings with backpropagation are the baseline (target: at least 97%). Reports epochs,
wall time, final accuracies and when 95% was first reached. Prints one JSON line.

    python benchmarks/zo_digits.py                 # both runs (a few minutes)
    python benchmarks/zo_digits.py --quick         # 2 epochs each (smoke run)

The same runs from the command line:

    python -m zo.train --dataset digits --model cnn --batch-size 64 --sparsity 0.9 \\
        --mask-shuffle-interval 1 --out runs/digits-cge
    python -m zo.train --dataset digits --model cnn --batch-size 64 --estimator fo \\
        --out runs/digits-fo
"""

import argparse
import json
import tempfile
from pathlib import Path

from zo.train import TrainConfig, train

SETTINGS = dict(dataset="digits", model="cnn", batch_size=64)


def run(out, epochs, **settings):
    summary = train(TrainConfig(out=out, epochs=epochs, **SETTINGS, **settings))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next((r for r in records if r["test_accuracy"] >= 0.95), None)
    return {
        "epochs": summary["epochs"],
        "test_accuracy": round(summary["test_accuracy"], 4),
        "best_test_accuracy": round(summary["best_test_accuracy"], 4),
        "wall_time_s": round(summary["wall_time_s"], 1),
        "first_epoch_at_95": first and first["epoch"],
        "time_to_95_s": first and round(first["elapsed_s"], 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="2 epochs each (smoke run)")
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        cge = run(
            root / "cge",
            epochs,
            estimator="cge",
            sparsity=0.9,
            mask_shuffle_interval=1,
            seed=args.seed,
        )
        fo = run(root / "fo", epochs, estimator="fo", seed=args.seed)
    print(
        json.dumps(
            {
                "benchmark": "zo_digits",
                **SETTINGS,
                "seed": args.seed,
                "sparse_cge_90": cge,
                "first_order": fo,
                "cge_target_95_in_15_min_met": cge["test_accuracy"] >= 0.95
                and cge["wall_time_s"] <= 900,
                "fo_target_97_met": fo["test_accuracy"] >= 0.97,
            }
        )
    )


if __name__ == "__main__":
    main()
