"""Gradient sparsity for CGE: which coordinates to estimate, and how many per layer.

DeepZero keeps the model dense and estimates, in each layer, only a random subset of the
weight coordinates (*sparse CGE*); the subset is re-drawn every few epochs. How many
coordinates each layer keeps comes from ZO-GraSP: GraSP's pruning-at-initialisation
scores ``-theta * (H g)`` with both the gradient ``g`` and the Hessian-gradient product
``H g`` estimated from loss values alone (two RGE estimates with the same directions).
Only the resulting *layer-wise* ratios are used, not the pruned positions. Biases and
normalisation parameters (all one-dimensional parameters) are always estimated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import nn

from zo.estimator import LossFn, shifted
from zo.rge import random_gradient
from zo.stages import frozen_running_stats

__all__ = ["SparseMask", "is_weight", "zo_grasp"]

logger = logging.getLogger(__name__)


def is_weight(parameter: torch.Tensor) -> bool:
    """Return True for weights, which sparsity applies to (two or more dimensions)."""
    return parameter.dim() >= 2


class SparseMask:
    """Per parameter, a random subset of ``counts[name]`` flat coordinates.

    Parameters
    ----------
    numels
        Number of coordinates of each parameter.
    counts
        How many of them to estimate; a count equal to the size keeps all coordinates.
    seed
        Seeds the first draw.

    Attributes
    ----------
    indices
        Per parameter, the sorted flat indices currently selected.
    """

    def __init__(self, numels: Mapping[str, int], counts: Mapping[str, int], seed: int = 0) -> None:
        if set(numels) != set(counts):
            raise ValueError(
                f"numels and counts name different parameters: {sorted(set(numels) ^ set(counts))}"
            )
        for name, count in counts.items():
            if not 0 <= count <= numels[name]:
                raise ValueError(f"count {count} for {name} is outside 0..{numels[name]}")
        self.numels = dict(numels)
        self.counts = dict(counts)
        self.indices: dict[str, torch.Tensor] = {}
        self.redraw(seed)

    @classmethod
    def for_model(
        cls, model: nn.Module, sparsity: float | Mapping[str, float], seed: int = 0
    ) -> SparseMask:
        """Keep a ``1 - sparsity`` fraction (at least one) of each weight; all of the rest.

        Parameters
        ----------
        model
            Its trainable parameters are masked.
        sparsity
            One fraction for every weight, or a fraction per weight name (as returned by
            :func:`zo_grasp`); weights missing from the mapping are kept dense.
        seed
            Seeds the first draw.
        """
        parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if isinstance(sparsity, Mapping):
            unknown = sorted(set(sparsity) - {n for n, p in parameters.items() if is_weight(p)})
            if unknown:
                raise ValueError(
                    f"sparsity names {unknown}, which are not trainable weights of the model "
                    "(biases and normalisation parameters are always estimated)"
                )
            ratios = {name: sparsity.get(name, 0.0) for name in parameters}
        else:
            ratios = {name: float(sparsity) for name in parameters}
        counts = {}
        for name, parameter in parameters.items():
            ratio = ratios[name] if is_weight(parameter) else 0.0
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"sparsity of {name} must be in [0, 1), got {ratio}")
            counts[name] = max(1, round((1.0 - ratio) * parameter.numel()))
        return cls({n: p.numel() for n, p in parameters.items()}, counts, seed)

    @classmethod
    def uniform(cls, model: nn.Module, total: int, seed: int = 0) -> SparseMask:
        """``total`` coordinates drawn uniformly from all trainable coordinates.

        A fixed, representative workload (benchmarks, tests): each parameter gets about
        its share of ``total``, biases and normalisation parameters included.
        """
        numels = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
        sizes = torch.tensor(list(numels.values()))
        if not 0 <= total <= int(sizes.sum()):
            raise ValueError(f"total must be in 0..{int(sizes.sum())}, got {total}")
        generator = torch.Generator().manual_seed(seed)
        positions = torch.randperm(int(sizes.sum()), generator=generator)[:total]
        owners = torch.bucketize(positions, torch.cumsum(sizes, 0), right=True)
        counts = torch.bincount(owners, minlength=len(numels)).tolist()
        return cls(numels, dict(zip(numels, counts)), seed)

    def redraw(self, seed: int) -> None:
        """Draw new random subsets (same counts) from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        for name, numel in self.numels.items():
            count = self.counts[name]
            if count == numel:
                self.indices[name] = torch.arange(numel)
            else:
                chosen = torch.randperm(numel, generator=generator)[:count]
                self.indices[name] = chosen.sort().values

    def densities(self) -> dict[str, float]:
        """Fraction of each parameter's coordinates that is estimated."""
        return {name: self.counts[name] / numel for name, numel in self.numels.items()}

    @property
    def total(self) -> int:
        """Number of coordinates estimated per estimate."""
        return sum(self.counts.values())

    def __repr__(self) -> str:
        size = sum(self.numels.values())
        return f"SparseMask({self.total} of {size} coordinates in {len(self.numels)} parameters)"


def zo_grasp(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    sparsity: float,
    mu: float = 5e-3,
    q: int = 192,
    step: float = 1e-2,
    seed: int = 0,
) -> dict[str, float]:
    """Layer-wise pruning ratios from ZO-GraSP, using loss values only.

    The gradient ``g`` is an RGE estimate; the Hessian-gradient product is the change
    of a second RGE estimate (same directions) at ``theta + step * g / |g|``, divided by
    ``step / |g|``. Every weight coordinate is scored ``-theta * (H g)`` and the highest
    ``sparsity`` fraction of all weight coordinates is pruned; the ratio of each layer
    is the fraction of its own coordinates pruned.

    Parameters
    ----------
    model, loss_fn, inputs, targets
        The loss is ``loss_fn(model(inputs), targets)``; the model is left unchanged.
    sparsity
        Overall fraction of weight coordinates to prune, in ``[0, 1)``.
    mu, q
        RGE step and number of directions (DeepZero: 5e-3 and 192).
    step
        Length of the finite-difference step along the gradient.
    seed
        Seeds the directions.

    Returns
    -------
    dict of str to float
        Pruning ratio per weight name, for :meth:`SparseMask.for_model`.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    weights = {n: p for n, p in parameters.items() if is_weight(p)}
    if not weights:
        raise ValueError(f"{type(model).__name__} has no trainable weights to prune")
    with torch.no_grad(), frozen_running_stats(model):
        loss = loss_fn(model(inputs), targets)
        gradient = random_gradient(model, loss_fn, inputs, targets, loss, mu, q, seed)
        norm = math.sqrt(sum(float(g.square().sum()) for g in gradient.values()))
        scale = step / max(norm, torch.finfo(loss.dtype).tiny)
        with shifted(parameters, {n: scale * g for n, g in gradient.items()}):
            moved_loss = loss_fn(model(inputs), targets)
            moved = random_gradient(model, loss_fn, inputs, targets, moved_loss, mu, q, seed)
    scores = torch.cat(
        [(-w.detach() * (moved[n] - gradient[n]) / scale).reshape(-1) for n, w in weights.items()]
    )
    pruned = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    pruned[scores.topk(round(sparsity * scores.numel())).indices] = True
    ratios = {
        name: float(part.float().mean())
        for name, part in zip(weights, pruned.split([w.numel() for w in weights.values()]))
    }
    logger.info(
        "ZO-GraSP pruning ratios: %s",
        ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items()),
    )
    return ratios
