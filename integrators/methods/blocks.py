"""Block-level methods: decide per transformer block whether to run it or predict it.

A block maps its input streams (hidden states and, in MM-DiT models, encoder hidden
states) to output streams. A skipped block returns its input plus a predicted *residual*
(output minus input) from the steps on which it ran. Each config builds a fresh
:class:`BlockRuntime` per generation with ``make_runtime(num_blocks)``;
:func:`integrators.diffusers.apply_cache` drives it from hooks on the blocks.

The runtime sees one call of :meth:`BlockRuntime.begin_step` per denoiser call, then one
:meth:`BlockRuntime.block` per block in order. Its ``stats`` count block evaluations:
``full_fraction`` is the fraction of block evaluations that ran.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from integrators.cache import CacheStats
from integrators.methods._predictors import make_predictor
from integrators.methods.output import check_int, interval_schedule
from integrators.schedules import Threshold, Warmup, decide, relative_l1

__all__ = [
    "BWCache",
    "BlockRecorder",
    "BlockRuntime",
    "BlockStack",
    "FirstBlockCache",
    "ProfilingDiT",
    "Sortblock",
]

Streams = tuple[torch.Tensor | None, ...]
"""A block's streams, hidden states first (``None`` where a block returns none)."""


class _Residual:
    """What a block (or a run of blocks) added on its full steps, and its prediction.

    The predictor sees a tensor when one stream is present (any predictor works), else
    a tuple of tensors (the tree-aware core predictors).
    """

    def __init__(self, predictor: object) -> None:
        self.predictor = predictor
        self.present: tuple[bool, ...] | None = None

    @property
    def recorded(self) -> bool:
        return self.present is not None

    def store(self, t: float, inputs: Streams, outputs: Streams) -> None:
        self.present = tuple(o is not None for o in outputs)
        residual = tuple(o - i for o, i in zip(outputs, inputs) if o is not None)
        self.predictor.update(t, residual[0] if len(residual) == 1 else residual)

    def predict(self, t: float, inputs: Streams) -> Streams:
        predicted = self.predictor.predict(t)
        residual = iter((predicted,) if isinstance(predicted, torch.Tensor) else predicted)
        return tuple(i + next(residual) if keep else None for i, keep in zip(inputs, self.present))


class BlockRuntime:
    """Per-generation state of a block-level method; subclasses decide per block.

    Parameters
    ----------
    num_blocks
        Number of blocks, in call order.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = check_int(num_blocks, "num_blocks", 1)
        self.stats = CacheStats()
        self.step = -1
        self.t = math.nan

    def begin_step(self, t: float) -> None:
        """Start a denoiser call at time ``t``."""
        self.step += 1
        self.t = float(t)
        self._on_begin()

    def _on_begin(self) -> None:
        """Decide what the step does before its first block (a hook for subclasses)."""

    def end_step(self) -> None:
        """Finish a denoiser call."""

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        """Return block ``index``'s outputs: ``run()`` them or predict them."""
        raise NotImplementedError

    def _compute(self, run: Callable[[], Streams]) -> Streams:
        start = time.perf_counter()
        outputs = run()
        self.stats.record("full", time.perf_counter() - start)
        return outputs

    def _predict(self, residual: _Residual, inputs: Streams) -> Streams:
        start = time.perf_counter()
        outputs = residual.predict(self.t, inputs)
        self.stats.record("reuse", time.perf_counter() - start)
        return outputs

    def _compute_and_store(
        self, residual: _Residual, inputs: Streams, run: Callable[[], Streams]
    ) -> Streams:
        outputs = self._compute(run)
        residual.store(self.t, inputs, outputs)
        return outputs


def _threshold_schedule(tol: float, max_reuse: int | None, warmup: int, owner: str) -> object:
    check_int(warmup, f"{owner}(warmup=...)", 0)
    inner = Threshold(tol, max_reuse)
    return Warmup(inner, first=warmup) if warmup else inner


def _top(scores: Sequence[float], fraction: float, owner: str) -> set[int]:
    """Return the indices of the ``ceil(fraction * n)`` largest scores."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"{owner}(fraction=...) must be in [0, 1], got {fraction!r}")
    count = math.ceil(fraction * len(scores) - 1e-9)
    return set(sorted(range(len(scores)), key=lambda i: -scores[i])[:count])


@dataclass(frozen=True)
class BWCache:
    """Per-block reuse while the block's input stays similar (BWCache-style).

    BWCache (2025, "Accelerating Video Diffusion Transformers through Block-Wise
    Caching"; up to 2.2-2.6x) reuses a block's features while an indicator of the
    difference between adjacent steps stays below a threshold. Here each block
    accumulates the relative L1 change of its own input since it last ran and reuses
    its residual until the sum passes ``tol`` (the core :class:`Threshold`, one per
    block). Trade-off: blocks that barely change are skipped often and sensitive ones
    rarely, at the cost of one stored input and residual per block.

    Parameters
    ----------
    tol
        Accumulated input change above which a block runs.
    max_reuse
        Longest run of reuse steps per block (``None``: no limit).
    warmup
        Leading steps on which every block runs.
    predictor
        Predictor of each block's residual (``"reuse"``, ``"linear"``, ...).

    Examples
    --------
    >>> import torch
    >>> from diffusers import DiTTransformer2DModel
    >>> from integrators.diffusers import apply_cache, cache_stats
    >>> dit = DiTTransformer2DModel(in_channels=1, out_channels=1, num_attention_heads=2,
    ...     attention_head_dim=4, num_layers=3, norm_type="ada_norm_zero",
    ...     num_embeds_ada_norm=10, patch_size=2, sample_size=4).eval()
    >>> apply_cache(dit, BWCache(tol=0.5, warmup=1))
    >>> x, labels = torch.randn(2, 1, 4, 4), torch.tensor([1, 2])
    >>> for t in (900, 800, 700):
    ...     _ = dit(x * t / 1000, timestep=torch.tensor([t, t]), class_labels=labels)
    >>> cache_stats(dit)["default"].reuse_steps > 0
    True
    """

    level: ClassVar[str] = "blocks"

    tol: float = 0.1
    max_reuse: int | None = None
    warmup: int = 1
    predictor: str = "reuse"

    def __post_init__(self) -> None:
        """Check the parameters by building what a runtime builds."""
        _threshold_schedule(self.tol, self.max_reuse, self.warmup, "BWCache")
        make_predictor(self.predictor)

    def make_runtime(self, num_blocks: int) -> BlockRuntime:
        """Return fresh state for one generation."""
        return _BWRuntime(self, num_blocks)


class _BWRuntime(BlockRuntime):
    def __init__(self, config: BWCache, num_blocks: int) -> None:
        super().__init__(num_blocks)
        owner = "BWCache"
        self.schedules = [
            _threshold_schedule(config.tol, config.max_reuse, config.warmup, owner)
            for _ in range(num_blocks)
        ]
        self.residuals = [_Residual(make_predictor(config.predictor)) for _ in range(num_blocks)]
        self.previous: list[torch.Tensor | None] = [None] * num_blocks

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        previous, self.previous[index] = self.previous[index], inputs[0]
        indicator = None if previous is None else relative_l1(inputs[0], previous)
        residual = self.residuals[index]
        if decide(self.schedules[index], self.step, indicator, force=not residual.recorded):
            return self._compute_and_store(residual, inputs, run)
        return self._predict(residual, inputs)


@dataclass(frozen=True)
class FirstBlockCache:
    """Run block 0 always; skip the rest while its residual barely changes.

    First-Block-Cache (ParaAttention; in diffusers as ``FirstBlockCacheConfig``, default
    threshold 0.05-0.08) uses the change of the first block's residual as a cheap
    indicator of whether the rest of the network would change; when it is small, the
    remaining blocks are skipped and their combined residual (the *tail*) is taken from
    the last full step. Here the relative change between consecutive steps is summed by
    the core :class:`Threshold`, and the tail may be extrapolated by any predictor.
    Trade-off: a single, model-agnostic indicator costing one block per step; it
    misses changes that block 0 does not see.

    Parameters
    ----------
    tol
        Accumulated relative change of block 0's residual above which all blocks run.
    max_reuse
        Longest run of skipped tails (``None``: no limit).
    warmup
        Leading steps on which every block runs.
    predictor
        Predictor of the tail residual (``"reuse"``, ``"linear"``, ``"ab2"``, ...).

    Examples
    --------
    >>> import torch
    >>> from diffusers import DiTTransformer2DModel
    >>> from integrators.diffusers import apply_cache, cache_stats
    >>> dit = DiTTransformer2DModel(in_channels=1, out_channels=1, num_attention_heads=2,
    ...     attention_head_dim=4, num_layers=3, norm_type="ada_norm_zero",
    ...     num_embeds_ada_norm=10, patch_size=2, sample_size=4).eval()
    >>> apply_cache(dit, FirstBlockCache(tol=10.0, max_reuse=1))
    >>> x, labels = torch.randn(2, 1, 4, 4), torch.tensor([1, 2])
    >>> for t in (900, 800, 700):
    ...     _ = dit(x, timestep=torch.tensor([t, t]), class_labels=labels)
    >>> stats = cache_stats(dit)["default"]
    >>> stats.full_steps, stats.reuse_steps  # steps 0 and 2 in full, step 1 only block 0
    (7, 2)
    """

    level: ClassVar[str] = "blocks"

    tol: float = 0.1
    max_reuse: int | None = None
    warmup: int = 1
    predictor: str = "reuse"

    def __post_init__(self) -> None:
        """Check the parameters by building what a runtime builds."""
        _threshold_schedule(self.tol, self.max_reuse, self.warmup, "FirstBlockCache")
        make_predictor(self.predictor)

    def make_runtime(self, num_blocks: int) -> BlockRuntime:
        """Return fresh state for one generation."""
        if num_blocks < 2:
            raise ValueError(f"FirstBlockCache needs at least 2 blocks, got {num_blocks}")
        return _FirstBlockRuntime(self, num_blocks)


class _FirstBlockRuntime(BlockRuntime):
    def __init__(self, config: FirstBlockCache, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.schedule = _threshold_schedule(
            config.tol, config.max_reuse, config.warmup, "FirstBlockCache"
        )
        self.tail = _Residual(make_predictor(config.predictor))
        self.previous: torch.Tensor | None = None
        self.head: Streams = ()
        self.full = True

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        if index == 0:
            return self._head(inputs, run)
        last = index == self.num_blocks - 1
        if self.full:
            outputs = self._compute(run)
            if last:
                self.tail.store(self.t, self.head, outputs)
            return outputs
        if last:
            return self._predict(self.tail, inputs)
        self.stats.record("reuse", 0.0)
        return inputs

    def _head(self, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        outputs = self._compute(run)
        residual = outputs[0] - inputs[0]
        indicator = None if self.previous is None else relative_l1(residual, self.previous)
        self.previous = residual
        self.full = decide(self.schedule, self.step, indicator, force=not self.tail.recorded)
        self.head = outputs
        return outputs


@dataclass(frozen=True)
class BlockStack:
    """Any output-level method, applied to the residual of the whole block stack.

    TeaCache and MagCache skip every transformer block on reuse steps and add the
    stack's cached residual (last block's output minus first block's input) to its
    input; the embeddings and the timestep-modulated final layer still run, so the
    output follows the current timestep. Here the schedule, predictor and indicator of
    an output-level method (:class:`FORA`, :class:`ABCache`, :class:`TaylorSeer`,
    :class:`TeaCache`, and :class:`ERTACache` / :class:`HyCa` calibrated on the
    residuals a :class:`BlockRecorder` records) decide and forecast that residual; the
    indicator sees the hidden states entering the first block. Trade-off: the cheap
    layers outside the blocks run every step, which costs little and keeps the output
    modulated by the true timestep.

    Parameters
    ----------
    method
        An output-level method from :mod:`integrators.methods`.

    Examples
    --------
    >>> import torch
    >>> from diffusers import DiTTransformer2DModel
    >>> from integrators.diffusers import apply_cache, cache_stats
    >>> from integrators.methods import ABCache
    >>> dit = DiTTransformer2DModel(in_channels=1, out_channels=1, num_attention_heads=2,
    ...     attention_head_dim=4, num_layers=2, norm_type="ada_norm_zero",
    ...     num_embeds_ada_norm=10, patch_size=2, sample_size=4).eval()
    >>> apply_cache(dit, BlockStack(ABCache(order=2, interval=3)))
    >>> x, labels = torch.randn(2, 1, 4, 4), torch.tensor([1, 2])
    >>> for t in (900, 800, 700, 600):
    ...     _ = dit(x, timestep=torch.tensor([t, t]), class_labels=labels)
    >>> stats = cache_stats(dit)["default"]
    >>> stats.full_steps, stats.reuse_steps  # steps 0 and 3 run both blocks
    (4, 4)
    """

    level: ClassVar[str] = "blocks"

    method: object

    def __post_init__(self) -> None:
        """Check that the method is an output-level one."""
        if getattr(self.method, "level", None) != "output":
            raise TypeError(
                f"BlockStack(method=...) takes an output-level method, got {self.method!r}"
            )

    def make_runtime(self, num_blocks: int) -> BlockRuntime:
        """Return fresh state for one generation."""
        return _StackRuntime(self.method, num_blocks)


class _StackRuntime(BlockRuntime):
    def __init__(self, method: object, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.schedule = method.schedule()
        self.residual = _Residual(method.predictor())
        self.indicator = method.indicator()
        self.inputs: Streams = ()
        self.full = True

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        if index == 0:
            self.inputs = inputs
            signal = None if self.indicator is None else self.indicator(inputs[0], self.t)
            self.full = decide(self.schedule, self.step, signal, force=not self.residual.recorded)
        last = index == self.num_blocks - 1
        if self.full:
            outputs = self._compute(run)
            if last:
                self.residual.store(self.t, self.inputs, outputs)
            return outputs
        if last:
            return self._predict(self.residual, inputs)
        self.stats.record("reuse", 0.0)
        return inputs


@dataclass(frozen=True)
class Sortblock:
    """Recompute only the fastest-changing blocks; extrapolate the others (Sortblock).

    Sortblock (2025, "Similarity-Aware Feature Reuse for Diffusion Model"; >2x) ranks
    blocks by how fast their residuals change, recomputes the top fraction each step,
    refreshes the ranking every few steps and predicts the skipped blocks linearly. Here
    every ``refresh`` steps all blocks run and the ranking is rebuilt from each block's
    relative residual change per unit time; in between the top ``fraction`` run and the
    rest are predicted. Trade-off: a fixed cost per step chosen by ``fraction``, spent
    where the network changes; a ranking that goes stale between refreshes.

    Parameters
    ----------
    fraction
        Fraction of blocks recomputed between refreshes (rounded up).
    refresh
        All blocks run every ``refresh`` steps (the ranking is rebuilt then).
    warmup
        Leading steps on which all blocks run (at least 2 gives a first ranking).
    predictor
        Predictor of skipped residuals (``"linear"`` as published).

    Examples
    --------
    >>> import torch
    >>> from diffusers import DiTTransformer2DModel
    >>> from integrators.diffusers import apply_cache, cache_stats
    >>> dit = DiTTransformer2DModel(in_channels=1, out_channels=1, num_attention_heads=2,
    ...     attention_head_dim=4, num_layers=4, norm_type="ada_norm_zero",
    ...     num_embeds_ada_norm=10, patch_size=2, sample_size=4).eval()
    >>> apply_cache(dit, Sortblock(fraction=0.25, refresh=4, warmup=2))
    >>> x, labels = torch.randn(2, 1, 4, 4), torch.tensor([1, 2])
    >>> for t in (900, 800, 700, 600):
    ...     _ = dit(x, timestep=torch.tensor([t, t]), class_labels=labels)
    >>> cache_stats(dit)["default"].full_steps  # 4 + 4 blocks, then 1 + 1
    10
    """

    level: ClassVar[str] = "blocks"

    fraction: float = 0.25
    refresh: int = 5
    warmup: int = 2
    predictor: str = "linear"

    def __post_init__(self) -> None:
        """Check the parameters by building what a runtime builds."""
        _top([0.0], self.fraction, "Sortblock")
        interval_schedule(self.refresh, self.warmup, "Sortblock")
        make_predictor(self.predictor)

    def make_runtime(self, num_blocks: int) -> BlockRuntime:
        """Return fresh state for one generation."""
        return _SortblockRuntime(self, num_blocks)


class _SortblockRuntime(BlockRuntime):
    def __init__(self, config: Sortblock, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.config = config
        self.schedule = interval_schedule(config.refresh, config.warmup, "Sortblock")
        self.residuals = [_Residual(make_predictor(config.predictor)) for _ in range(num_blocks)]
        self.last: list[tuple[float, torch.Tensor] | None] = [None] * num_blocks
        self.rates = [math.inf] * num_blocks
        self.ranked: set[int] = set(range(num_blocks))
        self.full = True
        self.selected: set[int] = set()

    def _on_begin(self) -> None:
        ready = all(r.recorded for r in self.residuals)
        self.full = decide(self.schedule, self.step, force=not ready)
        self.selected = set(range(self.num_blocks)) if self.full else self.ranked

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        if index not in self.selected:
            return self._predict(self.residuals[index], inputs)
        outputs = self._compute_and_store(self.residuals[index], inputs, run)
        self._update_rate(index, outputs[0] - inputs[0])
        return outputs

    def _update_rate(self, index: int, residual: torch.Tensor) -> None:
        last, self.last[index] = self.last[index], (self.t, residual)
        if last is not None:
            self.rates[index] = relative_l1(residual, last[1]) / abs(self.t - last[0])

    def end_step(self) -> None:
        """Rebuild the ranking after a step on which all blocks ran."""
        if self.full:
            self.ranked = _top(self.rates, self.config.fraction, "Sortblock")


@dataclass(frozen=True)
class ProfilingDiT:
    """Always run the blocks an offline profile marks as important; cache the rest.

    ProfilingDiT (2025, "Model Reveals What to Cache: Profiling-Based Feature Reuse for
    Video Diffusion Models"; 2.01x on Wan2.1) labels blocks from an offline profile
    (foreground-focused blocks from attention maps) and caches only the others. Here the
    profile is each block's mean residual change per step, recorded with
    :class:`BlockRecorder` (:meth:`from_profile`): blocks in ``always`` run every step,
    the others every ``interval`` steps, reusing their residual in between. Trade-off:
    no online decisions, a fixed cost per step; the profile must match the model and
    sampler.

    Parameters
    ----------
    always
        Indices of the blocks that run on every step.
    interval
        The other blocks run every ``interval`` steps.
    warmup
        Leading steps on which every block runs.
    predictor
        Predictor of the cached blocks' residuals.

    Examples
    --------
    >>> import torch
    >>> from diffusers import DiTTransformer2DModel
    >>> from integrators.diffusers import apply_cache, cache_stats, remove_cache
    >>> dit = DiTTransformer2DModel(in_channels=1, out_channels=1, num_attention_heads=2,
    ...     attention_head_dim=4, num_layers=4, norm_type="ada_norm_zero",
    ...     num_embeds_ada_norm=10, patch_size=2, sample_size=4).eval()
    >>> x, labels = torch.randn(2, 1, 4, 4), torch.tensor([1, 2])
    >>> def generate():
    ...     for t in (900, 800, 700, 600):
    ...         _ = dit(x * t / 1000, timestep=torch.tensor([t, t]), class_labels=labels)
    >>> recorder = BlockRecorder()
    >>> apply_cache(dit, recorder); generate(); remove_cache(dit)
    >>> method = ProfilingDiT.from_profile(recorder.scores(), fraction=0.5, interval=4)
    >>> len(method.always)
    2
    >>> apply_cache(dit, method); generate()
    >>> cache_stats(dit)["default"].full_steps  # 4 blocks, then 2 per step
    10
    """

    level: ClassVar[str] = "blocks"

    always: tuple[int, ...] = ()
    interval: int = 3
    warmup: int = 1
    predictor: str = "reuse"

    def __post_init__(self) -> None:
        """Check the parameters by building what a runtime builds."""
        for index in self.always:
            check_int(index, "ProfilingDiT(always=...) entries", 0)
        interval_schedule(self.interval, self.warmup, "ProfilingDiT")
        make_predictor(self.predictor)

    @classmethod
    def from_profile(
        cls, scores: Sequence[float], fraction: float = 0.25, interval: int = 3, warmup: int = 1
    ) -> ProfilingDiT:
        """Mark the ``fraction`` of blocks with the highest scores as always computed."""
        always = tuple(sorted(_top(list(scores), fraction, "ProfilingDiT.from_profile")))
        return cls(always=always, interval=interval, warmup=warmup)

    def make_runtime(self, num_blocks: int) -> BlockRuntime:
        """Return fresh state for one generation."""
        bad = [i for i in self.always if i >= num_blocks]
        if bad:
            raise ValueError(f"ProfilingDiT(always=...) has {bad}, outside the {num_blocks} blocks")
        return _ProfilingRuntime(self, num_blocks)


class _ProfilingRuntime(BlockRuntime):
    def __init__(self, config: ProfilingDiT, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.always = set(config.always)
        self.schedule = interval_schedule(config.interval, config.warmup, "ProfilingDiT")
        self.residuals = [_Residual(make_predictor(config.predictor)) for _ in range(num_blocks)]
        self.full = True

    def _on_begin(self) -> None:
        ready = all(r.recorded for i, r in enumerate(self.residuals) if i not in self.always)
        self.full = decide(self.schedule, self.step, force=not ready)

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        if self.full or index in self.always:
            return self._compute_and_store(self.residuals[index], inputs, run)
        return self._predict(self.residuals[index], inputs)


class BlockRecorder:
    """Run every block; record each block's residual change and the stack's residual.

    Attach it with :func:`integrators.diffusers.apply_cache` and run a generation. Then
    :meth:`scores` is the profile for :meth:`ProfilingDiT.from_profile`, and
    ``times``, ``inputs`` (hidden states entering the first block) and ``residuals``
    (the stack's residual on the hidden states) calibrate methods for
    :class:`BlockStack` (``ERTACache.calibrate(recorder.residuals, recorder.times, ...)``).
    """

    level: ClassVar[str] = "blocks"

    def __init__(self) -> None:
        self.changes: list[list[float]] = []
        self.times: list[float] = []
        self.inputs: list[torch.Tensor] = []
        self.residuals: list[torch.Tensor] = []

    def make_runtime(self, num_blocks: int) -> BlockRuntime:
        """Return a runtime that runs every block and appends to :attr:`changes`."""
        if not self.changes:
            self.changes = [[] for _ in range(num_blocks)]
        if len(self.changes) != num_blocks:
            raise ValueError(
                f"BlockRecorder saw {len(self.changes)} blocks before, now {num_blocks}"
            )
        return _RecordingRuntime(self, num_blocks)

    def scores(self) -> list[float]:
        """Mean relative residual change per step, per block."""
        if not self.changes or not any(self.changes):
            raise RuntimeError("BlockRecorder has recorded nothing; run a generation first")
        return [sum(c) / max(1, len(c)) for c in self.changes]


class _RecordingRuntime(BlockRuntime):
    def __init__(self, recorder: BlockRecorder, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.recorder = recorder
        self.previous: list[torch.Tensor | None] = [None] * num_blocks

    def block(self, index: int, inputs: Streams, run: Callable[[], Streams]) -> Streams:
        recorder = self.recorder
        if index == 0:
            recorder.times.append(self.t)
            recorder.inputs.append(inputs[0].detach())
        outputs = self._compute(run)
        residual = (outputs[0] - inputs[0]).detach()
        if self.previous[index] is not None:
            recorder.changes[index].append(relative_l1(residual, self.previous[index]))
        self.previous[index] = residual
        if index == self.num_blocks - 1:
            recorder.residuals.append((outputs[0] - recorder.inputs[-1]).detach())
        return outputs
