"""Masked generation (MaskGIT) with ReCAP's cheap steps that reuse context keys and values.

MaskGIT (Chang et al. 2022) starts from all tokens masked and decodes over ``T`` steps:
at step ``t`` the model predicts every masked token, a value is sampled for each, and the
``n_t`` most confident are kept, so that a fraction ``cos(pi/2 (t+1)/T)`` stays masked.
Each step is a full bidirectional pass over all ``N`` tokens.

ReCAP (Liu et al. 2025, "Plug-and-Play Context Feature Reuse for Efficient Masked
Generation") interleaves those full passes with cheap steps. A full step ranks every
masked token by confidence, decodes the top ``n_t`` and keeps every layer's keys and
values. A cheap step then decodes the next ``n_t`` of that ranking: it runs only those
positions and the ones decoded at the step before (whose cached keys and values were
computed while they were masked), attending to the cached keys and values of all other
positions. A cheap step costs about ``(n_{t-1} + n_t) / N`` of a full one, and the
tokens it decodes are still predicted from the context decoded so far. A
:class:`~integrators.cache.Schedule` (``Periodic(k)``: a full step every ``k``) decides
which steps are full.

The model needs ``mask_id``, ``full(tokens, labels) -> (logits, cache)`` and
``partial(tokens, labels, positions, cache) -> logits`` (see
:class:`integrators.digits.tokens.MaskedTokenModel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from integrators.cache import Schedule
from integrators.schedules import Periodic

__all__ = ["MaskGIT", "MaskedModel", "MaskedStats", "masked_counts"]


class MaskedModel(Protocol):
    """What :class:`MaskGIT` needs of a masked token model."""

    mask_id: int

    def full(self, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Logits ``(batch, N, vocabulary)`` for every position, and the kept features."""
        ...

    def partial(
        self, tokens: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Logits ``(batch, n, vocabulary)`` at ``positions``, the rest from ``cache``."""
        ...


@dataclass
class MaskedStats:
    """Full and cheap steps of the last :meth:`MaskGIT.sample`, and its token cost.

    ``token_fraction`` is the positions run over all steps, as a fraction of running
    every position on every step (1.0 without cheap steps).
    """

    full_steps: int = 0
    cheap_steps: int = 0
    token_fraction: float = 1.0


def masked_counts(positions: int, steps: int) -> list[int]:
    """Tokens still masked after each step under MaskGIT's cosine schedule (last is 0).

    Each step decodes at least one token.

    Examples
    --------
    >>> masked_counts(256, 4)
    [236, 181, 97, 0]
    """
    if steps < 1 or positions < steps:
        raise ValueError(f"need 1 <= steps <= positions, got steps={steps}, positions={positions}")
    counts, left = [], positions
    for t in range(steps):
        target = math.floor(positions * math.cos(math.pi / 2 * (t + 1) / steps))
        left = max(min(target, left - 1), steps - t - 1)
        counts.append(left)
    return counts


class MaskGIT:
    """Confidence-based masked decoding over ``steps`` steps, with optional ReCAP steps.

    Parameters
    ----------
    steps
        Decoding steps ``T``.
    temperature
        Sampling temperature of the token values.
    randomness
        Scale of the Gumbel noise added to the confidences, annealed to 0 over the steps
        (MaskGIT's choice temperature).

    Examples
    --------
    >>> from integrators.digits.tokens import MaskedTokenModel, TokenRecipe
    >>> model = MaskedTokenModel(TokenRecipe(width=16, layers=1, heads=2)).eval()
    >>> sampler = MaskGIT(steps=8)
    >>> with torch.no_grad():
    ...     tokens = sampler.sample(model, torch.tensor([1, 2]), 256, schedule=Periodic(2))
    >>> tokens.shape, bool((tokens != model.mask_id).all()), sampler.stats.cheap_steps
    (torch.Size([2, 256]), True, 4)
    """

    def __init__(self, steps: int = 16, temperature: float = 1.0, randomness: float = 4.5) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.steps = steps
        self.temperature = temperature
        self.randomness = randomness
        self.stats = MaskedStats()

    def _draw(
        self, logits: torch.Tensor, step: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return sampled values and their noisy confidences for ``logits (batch, n, vocab)``."""
        log_probs = torch.log_softmax(logits.double() / self.temperature, dim=-1)
        uniform = torch.rand(log_probs.shape, generator=generator, dtype=torch.float64)
        values = (log_probs - torch.log(-torch.log(uniform.clamp_min(1e-20)))).argmax(-1)
        confidence = log_probs.gather(-1, values[..., None])[..., 0]
        scale = self.randomness * (1 - (step + 1) / self.steps)
        noise = torch.rand(confidence.shape, generator=generator, dtype=torch.float64)
        return values, confidence - scale * torch.log(-torch.log(noise.clamp_min(1e-20)))

    def sample(
        self,
        model: MaskedModel,
        labels: torch.Tensor,
        positions: int,
        schedule: Schedule | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decode ``(len(labels), positions)`` tokens from all masked.

        Parameters
        ----------
        model
            A :class:`MaskedModel`.
        labels
            ``(batch,)`` classes.
        positions
            Tokens per sample ``N``.
        schedule
            Which steps are full (default: every step, plain MaskGIT).
        generator
            Random numbers for the token values and the confidence noise (on the CPU).
        """
        schedule = schedule or Periodic(1)
        schedule.reset()
        batch, device = len(labels), labels.device
        tokens = torch.full((batch, positions), model.mask_id, dtype=torch.long, device=device)
        rows = torch.arange(batch, device=device)[:, None]
        left, ranking, previous, cache, run = positions, None, None, None, 0
        self.stats = MaskedStats()
        for step, remaining in enumerate(masked_counts(positions, self.steps)):
            count = left - remaining
            if cache is None or schedule.should_compute(step):
                logits, cache = model.full(tokens, labels)
                values, confidence = self._draw(logits.cpu(), step, generator)
                decoded = (tokens != model.mask_id).cpu()
                confidence[decoded] = -math.inf  # decoded positions are never chosen again
                ranking = confidence.argsort(dim=1, descending=True)[:, :left].to(device)
                values = values.to(device).gather(1, ranking)
                chosen, ranking = ranking[:, :count], ranking[:, count:]
                tokens[rows, chosen] = values[:, :count]
                self.stats.full_steps += 1
                run += positions
            else:
                chosen, ranking = ranking[:, :count], ranking[:, count:]
                ran = torch.cat([previous, chosen], dim=1)
                logits = model.partial(tokens, labels, ran, cache)[:, previous.shape[1] :]
                values, _ = self._draw(logits.cpu(), step, generator)
                tokens[rows, chosen] = values.to(device)
                self.stats.cheap_steps += 1
                run += ran.shape[1]
            previous, left = chosen, remaining
        self.stats.token_fraction = run / (positions * self.steps)
        return tokens
