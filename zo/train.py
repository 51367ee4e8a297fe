"""Train a model with a zeroth-order (or first-order) gradient estimator.

    python -m zo.train --dataset digits --model mlp --sparsity 0.9 --out runs/zo-digits
    python -m zo.train --dataset cifar10 --data-dir data/cifar10 --out runs/zo-cifar
    torchrun --nproc-per-node 2 -m zo.train --dataset digits --model mlp --out runs/zo-2

The defaults are DeepZero's ResNet-20/CIFAR-10 recipe: CGE, mu 5e-3, SGD with momentum
0.9 and weight decay 5e-4, lr 0.1 with 3 warm-up epochs and a cosine decay, batch 256,
50 epochs. With ``--sparsity`` above 0, ZO-GraSP sets the layer-wise ratios once at the
start and the sparse mask is re-drawn every ``--mask-shuffle-interval`` epochs. Each
epoch appends a JSON line to ``OUT/metrics.jsonl`` and writes ``OUT/checkpoint.pt``;
``--resume`` continues from it. ``OUT/summary.json`` closes the run. Under ``torchrun``
every process loads the same batches and the queries of each estimate are split among
them (gloo on CPUs, NCCL on GPUs); rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from integrators.console import start_tool
from zo.cge import CGE
from zo.data import DATASETS, ImageData, load_dataset
from zo.estimator import FirstOrder, GradientEstimator
from zo.models import MODELS, build_model
from zo.parallel import group_rank_and_size, init_from_environment
from zo.rge import RGE
from zo.sparsity import zo_grasp

__all__ = ["ESTIMATORS", "TrainConfig", "evaluate", "train", "warmup_cosine"]

logger = logging.getLogger(__name__)

ESTIMATORS = ("cge", "rge", "fo")
_CHECKPOINT = "checkpoint.pt"
_IDENTITY = ("model", "dataset", "estimator", "sparsity", "seed")


@dataclass
class TrainConfig:
    """Settings of a training run; the command line maps onto these fields.

    ``q`` is the number of random directions of RGE and of ZO-GraSP. ``query_batch``
    None lets CGE measure and choose (see :mod:`zo.tuning`).
    """

    out: Path
    model: str = "resnet20"
    dataset: str = "cifar10"
    data_dir: Path | None = None
    estimator: str = "cge"
    mu: float = 5e-3
    q: int = 192
    sparsity: float = 0.0
    mask_shuffle_interval: int = 5
    epochs: int = 50
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 3
    feature_reuse: bool = True
    query_batch: int | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = False

    def __post_init__(self) -> None:
        """Check the choices and ranges, naming the bad value."""
        for name, choices in (
            ("model", MODELS),
            ("dataset", DATASETS),
            ("estimator", ESTIMATORS),
            ("device", ("auto", "cpu", "cuda")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {choices}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.sparsity and self.estimator != "cge":
            raise ValueError(f"sparsity applies to cge only, not {self.estimator}")
        for name in ("epochs", "batch_size", "mask_shuffle_interval", "q"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be at least 0, got {self.warmup_epochs}")
        self.out = Path(self.out)
        self.data_dir = None if self.data_dir is None else Path(self.data_dir)

    def as_dict(self) -> dict:
        """Fields as JSON-ready values (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class _State:
    epoch: int = 0
    elapsed_s: float = 0.0
    accuracy: float = 0.0
    best_accuracy: float = 0.0
    layer_sparsity: dict[str, float] = field(default_factory=dict)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _seed(seed: int, stream: str, index: int) -> int:
    """Return the seed of item ``index`` of a named random stream (the same on every rank)."""
    streams = {"batches": 1, "mask": 2, "grasp": 3}
    return int(np.random.SeedSequence([seed, streams[stream], index]).generate_state(1)[0])


def evaluate(
    model: nn.Module, data: ImageData, batch_size: int, device: torch.device
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the test set (model in eval mode)."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for images, labels in data.test_batches(batch_size):
            logits = model(images.to(device))
            labels = labels.to(device)
            total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
    model.train()
    count = len(data.test_labels)
    return total_loss / count, correct / count


def _make_estimator(
    config: TrainConfig, model: nn.Module, layer_sparsity: dict[str, float]
) -> GradientEstimator:
    if config.estimator == "fo":
        return FirstOrder(model, F.cross_entropy)
    if config.estimator == "rge":
        return RGE(model, F.cross_entropy, mu=config.mu, q=config.q, seed=config.seed)
    return CGE(
        model,
        F.cross_entropy,
        mu=config.mu,
        feature_reuse=config.feature_reuse,
        sparsity=layer_sparsity or None,
        query_batch=config.query_batch,
    )


def _layer_sparsity(
    config: TrainConfig, model: nn.Module, data: ImageData, device: torch.device
) -> dict[str, float]:
    """ZO-GraSP ratios from one training batch, computed on rank 0 and shared."""
    ratios: list[dict[str, float] | None] = [None]
    if group_rank_and_size()[0] == 0:
        generator = torch.Generator().manual_seed(_seed(config.seed, "grasp", 0))
        images, labels = next(data.train_batches(config.batch_size, generator))
        ratios[0] = zo_grasp(
            model,
            F.cross_entropy,
            images.to(device),
            labels.to(device),
            config.sparsity,
            mu=config.mu,
            q=config.q,
            seed=config.seed,
        )
    if group_rank_and_size()[1] > 1:
        dist.broadcast_object_list(ratios, src=0)
    return ratios[0]


def _check_out(config: TrainConfig) -> Path:
    checkpoint = config.out / _CHECKPOINT
    if config.resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--resume: no {_CHECKPOINT} in {config.out} to resume from")
    elif config.out.exists() and any(config.out.iterdir()):
        raise FileExistsError(
            f"{config.out} already holds a run; pass --resume to continue it "
            "or choose another --out"
        )
    return checkpoint


def _resume(checkpoint: Path, config: TrainConfig, modules: dict) -> _State:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for name in _IDENTITY:
        if saved["config"][name] != config.as_dict()[name]:
            raise ValueError(
                f"--resume: {checkpoint} was trained with {name}={saved['config'][name]!r}, "
                f"not {config.as_dict()[name]!r}"
            )
    for key, module in modules.items():
        module.load_state_dict(saved[key])
    logger.info("resuming %s after epoch %d", config.out, saved["state"]["epoch"])
    return _State(**saved["state"])


def _train_epoch(
    estimator: GradientEstimator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    description: str,
    device: torch.device,
) -> tuple[float, int]:
    """One pass over the batches; returns the mean loss and the queries per step."""
    losses = []
    progress = tqdm(
        batches,
        total=steps,
        desc=description,
        leave=False,
        disable=group_rank_and_size()[0] != 0,
    )
    for images, labels in progress:
        optimizer.zero_grad(set_to_none=True)
        loss = estimator.estimate(images.to(device), labels.to(device))
        optimizer.step()
        scheduler.step()
        losses.append(float(loss))
        progress.set_postfix(loss=f"{losses[-1]:.4f}")
    return float(np.mean(losses)), estimator.queries


def train(config: TrainConfig) -> dict:
    """Run (or resume) training; return the summary that is also in ``OUT/summary.json``."""
    device = _device(config.device)
    owns_group = init_from_environment(device)
    try:
        return _train(config, device)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


def _optimization(
    config: TrainConfig, data: ImageData, device: torch.device
) -> tuple[dict[str, Any], int]:
    """Model, optimizer and schedule of a run (as ``modules``) and the steps per epoch."""
    steps = len(data.train_labels) // config.batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the {len(data.train_labels)} training images"
        )
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.in_channels, data.image_size, data.num_classes)
    model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(steps * config.epochs, steps * min(config.warmup_epochs, config.epochs)),
    )
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler}, steps


def _epoch(
    config: TrainConfig,
    state: _State,
    estimator: GradientEstimator,
    modules: dict[str, Any],
    data: ImageData,
    steps: int,
    device: torch.device,
) -> dict:
    """Train one epoch, evaluate, update ``state``; return the epoch's metrics."""
    start = time.perf_counter()
    mask = getattr(estimator, "mask", None)
    if mask is not None:
        mask.redraw(_seed(config.seed, "mask", state.epoch // config.mask_shuffle_interval))
    generator = torch.Generator().manual_seed(_seed(config.seed, "batches", state.epoch))
    train_loss, queries = _train_epoch(
        estimator,
        modules["optimizer"],
        modules["scheduler"],
        data.train_batches(config.batch_size, generator),
        steps,
        f"epoch {state.epoch + 1}/{config.epochs}",
        device,
    )
    test_loss, accuracy = evaluate(modules["model"], data, config.batch_size, device)
    state.epoch += 1
    state.accuracy = accuracy
    state.best_accuracy = max(state.best_accuracy, accuracy)
    epoch_s = time.perf_counter() - start
    state.elapsed_s += epoch_s
    logger.info(
        "epoch %d: train loss %.4f, test accuracy %.2f%%, %.1f s",
        state.epoch,
        train_loss,
        100 * accuracy,
        epoch_s,
    )
    return {
        "epoch": state.epoch,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "test_accuracy": accuracy,
        "lr": modules["scheduler"].get_last_lr()[0],
        "queries_per_step": queries,
        "epoch_s": epoch_s,
        "elapsed_s": state.elapsed_s,
    }


def _save(config: TrainConfig, record: dict, modules: dict[str, Any], state: _State) -> None:
    """Replace the checkpoint (atomically), then append the epoch's metrics."""
    saved = {key: module.state_dict() for key, module in modules.items()}
    partial = config.out / f"{_CHECKPOINT}.partial"
    torch.save({**saved, "state": asdict(state), "config": config.as_dict()}, partial)
    partial.replace(config.out / _CHECKPOINT)
    with (config.out / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _train(config: TrainConfig, device: torch.device) -> dict:
    rank, processes = group_rank_and_size()
    start = time.perf_counter()
    checkpoint = _check_out(config)
    if processes > 1:
        dist.barrier()  # every rank checks --out before rank 0 writes to it
    data = load_dataset(config.dataset, config.data_dir)
    modules, steps = _optimization(config, data, device)
    if config.resume:
        state = _resume(checkpoint, config, modules)
    else:
        state = _State()
        if config.sparsity:
            state.layer_sparsity = _layer_sparsity(config, modules["model"], data, device)
        if rank == 0:
            config.out.mkdir(parents=True, exist_ok=True)
    estimator = _make_estimator(config, modules["model"], state.layer_sparsity)
    state.elapsed_s += time.perf_counter() - start
    logger.info("%s, %d process(es), %s", estimator, processes, device)
    while state.epoch < config.epochs:
        record = _epoch(config, state, estimator, modules, data, steps, device)
        if rank == 0:
            _save(config, record, modules, state)
    summary = {
        "config": config.as_dict(),
        "processes": processes,
        "parameters": sum(p.numel() for p in modules["model"].parameters()),
        "epochs": state.epoch,
        "test_accuracy": state.accuracy,
        "best_test_accuracy": state.best_accuracy,
        "wall_time_s": state.elapsed_s,
        "layer_sparsity": state.layer_sparsity,
    }
    if rank == 0:
        (config.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command line: map the arguments onto :class:`TrainConfig`, train, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig(out=Path())
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--data-dir", type=Path, help="folder with the CIFAR-10 python batches")
    parser.add_argument("--model", choices=MODELS, default=defaults.model)
    parser.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    parser.add_argument("--estimator", choices=ESTIMATORS, default=defaults.estimator)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device)
    parser.add_argument(
        "--query-batch", type=int, help="perturbed copies per call (CGE; default: measured)"
    )
    typed = {int: ("q", "mask_shuffle_interval", "epochs", "batch_size", "warmup_epochs", "seed")}
    typed[float] = ("mu", "sparsity", "lr", "momentum", "weight_decay")
    for kind, names in typed.items():
        for name in names:
            flag = f"--{name.replace('_', '-')}"
            parser.add_argument(flag, type=kind, default=getattr(defaults, name))
    parser.add_argument(
        "--feature-reuse", action=argparse.BooleanOptionalAction, default=defaults.feature_reuse
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    start_tool(logging.INFO if rank == 0 else logging.WARNING)
    try:
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = train(config)
    except (FileExistsError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from error
    if rank == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "layer_sparsity"}))


if __name__ == "__main__":
    main()
