"""Train the shipped masked token model of the digits on this CPU (MaskGIT's objective).

Each step masks a random fraction ``cos(pi/2 u)`` (``u`` uniform) of every image's
tokens and trains the transformer to predict them (cross-entropy on the masked
positions), AdamW with warm-up and cosine decay, within a wall-clock budget. The shipped
digits classifier then scores MaskGIT samples.

    python -m integrators.digits.train_tokens --force             # the shipped recipe
    python -m integrators.digits.train_tokens --steps 20 --out /tmp/masked
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from integrators.console import start_tool
from integrators.digits.data import NUM_CLASSES, digits
from integrators.digits.models import load_classifier
from integrators.digits.tokens import (
    MASKED_DIR,
    MaskedTokenModel,
    TokenRecipe,
    detokenise,
    save_masked_model,
    tokenise,
)
from integrators.digits.train import fit, refuse_to_overwrite
from integrators.masked import MaskGIT

__all__ = ["TokenTrainConfig", "main", "sample_accuracy", "train_masked"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenTrainConfig:
    """How the masked token model is trained (defaults: the shipped model's recipe)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    max_minutes: float = 25.0
    seed: int = 0


def _mask(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return a mask of a random cosine-schedule fraction of each row (at least one)."""
    rows, positions = tokens.shape
    ratio = torch.cos(math.pi / 2 * torch.rand(rows, 1, generator=generator))
    scores = torch.rand(rows, positions, generator=generator)
    count = (ratio * positions).ceil().clamp(min=1)
    return scores.argsort(1).argsort(1) < count


def train_masked(
    images: torch.Tensor, labels: torch.Tensor, recipe: TokenRecipe, config: TokenTrainConfig
) -> tuple[MaskedTokenModel, dict]:
    """Train a :class:`MaskedTokenModel` on ``images``; return it (eval mode) and a log."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = MaskedTokenModel(recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    tokens = tokenise(images, recipe.levels)

    def loss_at(step: int) -> torch.Tensor:
        index = torch.randint(len(tokens), (config.batch_size,), generator=generator)
        target = tokens[index]
        masked = _mask(target, generator)
        logits = model(target.masked_fill(masked, model.mask_id), labels[index])
        return F.cross_entropy(logits[masked], target[masked])

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps)
        return config.lr * warm * 0.5 * (1 + math.cos(math.pi * step / config.steps))

    log = fit(optimizer, loss_at, lr_at, config.steps, config.max_minutes, log_every=250)
    return model.eval(), log


def sample_accuracy(
    model: MaskedTokenModel, classifier: torch.nn.Module, samples: int = 100, steps: int = 16
) -> float:
    """Classifier accuracy on MaskGIT samples of the model (classes in turn, fixed seed)."""
    labels = torch.arange(samples) % NUM_CLASSES
    with torch.no_grad():
        tokens = MaskGIT(steps).sample(
            model, labels, model.recipe.positions, generator=torch.Generator().manual_seed(1234)
        )
        images = detokenise(tokens, model.recipe.levels)
        return float((classifier(images).argmax(1) == labels).float().mean())


def main(argv: list[str] | None = None) -> dict:
    """Train, score with the shipped classifier, save under ``--out``; return the metadata."""
    defaults, recipe = TokenTrainConfig(), TokenRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MASKED_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-minutes", type=float, default=defaults.max_minutes)
    parser.add_argument("--width", type=int, default=recipe.width)
    parser.add_argument("--layers", type=int, default=recipe.layers)
    parser.add_argument("--eval-samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="replace an existing model")
    args = parser.parse_args(argv)
    start_tool(logging.INFO, "%(asctime)s %(message)s")
    refuse_to_overwrite([args.out / "model.safetensors"], args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = TokenRecipe(width=args.width, layers=args.layers)
    config = TokenTrainConfig(
        steps=args.steps, batch_size=args.batch_size, max_minutes=args.max_minutes
    )
    images, labels = digits()
    model, log = train_masked(images, labels, recipe, config)
    accuracy = sample_accuracy(model, load_classifier(), samples=args.eval_samples)
    logger.info("masked model: %s; classifier accuracy on its samples %.3f", log, accuracy)
    metadata = {"train": asdict(config), **log, "sample_accuracy": accuracy}
    save_masked_model(model, args.out, metadata)
    return metadata


if __name__ == "__main__":
    main()
