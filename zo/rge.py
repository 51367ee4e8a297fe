"""Randomized gradient estimation (RGE) along Gaussian directions.

    g = (1/q) sum_i (l(theta + mu u_i) - l(theta)) / mu * u_i,    u_i ~ N(0, I)

==========  ==============================================
symbol      variable
==========  ==============================================
theta       the model's trainable parameters
mu          ``mu``, the smoothing (step) size
q           ``q``, the number of directions
u_i         direction ``i``, drawn from ``seed + i``
==========  ==============================================

Direction ``i`` is drawn from its own seed, so processes can split the directions
among themselves and two estimates with the same seed use the same directions (common
random numbers, as ZO-GraSP needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from zo.estimator import GradientEstimator, LossFn, shifted
from zo.parallel import group_rank_and_size, sum_over_group
from zo.stages import frozen_running_stats

__all__ = ["RGE", "random_gradient"]


def _direction(parameters: Mapping[str, nn.Parameter], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        for name, p in parameters.items()
    }


def random_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: torch.Tensor,
    mu: float,
    q: int,
    seed: int,
    directions: Iterable[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Sum of the RGE terms of ``directions`` (default: all ``q``), divided by ``q``.

    Parameters
    ----------
    model, loss_fn, inputs, targets
        The loss is ``loss_fn(model(inputs), targets)``.
    loss
        The unperturbed loss at the current parameters.
    mu
        Step along each direction.
    q
        Number of directions in the full estimate (the divisor).
    seed
        Direction ``i`` is drawn from ``seed + i``.
    directions
        Which directions this call evaluates (a process's share); all by default.

    Returns
    -------
    dict of str to torch.Tensor
        Per trainable parameter, this share of the estimate. Parameters are restored
        exactly and normalisation statistics are not updated.
    """
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    gradient = {name: torch.zeros_like(p) for name, p in parameters.items()}
    with torch.no_grad(), frozen_running_stats(model):
        for index in range(q) if directions is None else directions:
            direction = _direction(parameters, seed + index)
            with shifted(parameters, {name: mu * u for name, u in direction.items()}):
                perturbed = loss_fn(model(inputs), targets)
            weight = (perturbed - loss) / (mu * q)
            for name, u in direction.items():
                gradient[name].add_(weight * u)
    return gradient


class RGE(GradientEstimator):
    """Random-direction gradient estimator: ``q + 1`` forwards per estimate.

    Parameters
    ----------
    model, loss_fn
        See :class:`~zo.estimator.GradientEstimator`.
    mu
        Step along each direction.
    q
        Number of Gaussian directions per estimate.
    seed
        Seeds the directions; the same seed on every process keeps them in step.
    group
        Process group whose ranks split the directions (default: the whole run when
        ``torch.distributed`` is initialised).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        mu: float = 5e-3,
        q: int = 1,
        seed: int = 0,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(model, loss_fn)
        if not mu > 0:
            raise ValueError(f"mu must be positive, got {mu}")
        if q < 1:
            raise ValueError(f"q must be at least 1, got {q}")
        self.mu = mu
        self.q = q
        self.group = group
        self._seeds = torch.Generator().manual_seed(seed)

    def estimate(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Add the RGE estimate to ``p.grad``; return the unperturbed loss."""
        seed = int(torch.randint(2**62, (1,), generator=self._seeds))
        rank, size = group_rank_and_size(self.group)
        directions = range(rank, self.q, size)
        with torch.no_grad():
            loss = self.loss_fn(self.model(inputs), targets)
        gradient = random_gradient(
            self.model, self.loss_fn, inputs, targets, loss, self.mu, self.q, seed, directions
        )
        sum_over_group(gradient, self.group)
        self.queries = len(directions)
        self._accumulate(gradient)
        return loss

    def __repr__(self) -> str:
        return f"RGE(mu={self.mu}, q={self.q})"
