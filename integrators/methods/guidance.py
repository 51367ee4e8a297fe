"""Guidance-level method: skip the unconditional pass by reusing the guidance difference.

With classifier-free guidance every step runs the model twice, conditional and
unconditional. FasterCache's CFG cache observes that their difference changes slowly:
on full steps both run and ``uncond - cond`` is stored; on reuse steps only the
conditional pass runs and the unconditional output is rebuilt from the stored (or
extrapolated) difference. Optionally the difference is split into low and high spatial
frequencies weighted separately, as FasterCache does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from integrators.cache import CacheStats
from integrators.methods._predictors import make_predictor
from integrators.methods.output import interval_schedule
from integrators.schedules import decide

__all__ = ["CFGCache", "DifferenceCache"]


def split_frequencies(value: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``value`` into low and high spatial frequencies over its last two axes.

    Frequencies within ``radius`` (a fraction of the Nyquist frequency) are low.
    """
    height, width = value.shape[-2:]
    fy = torch.fft.fftfreq(height, device=value.device).abs() * 2
    fx = torch.fft.fftfreq(width, device=value.device).abs() * 2
    low_pass = (fy[:, None] ** 2 + fx[None, :] ** 2) <= radius**2
    spectrum = torch.fft.fft2(value.double())
    low = torch.fft.ifft2(spectrum * low_pass).real.to(value.dtype)
    return low, value - low


class DifferenceCache:
    """Runtime of :class:`CFGCache`: decides, stores and rebuilds ``uncond - cond``.

    Parameters
    ----------
    schedule
        Decides the steps on which both passes run.
    predictor
        Predicts the difference on the other steps.
    low_weight, high_weight, radius
        Weights of the low- and high-frequency parts of the predicted difference.
    """

    def __init__(
        self,
        schedule: object,
        predictor: object,
        low_weight: float = 1.0,
        high_weight: float = 1.0,
        radius: float = 0.5,
    ) -> None:
        self.schedule = schedule
        self.predictor = predictor
        self.low_weight = float(low_weight)
        self.high_weight = float(high_weight)
        self.radius = float(radius)
        self.stats = CacheStats()
        self.step = 0
        self._recorded = 0

    def should_compute(self) -> bool:
        """Whether this step runs both passes (always, until one difference is stored)."""
        return decide(self.schedule, self.step, force=self._recorded == 0)

    def record(self, t: float, uncond: torch.Tensor, cond: torch.Tensor) -> None:
        """Store the difference of a step that ran both passes."""
        self.predictor.update(float(t), uncond - cond)
        self._recorded += 1

    def rebuild(self, t: float, cond: torch.Tensor) -> torch.Tensor:
        """Return the unconditional output predicted from the conditional one."""
        difference = self.predictor.predict(float(t))
        if self.low_weight == self.high_weight:
            weighted = difference if self.low_weight == 1.0 else difference * self.low_weight
        else:
            low, high = split_frequencies(difference, self.radius)
            weighted = low * self.low_weight + high * self.high_weight
        return cond + weighted

    def finish(self, full: bool, seconds: float) -> None:
        """Count the step and move on."""
        self.stats.record("full" if full else "reuse", seconds)
        self.step += 1


class _GuidedCache:
    """A :class:`DifferenceCache` driving a sampler's :class:`~integrators.samplers.Guidance`."""

    def __init__(self, guidance: Any, runtime: DifferenceCache) -> None:
        self.guidance = guidance
        self.runtime = runtime

    @property
    def stats(self) -> CacheStats:
        return self.runtime.stats

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        start = time.perf_counter()
        if not self.guidance.active:
            out = self.guidance(x, t)
            self.runtime.finish(True, time.perf_counter() - start)
            return out
        full = self.runtime.should_compute()
        if full:
            uncond, cond = self.guidance.branches(x, t)
            self.runtime.record(t, uncond, cond)
        else:
            cond = self.guidance.conditional(x, t)
            uncond = self.runtime.rebuild(t, cond)
        self.runtime.finish(full, time.perf_counter() - start)
        return self.guidance.combine(uncond, cond)


@dataclass(frozen=True)
class CFGCache:
    """Run the unconditional pass every ``interval`` steps only (FasterCache's CFG cache).

    FasterCache (Lv et al. 2025, "FasterCache: Training-Free Video Diffusion Model
    Acceleration with High Quality Cache", arXiv 2410.19355) rebuilds the unconditional
    output from the conditional one and the cached difference, with its low- and
    high-frequency parts weighted separately. Trade-off: saves up to half of every
    guided step with no extra memory beyond one difference, but assumes the guidance
    direction drifts slowly; large intervals blur what guidance adds.

    Parameters
    ----------
    interval
        Both passes run every ``interval`` steps.
    warmup
        Leading steps that always run both passes.
    predictor
        How the difference is carried to reuse steps (``"reuse"``, ``"linear"``, ...).
    low_weight, high_weight
        Weights of the low- and high-frequency parts of the difference (``1``: as is).
    radius
        Boundary between low and high frequencies, as a fraction of Nyquist.
    uncond_first
        With :func:`integrators.diffusers.apply_cache`: whether the transformer's batch is
        ``[uncond, cond]`` (PixArt, SD3 pipelines) rather than ``[cond, uncond]``
        (``DiTPipeline``).

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, flow_timesteps
    >>> model = lambda x, t, c: -x + c  # uncond - cond is constant: reuse is exact
    >>> cond, uncond = torch.ones(2), torch.zeros(2)
    >>> kwargs = dict(cond=cond, uncond=uncond, guidance_scale=3.0)
    >>> sampler, x_T, times = FlowEuler(), torch.ones(2), flow_timesteps(8)
    >>> cached = sampler.sample(model, x_T, times, cache=CFGCache(interval=4), **kwargs)
    >>> torch.allclose(cached, FlowEuler().sample(model, x_T, times, **kwargs))
    True
    >>> sampler.stats.full_steps, sampler.stats.reuse_steps
    (2, 6)
    """

    level: ClassVar[str] = "guidance"

    interval: int = 5
    warmup: int = 0
    predictor: str = "reuse"
    low_weight: float = 1.0
    high_weight: float = 1.0
    radius: float = 0.5
    uncond_first: bool = True

    def __post_init__(self) -> None:
        """Check the parameters by building a runtime once."""
        if not 0 < self.radius <= 2**0.5:
            raise ValueError(f"CFGCache(radius=...) must be in (0, sqrt(2)], got {self.radius!r}")
        self.make_runtime()

    def make_runtime(self) -> DifferenceCache:
        """Return fresh runtime state for one generation."""
        return DifferenceCache(
            interval_schedule(self.interval, self.warmup, "CFGCache"),
            make_predictor(self.predictor),
            self.low_weight,
            self.high_weight,
            self.radius,
        )

    def bind(self, guidance: Any) -> _GuidedCache:
        """Return a denoiser for a sampler that runs the CFG cache around ``guidance``."""
        return _GuidedCache(guidance, self.make_runtime())
