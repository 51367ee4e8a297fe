"""The estimator interface, the first-order baseline, and helpers shared by estimators.

An estimator is used like ``loss.backward()``::

    loss = estimator.estimate(inputs, targets)   # fills p.grad, returns the loss
    optimizer.step()

Gradients are *added* to ``p.grad`` as autograd does, so call ``optimizer.zero_grad()``
before each estimate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["FirstOrder", "GradientEstimator", "LossFn", "shifted"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(outputs, targets) -> scalar``, e.g. ``torch.nn.functional.cross_entropy``."""


class GradientEstimator(ABC):
    """Fills ``p.grad`` of every trainable parameter of ``model`` from one batch.

    Parameters
    ----------
    model
        Any ``nn.Module``; its trainable parameters are those with ``requires_grad``.
    loss_fn
        ``loss_fn(model(inputs), targets)`` must return a scalar tensor.

    Attributes
    ----------
    trainable
        The trainable parameters by name, in the model's order.
    queries
        Perturbed forward evaluations this process made in the last :meth:`estimate`.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        self.queries = 0
        self.trainable = {
            name: parameter
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        }
        if not self.trainable:
            raise ValueError(f"{type(model).__name__} has no trainable parameters")

    @abstractmethod
    def estimate(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Add the gradient estimate to ``p.grad``; return the unperturbed loss (detached)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.trainable)} trainable parameters)"

    def _accumulate(self, gradients: Mapping[str, torch.Tensor]) -> None:
        for name, parameter in self.trainable.items():
            if parameter.grad is None:
                parameter.grad = gradients[name]
            else:
                parameter.grad.add_(gradients[name])


class FirstOrder(GradientEstimator):
    """Backpropagation behind the estimator interface (the baseline).

    Under ``torchrun`` every process computes the same full gradient: there are no
    queries to split.
    """

    def estimate(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Run ``loss.backward()``; return the loss (detached)."""
        loss = self.loss_fn(self.model(inputs), targets)
        loss.backward()
        self.queries = 0
        return loss.detach()


@contextmanager
def shifted(
    parameters: Mapping[str, nn.Parameter], shifts: Mapping[str, torch.Tensor]
) -> Iterator[None]:
    """Within the block, parameters are moved by ``shifts``; afterwards they are restored.

    The saved values are copied back, so the parameters end bit-identical to before.
    """
    saved = {name: parameters[name].detach().clone() for name in shifts}
    try:
        with torch.no_grad():
            for name, shift in shifts.items():
                parameters[name].add_(shift)
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                parameters[name].copy_(value)
