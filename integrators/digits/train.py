"""Train the shipped digits models on this CPU: a class-conditional DiT and a classifier.

The DiT learns to predict noise on scikit-learn's digits upsampled to 16x16 (DDPM linear
schedule, AdamW with warm-up and cosine decay, an exponential moving average of the
weights), within a wall-clock budget. The classifier gives the sample-quality metrics
(accuracy on generated digits, Fréchet distance in its features).

    python -m integrators.digits.train --force                  # the shipped recipe
    python -m integrators.digits.train --steps 20 --classifier-epochs 1 --out /tmp/digits
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from integrators.console import start_tool
from integrators.digits.data import NUM_CLASSES, digits
from integrators.digits.models import (
    MODELS_DIR,
    NULL_CLASS,
    DigitsClassifier,
    DiTRecipe,
    guided_ddim,
    noise_schedule,
    save_classifier,
)

__all__ = [
    "TrainConfig",
    "evaluate_samples",
    "fit",
    "main",
    "refuse_to_overwrite",
    "train_classifier",
    "train_denoiser",
    "train_dit",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How the digits DiT is trained (defaults: the shipped model's recipe)."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    max_minutes: float = 18.0
    seed: int = 0
    log_every: int = 250


def _learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def fit(
    optimizer: torch.optim.Optimizer,
    loss_at: Callable[[int], torch.Tensor],
    lr_at: Callable[[int], float],
    steps: int,
    max_minutes: float,
    log_every: int,
    after_step: Callable[[int], None] | None = None,
) -> dict:
    """Run ``steps`` optimiser steps on ``loss_at(step)`` within ``max_minutes``.

    Each step sets the learning rate to ``lr_at(step)``, backpropagates and steps, then
    calls ``after_step(step)``; the mean loss is logged every ``log_every`` steps.

    Returns
    -------
    dict
        ``steps_done``, ``final_loss`` (mean of the last 200 steps) and ``minutes``.
    """
    start, losses = time.perf_counter(), []
    for step in range(steps):
        if time.perf_counter() - start > 60 * max_minutes:
            logger.warning("stopping at step %d: the %.1f min budget is spent", step, max_minutes)
            break
        loss = loss_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            logger.info("step %d  loss %.4f  %.1f s", step + 1, recent, time.perf_counter() - start)
    window = losses[-min(len(losses), 200) :]
    return {
        "steps_done": len(losses),
        "final_loss": sum(window) / max(1, len(window)),
        "minutes": (time.perf_counter() - start) / 60,
    }


def refuse_to_overwrite(paths: list[Path], force: bool) -> None:
    """Stop (``SystemExit``) if any of ``paths`` exists, unless ``force``.

    The training commands call this before training, so nothing saved is replaced
    without ``--force`` and no minutes are spent on a run that could not be saved.
    """
    existing = [str(path) for path in paths if path.exists()]
    if existing and not force:
        raise SystemExit(f"{', '.join(existing)} already exists; pass --force to replace it")


def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for average, current in zip(ema.parameters(), model.parameters()):
            average.lerp_(current, 1 - decay)


def train_denoiser(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    label_dropout: float = 0.0,
) -> tuple[nn.Module, dict]:
    """Train a class-conditional model to predict noise; return its moving average and a log.

    ``model(noisy, timestep=t, class_labels=labels).sample`` must predict the noise.
    With ``label_dropout > 0`` that fraction of labels is replaced by :data:`NULL_CLASS`
    (the unconditional branch for guidance; the DiT drops labels itself). Seed torch's
    global generator before building ``model``: initialisation and any randomness inside
    the model draw from it.
    """
    generator = torch.Generator().manual_seed(config.seed)
    model = model.train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    alphas = noise_schedule().float()

    def loss_at(step: int) -> torch.Tensor:
        index = torch.randint(len(images), (config.batch_size,), generator=generator)
        t = torch.randint(len(alphas), (config.batch_size,), generator=generator)
        noise = torch.randn(images[index].shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * images[index] + (1 - a).sqrt() * noise
        batch_labels = labels[index]
        if label_dropout > 0:
            dropped = torch.rand(config.batch_size, generator=generator) < label_dropout
            batch_labels = batch_labels.masked_fill(dropped, NULL_CLASS)
        prediction = model(noisy, timestep=t, class_labels=batch_labels).sample
        return F.mse_loss(prediction, noise)

    def average(step: int) -> None:
        _update_ema(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))

    log = fit(
        optimizer,
        loss_at,
        lambda step: _learning_rate(config, step),
        config.steps,
        config.max_minutes,
        config.log_every,
        after_step=average,
    )
    return ema, log


def train_dit(
    images: torch.Tensor, labels: torch.Tensor, recipe: DiTRecipe, config: TrainConfig
) -> tuple[nn.Module, dict]:
    """Train a DiT to predict noise; return its moving average (eval mode) and a log."""
    torch.manual_seed(config.seed)
    return train_denoiser(recipe.build(), images, labels, config)


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int = 30, seed: int = 0
) -> tuple[DigitsClassifier, float]:
    """Train the classifier on 80% of the digits; return it and its held-out accuracy."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    split = int(0.8 * len(images))
    train, test = order[:split], order[split:]
    model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(split, generator=generator).split(64):
            index = train[batch]
            shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
            x = torch.roll(images[index], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images[test]).argmax(1) == labels[test]).float().mean())
    return model, accuracy


def evaluate_samples(
    dit: nn.Module, classifier: nn.Module, samples: int = 100, steps: int = 50, scale: float = 3.0
) -> float:
    """Classifier accuracy on DDIM samples of a digits denoiser (classes in turn, fixed seed)."""
    labels = torch.arange(samples) % NUM_CLASSES
    size = dit.config.sample_size
    x_T = torch.randn(samples, 1, size, size, generator=torch.Generator().manual_seed(1234))
    images = guided_ddim(dit, labels, x_T, steps, scale)
    with torch.no_grad():
        return float((classifier(images).argmax(1) == labels).float().mean())


def _parse(argv: list[str] | None) -> argparse.Namespace:
    defaults, recipe = TrainConfig(), DiTRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--max-minutes", type=float, default=defaults.max_minutes)
    parser.add_argument("--width", type=int, default=recipe.width)
    parser.add_argument("--layers", type=int, default=recipe.layers)
    parser.add_argument("--classifier-epochs", type=int, default=30)
    parser.add_argument("--eval-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="replace existing models")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train both models, save them under ``--out`` and return the metadata written."""
    args = _parse(argv)
    start_tool(logging.INFO, "%(asctime)s %(message)s")
    refuse_to_overwrite(
        [args.out / "digits_dit", args.out / "digits_classifier.safetensors"], args.force
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = digits()
    classifier, classifier_accuracy = train_classifier(
        images, labels, args.classifier_epochs, args.seed
    )
    logger.info("classifier held-out accuracy %.3f", classifier_accuracy)
    recipe = DiTRecipe(width=args.width, layers=args.layers)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_minutes=args.max_minutes,
        seed=args.seed,
        log_every=max(1, min(TrainConfig.log_every, args.steps // 4)),
    )
    dit, log = train_dit(images, labels, recipe, config)
    accuracy = evaluate_samples(dit, classifier, samples=args.eval_samples)
    logger.info("DiT: %s; classifier accuracy on its samples %.3f", log, accuracy)
    args.out.mkdir(parents=True, exist_ok=True)
    dit.save_pretrained(args.out / "digits_dit", safe_serialization=True)
    metadata = {
        "recipe": recipe.as_dict(),
        "train": asdict(config),
        **log,
        "sample_accuracy": accuracy,
        "classifier_accuracy": classifier_accuracy,
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "digits_dit" / "training.json").write_text(json.dumps(metadata, indent=2) + "\n")
    save_classifier(
        classifier,
        args.out / "digits_classifier.safetensors",
        {"held_out_accuracy": classifier_accuracy, "epochs": args.classifier_epochs},
    )
    return metadata


if __name__ == "__main__":
    main()
