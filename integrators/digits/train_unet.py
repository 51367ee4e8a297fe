"""Train the digits UNet (the test bed of Clockwork and DeepCache) on this CPU.

Noise prediction on the 16x16 digits with DDPM's linear schedule, labels dropped with
probability 0.1 for guidance, AdamW with warm-up and cosine decay and a moving average
of the weights, within a wall-clock budget; the shipped classifier
(``python -m integrators.digits.train``) scores its samples.

    python -m integrators.digits.train_unet --force               # the shipped recipe
    python -m integrators.digits.train_unet --steps 20 --out /tmp/digits
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from integrators.console import start_tool
from integrators.digits.data import digits
from integrators.digits.models import MODELS_DIR, load_classifier
from integrators.digits.train import (
    TrainConfig,
    evaluate_samples,
    refuse_to_overwrite,
    train_denoiser,
)
from integrators.digits.unet import UNetRecipe

__all__ = ["LABEL_DROPOUT", "SHIPPED_CONFIG", "main"]

logger = logging.getLogger(__name__)

LABEL_DROPOUT = 0.1
SHIPPED_CONFIG = TrainConfig(steps=2000, batch_size=64, lr=2e-3, max_minutes=30.0)
"""The shipped UNet's training: 2,000 steps of batch 64 (18 minutes on one thread here)."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = SHIPPED_CONFIG
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--max-minutes", type=float, default=defaults.max_minutes)
    parser.add_argument(
        "--channels", type=int, nargs="+", default=list(UNetRecipe().channels), help="per level"
    )
    parser.add_argument("--eval-samples", type=int, default=100)
    parser.add_argument("--classifier", type=Path, default=None, help="default: the shipped one")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="replace an existing UNet")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train the UNet, save it under ``--out/digits_unet`` and return the metadata written."""
    args = _parse(argv)
    start_tool(logging.INFO, "%(asctime)s %(message)s")
    refuse_to_overwrite([args.out / "digits_unet"], args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_classifier(*([args.classifier] if args.classifier else []))
    recipe = UNetRecipe(channels=tuple(args.channels))
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(SHIPPED_CONFIG.warmup_steps, max(1, args.steps // 10)),
        max_minutes=args.max_minutes,
        seed=args.seed,
        log_every=max(1, min(TrainConfig.log_every, args.steps // 4)),
    )
    images, labels = digits()
    torch.manual_seed(config.seed)
    unet, log = train_denoiser(recipe.build(), images, labels, config, LABEL_DROPOUT)
    accuracy = evaluate_samples(unet, classifier, samples=args.eval_samples)
    logger.info("UNet: %s; classifier accuracy on its samples %.3f", log, accuracy)
    out = args.out / "digits_unet"
    unet.save_pretrained(out, safe_serialization=True)
    metadata = {
        "recipe": recipe.as_dict(),
        "train": asdict(config),
        "label_dropout": LABEL_DROPOUT,
        **log,
        "sample_accuracy": accuracy,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "training.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


if __name__ == "__main__":
    main()
