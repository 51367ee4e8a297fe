"""Diffusion samplers that take a cache: DDIM, flow-matching Euler, DPM-Solver++(2M).

Each sampler integrates from noise ``x_T`` through decreasing ``timesteps`` and calls the
denoiser once per step. ``sample(model_fn, x_T, timesteps, cache=None, ...)`` accepts an
output-level method (:mod:`integrators.methods`: FORA, AB-Cache, TaylorSeer, TeaCache,
ERTACache, HyCa) or the guidance-level CFG cache; without one, or with a method whose
schedule computes every step, the result is the uncached sampler's, bit for bit.

The denoiser is ``model_fn(x, t, cond) -> output`` with ``t`` a Python number (the
sampler's timestep; convert it to what your model expects). With ``guidance_scale != 1``
and an ``uncond`` conditioning, classifier-free guidance runs the two branches as one
batch ``[uncond, cond]`` and returns ``uncond + scale * (cond - uncond)``.

==================  ==================  ===================================================
sampler             model predicts      timesteps
==================  ==================  ===================================================
``DDIM``            noise ``eps``       training steps (:func:`spaced_timesteps`)
``DPMSolverPP2M``   noise ``eps``       training steps (:func:`spaced_timesteps`)
``FlowEuler``       velocity ``v``      times in ``(0, 1]`` (:func:`flow_timesteps`)
==================  ==================  ===================================================
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from integrators._tree import tree_map
from integrators.cache import CacheStats

__all__ = [
    "DDIM",
    "DPMSolverPP2M",
    "FlowEuler",
    "Guidance",
    "Recorder",
    "flow_timesteps",
    "linear_alphas_cumprod",
    "spaced_timesteps",
]

logger = logging.getLogger(__name__)

ModelFn = Callable[[torch.Tensor, float, Any], torch.Tensor]


def linear_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Cumulative products of ``1 - beta`` for DDPM's linear beta schedule (float64).

    Examples
    --------
    >>> a = linear_alphas_cumprod(1000)
    >>> a.shape, bool(a[0] > 0.999), bool(a[-1] < 1e-4)
    (torch.Size([1000]), True, True)
    """
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def spaced_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Evenly spaced training timesteps, from the noisiest (``T - 1``) down ("trailing").

    Examples
    --------
    >>> spaced_timesteps(4, 1000)
    [999, 749, 499, 249]
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    stride = num_train_timesteps / num_steps
    return [round(num_train_timesteps - i * stride) - 1 for i in range(num_steps)]


def flow_timesteps(num_steps: int, shift: float = 1.0) -> list[float]:
    """Return times ``1 = t_0 > ... > t_{n-1} > 0`` for flow matching (then a step to 0).

    ``shift > 1`` spends more steps at high noise (``t -> shift t / (1 + (shift - 1) t)``,
    as SD3 and Flux do).

    Examples
    --------
    >>> flow_timesteps(4)
    [1.0, 0.75, 0.5, 0.25]
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    times = [1.0 - i / num_steps for i in range(num_steps)]
    return [shift * t / (1.0 + (shift - 1.0) * t) for t in times]


def _concat(a: Any, b: Any) -> Any:
    return tree_map(lambda x, y: torch.cat([x, y]), a, b)


@dataclass
class Guidance:
    """Classifier-free guidance around ``model_fn``: the denoiser a cache wraps.

    Parameters
    ----------
    model_fn
        ``model_fn(x, t, cond) -> output``.
    cond, uncond
        Conditionings (tensors or nested tuples/dicts of tensors, batched like ``x``).
    scale
        Guidance scale; ``1`` (or ``uncond=None``) runs the conditional branch only.

    Examples
    --------
    >>> import torch
    >>> g = Guidance(lambda x, t, c: x * c, cond=torch.tensor([2.0]),
    ...              uncond=torch.tensor([1.0]), scale=3.0)
    >>> g(torch.tensor([1.0]), 0.5)  # 1 + 3 * (2 - 1)
    tensor([4.])
    """

    model_fn: ModelFn
    cond: Any = None
    uncond: Any = None
    scale: float = 1.0

    @property
    def active(self) -> bool:
        """Whether both branches run (``scale != 1`` and an ``uncond`` is given)."""
        return self.uncond is not None and self.scale != 1.0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Return the guided output at ``(x, t)``."""
        if not self.active:
            return self.conditional(x, t)
        return self.combine(*self.branches(x, t))

    def conditional(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Run the conditional branch alone."""
        return self.model_fn(x, t, self.cond)

    def branches(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Run both branches as one batch; return ``(uncond_output, cond_output)``."""
        out = self.model_fn(torch.cat([x, x]), t, _concat(self.uncond, self.cond))
        uncond, cond = out.chunk(2)
        return uncond, cond

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Return ``uncond + scale * (cond - uncond)``."""
        return uncond + self.scale * (cond - uncond)


class Denoiser(Protocol):
    """What a method binds to a :class:`Guidance`: a step function with statistics."""

    stats: CacheStats

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Return the (possibly predicted) guided output at ``(x, t)``."""
        ...


class Recorder:
    """Record the denoiser's input and output at every step (for offline calibration).

    Use it as the ``cache`` of a sampler, or with :func:`integrators.diffusers.apply_cache`
    to record a transformer's raw outputs. Every step runs in full.

    Examples
    --------
    >>> import torch
    >>> from integrators.samplers import FlowEuler, Recorder, flow_timesteps
    >>> recorder = Recorder()
    >>> _ = FlowEuler().sample(lambda x, t, c: -x, torch.ones(2), flow_timesteps(3),
    ...                        cache=recorder)
    >>> recorder.times, len(recorder.outputs)
    ([1.0, 0.6666666666666667, 0.33333333333333337], 3)
    """

    level = "output"

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.times: list[float] = []
        self.outputs: list[Any] = []

    def make_cache(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``fn`` wrapped to record each call (starts a new recording)."""
        self.inputs, self.times, self.outputs = [], [], []
        stats = CacheStats()

        def record(x: torch.Tensor, t: float, *args: Any) -> Any:
            out = fn(x, t, *args)
            self.inputs.append(x.detach())
            self.times.append(float(t))
            self.outputs.append(tree_map(torch.Tensor.detach, out))
            stats.record("full", 0.0)
            return out

        record.stats = stats
        return record


class _Sampler:
    """The loop shared by the samplers: guidance, the cache, and one step per timestep."""

    stats: CacheStats | None = None
    """Statistics of the cache in the last :meth:`sample` call (``None`` without one)."""

    def sample(
        self,
        model_fn: ModelFn,
        x_T: torch.Tensor,
        timesteps: Sequence[float],
        cache: object | None = None,
        *,
        cond: Any = None,
        uncond: Any = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Integrate from ``x_T`` through ``timesteps`` and return the clean sample.

        Parameters
        ----------
        model_fn
            ``model_fn(x, t, cond) -> output`` (noise or velocity, see the class).
        x_T
            Starting noise.
        timesteps
            Strictly decreasing times at which the model is evaluated; the last step
            goes to the clean end of the schedule.
        cache
            An output-level or guidance-level method (see :mod:`integrators.methods`),
            or ``None``. Each call builds fresh cache state from it.
        cond, uncond, guidance_scale
            Conditioning and classifier-free guidance (see :class:`Guidance`).

        Returns
        -------
        torch.Tensor
            The sample at the end of the trajectory; ``self.stats`` holds the cache's
            full and reuse counts.
        """
        times = self._check_timesteps(timesteps)
        guidance = Guidance(model_fn, cond, uncond, guidance_scale)
        denoise = guidance if cache is None else _bind(cache, guidance)
        self._start()
        x = x_T
        for i, t in enumerate(times):
            next_t = times[i + 1] if i + 1 < len(times) else None
            x = self._step(x, denoise(x, t), t, next_t)
        self.stats = getattr(denoise, "stats", None)
        logger.debug("%s: %d steps, cache: %s", type(self).__name__, len(times), self.stats)
        return x

    def _check_timesteps(self, timesteps: Sequence[float]) -> list[float]:
        times = [float(t) for t in timesteps]
        if not times:
            raise ValueError(f"{type(self).__name__}.sample needs at least one timestep")
        if any(b >= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"timesteps must decrease strictly, got {times}")
        return times

    def _start(self) -> None:
        """Forget per-trajectory state (multistep history)."""

    def _step(
        self, x: torch.Tensor, output: torch.Tensor, t: float, next_t: float | None
    ) -> torch.Tensor:
        raise NotImplementedError


def _bind(cache: object, guidance: Guidance) -> Denoiser:
    level = getattr(cache, "level", None)
    if level == "output":
        return cache.make_cache(guidance)
    if level == "guidance":
        return cache.bind(guidance)
    raise TypeError(
        f"sample(cache=...) takes an output- or guidance-level method, got "
        f"{type(cache).__name__} (level={level!r}); block-level methods attach to a "
        "transformer with integrators.diffusers.apply_cache"
    )


class _NoiseSchedule(_Sampler):
    """Samplers over a discrete DDPM noise schedule (noise prediction)."""

    def __init__(self, alphas_cumprod: torch.Tensor, final_alpha_cumprod: float = 1.0) -> None:
        alphas = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if alphas.ndim != 1 or not bool(((alphas > 0) & (alphas <= 1)).all()):
            raise ValueError("alphas_cumprod must be a 1-D tensor of values in (0, 1]")
        if not 0 < final_alpha_cumprod <= 1:
            raise ValueError(f"final_alpha_cumprod must be in (0, 1], got {final_alpha_cumprod}")
        self.alphas_cumprod = alphas
        self.final_alpha_cumprod = float(final_alpha_cumprod)

    def _alpha(self, t: float | None) -> float:
        """Return ``alpha_bar`` at training step ``t`` (the final value for ``None``)."""
        if t is None:
            return self.final_alpha_cumprod
        index = int(t)
        if index != t or not 0 <= index < len(self.alphas_cumprod):
            raise ValueError(
                f"timestep {t} is not an integer in [0, {len(self.alphas_cumprod) - 1}]"
            )
        return float(self.alphas_cumprod[index])


class DDIM(_NoiseSchedule):
    r"""Deterministic DDIM (``eta = 0``) for a noise-predicting model.

    .. math::
        \hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,\epsilon) / \sqrt{\bar\alpha_t}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{t'}}\,\epsilon

    =====================  =================================================
    symbol                 variable
    =====================  =================================================
    :math:`\bar\alpha_t`   ``alphas_cumprod[t]`` (``final_alpha_cumprod`` after the last step)
    :math:`\epsilon`       the model output
    =====================  =================================================

    Parameters
    ----------
    alphas_cumprod
        ``alpha_bar`` per training timestep (e.g. :func:`linear_alphas_cumprod`).
    final_alpha_cumprod
        ``alpha_bar`` after the last step (``1``: the clean sample).

    Examples
    --------
    >>> import torch
    >>> alphas = linear_alphas_cumprod()
    >>> clean = torch.tensor([0.5, -0.5])
    >>> def exact_noise(x, t, cond):  # all data equal `clean`: the noise is known
    ...     a = float(alphas[int(t)])
    ...     return (x - a**0.5 * clean) / (1 - a) ** 0.5
    >>> x = DDIM(alphas).sample(exact_noise, torch.randn(2), spaced_timesteps(10))
    >>> torch.allclose(x, clean, atol=1e-5)
    True
    """

    def _step(
        self, x: torch.Tensor, output: torch.Tensor, t: float, next_t: float | None
    ) -> torch.Tensor:
        a, a_next = self._alpha(t), self._alpha(next_t)
        clean = (x - math.sqrt(1 - a) * output) / math.sqrt(a)
        return math.sqrt(a_next) * clean + math.sqrt(1 - a_next) * output


class DPMSolverPP2M(_NoiseSchedule):
    r"""DPM-Solver++(2M): second-order multistep in data prediction (Lu et al. 2022).

    With :math:`\lambda = \log(\alpha / \sigma)`, :math:`h = \lambda_{t'} - \lambda_t` and
    the data prediction :math:`D = (x_t - \sigma_t \epsilon) / \alpha_t`,

    .. math::
        x_{t'} = \frac{\sigma_{t'}}{\sigma_t} x_t - \alpha_{t'} (e^{-h} - 1)
        \Big[(1 + \tfrac{1}{2r}) D_t - \tfrac{1}{2r} D_{t_{prev}}\Big],
        \quad r = h_{prev} / h,

    first order on the first step and on the last (to ``sigma = 0``).

    Examples
    --------
    >>> import torch
    >>> alphas = linear_alphas_cumprod()
    >>> clean = torch.tensor([1.0])
    >>> def exact_noise(x, t, cond):
    ...     a = float(alphas[int(t)])
    ...     return (x - a**0.5 * clean) / (1 - a) ** 0.5
    >>> x = DPMSolverPP2M(alphas).sample(exact_noise, torch.randn(1), spaced_timesteps(5))
    >>> torch.allclose(x, clean, atol=1e-5)
    True
    """

    def _start(self) -> None:
        self._previous: tuple[torch.Tensor, float] | None = None

    def _step(
        self, x: torch.Tensor, output: torch.Tensor, t: float, next_t: float | None
    ) -> torch.Tensor:
        a, a_next = self._alpha(t), self._alpha(next_t)
        alpha, sigma = math.sqrt(a), math.sqrt(1 - a)
        alpha_next, sigma_next = math.sqrt(a_next), math.sqrt(1 - a_next)
        data = (x - sigma * output) / alpha
        if sigma_next == 0.0:  # the last step lands on the data prediction
            self._previous = None
            return alpha_next * data
        h = math.log(alpha_next / sigma_next) - math.log(alpha / sigma)
        blended = data
        if self._previous is not None:
            previous_data, h_previous = self._previous
            half_inverse_r = h / (2 * h_previous)
            blended = (1 + half_inverse_r) * data - half_inverse_r * previous_data
        self._previous = (data, h)
        return (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * blended


class FlowEuler(_Sampler):
    r"""Euler integration of a flow-matching (rectified flow) velocity model.

    Convention ``x_t = (1 - t) x_0 + t * noise`` and ``v = noise - x_0``, so
    ``x_{t'} = x_t + (t' - t) v``, ending at ``t' = 0``.

    Examples
    --------
    >>> import torch
    >>> clean = torch.tensor([2.0])
    >>> exact_velocity = lambda x, t, cond: (x - clean) / t  # all data equal `clean`
    >>> x = FlowEuler().sample(exact_velocity, torch.randn(1), flow_timesteps(4))
    >>> torch.allclose(x, clean, atol=1e-5)
    True
    """

    def _step(
        self, x: torch.Tensor, output: torch.Tensor, t: float, next_t: float | None
    ) -> torch.Tensor:
        return x + ((next_t or 0.0) - t) * output
