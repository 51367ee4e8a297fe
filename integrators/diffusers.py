"""Attach the caching methods to diffusers models through diffusers' own hooks.

``apply_cache(model, config)`` registers a hook on the model (and, for block-level and
low-resolution methods, hooks on its blocks) in diffusers' ``HookRegistry``;
``remove_cache(model)`` takes them off and restores the original forward. It works on
any diffusers transformer whose blocks sit in ``transformer_blocks`` /
``single_transformer_blocks`` (DiT, PixArt, SD3, Flux, ...), on diffusers' UNets
(``UNet2DModel``, ``UNet2DConditionModel``: low-resolution methods) and inside pipeline
calls.

State is kept per cache context: calls wrapped in ``transformer.cache_context("cond")``
and ``("uncond")`` (as diffusers pipelines do for separate guidance passes) each have
their own; calls outside any context share ``"default"``. A generation ends when the
pipeline resets stateful hooks, when :func:`reset_cache` is called, or when the timestep
rises (a new trajectory starts). A second call at the same timestep in the same context
(second-order samplers) runs in full and leaves the cache untouched.

=============  =============================================================  =============
level          methods (:mod:`integrators.methods`)                           hooks on
=============  =============================================================  =============
output         FORA, ABCache, TaylorSeer, TeaCache, ERTACache, HyCa,          transformer
               OutputCache, :class:`~integrators.samplers.Recorder`
blocks         BWCache, FirstBlockCache, Sortblock, ProfilingDiT,             each block
               BlockRecorder
guidance       CFGCache (the two branches batched in one call)                transformer
lowres         Clockwork, DeepCache, LowResRecorder                           UNet blocks
                                                                              (:mod:`integrators.unet`)
=============  =============================================================  =============

Examples
--------
>>> import torch
>>> from diffusers import DiTTransformer2DModel
>>> from integrators.diffusers import apply_cache, cache_stats, remove_cache
>>> from integrators.methods import FORA
>>> dit = DiTTransformer2DModel(in_channels=1, out_channels=1, num_attention_heads=2,
...     attention_head_dim=4, num_layers=2, norm_type="ada_norm_zero",
...     num_embeds_ada_norm=10, patch_size=2, sample_size=4).eval()
>>> x, labels = torch.randn(2, 1, 4, 4), torch.tensor([3, 5])
>>> apply_cache(dit, FORA(interval=2))
>>> outputs = [dit(x, timestep=torch.tensor([t, t]), class_labels=labels).sample
...            for t in (900, 800, 700)]
>>> torch.equal(outputs[1], outputs[0])  # step 1 reused step 0
True
>>> cache_stats(dit)["default"].full_steps
2
>>> remove_cache(dit)
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from integrators.cache import CacheStats
from integrators.methods.blocks import Streams
from integrators.unet import LOWRES_HOOK, inner_levels, register_lowres_hooks

try:
    from diffusers.hooks.hooks import HookRegistry, ModelHook, StateManager
except ImportError as error:  # the adapter is the one module that needs diffusers
    raise ImportError(
        "integrators.diffusers needs diffusers; install the extra: pip install 'boostmd[diffusion]'"
    ) from error

__all__ = ["apply_cache", "cache_stats", "find_blocks", "remove_cache", "reset_cache"]

logger = logging.getLogger(__name__)

ROOT_HOOK = "integrators_cache"
BLOCK_HOOK = "integrators_cache_block"
DEFAULT_CONTEXT = "default"
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks", "layers")
"""Names of the ``ModuleList`` attributes that hold transformer blocks, searched in order."""
BATCHED_ARGUMENTS = (
    "hidden_states",
    "encoder_hidden_states",
    "timestep",
    "class_labels",
    "pooled_projections",
    "guidance",
    "attention_mask",
    "encoder_attention_mask",
    "added_cond_kwargs",
)
"""Forward arguments the CFG cache halves (their tensors batched like the hidden states)."""


def find_blocks(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Return ``(name, block)`` for every transformer block, in definition order."""
    return [
        (f"{name}.{index}", block)
        for name, child in transformer.named_children()
        if name in BLOCK_LISTS and isinstance(child, torch.nn.ModuleList)
        for index, block in enumerate(child)
    ]


# --- calling conventions -------------------------------------------------------------


def _call(original: Callable[..., Any], bound: inspect.BoundArguments) -> Any:
    return original(*bound.args[1:], **bound.kwargs)


def _timestep(bound: inspect.BoundArguments) -> float:
    timestep = bound.arguments.get("timestep")
    if timestep is None:
        raise ValueError(
            "integrators.diffusers caches follow the trajectory through the transformer's "
            "`timestep` argument; pass it"
        )
    if isinstance(timestep, torch.Tensor):
        return float(timestep.reshape(-1)[0])
    return float(timestep)


def _hidden_states(bound: inspect.BoundArguments) -> torch.Tensor:
    if "hidden_states" not in bound.arguments:
        raise ValueError(f"{type(bound.args[0]).__name__}.forward has no hidden_states argument")
    return bound.arguments["hidden_states"]


def _split_output(output: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Return the output's sample tensor and a function building the same kind of output."""
    if isinstance(output, torch.Tensor):
        return output, lambda sample: sample
    if isinstance(output, tuple):
        rest = output[1:]
        return output[0], lambda sample: (sample, *rest)
    return output.sample, lambda sample: type(output)(sample=sample)


def _take_half(value: Any, batch: int, second: bool) -> Any:
    """Take one half of every tensor batched like the hidden states (recursively)."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return value[batch // 2 :] if second else value[: batch // 2]
    if isinstance(value, dict):
        return {k: _take_half(v, batch, second) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_take_half(v, batch, second) for v in value)
    return value


class _BlockIO:
    """How one block class takes and returns its streams (hidden, encoder)."""

    def __init__(self, block: torch.nn.Module) -> None:
        metadata = _registered_metadata(type(block))
        self.hidden_name = getattr(metadata, "hidden_states_argument_name", "hidden_states")
        self.hidden_index = getattr(metadata, "return_hidden_states_index", None)
        self.encoder_index = getattr(metadata, "return_encoder_hidden_states_index", None)
        self.signature = inspect.signature(type(block).forward)
        self.returns_tensor = True

    def inputs(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> Streams:
        arguments = self.signature.bind(block, *args, **kwargs).arguments
        if self.encoder_index is None:
            return (arguments[self.hidden_name],)
        return (arguments[self.hidden_name], arguments.get("encoder_hidden_states"))

    def to_streams(self, output: Any) -> Streams:
        self.returns_tensor = isinstance(output, torch.Tensor)
        if self.returns_tensor:
            return (output,)
        if self.hidden_index is None:
            raise TypeError(
                f"block returned {type(output).__name__}; integrators.diffusers knows "
                "tensor-returning blocks and the block classes diffusers registers"
            )
        if self.encoder_index is None:
            return (output[self.hidden_index],)
        return (output[self.hidden_index], output[self.encoder_index])

    def from_streams(self, streams: Streams) -> Any:
        if self.returns_tensor:
            return streams[0]
        positions = {self.hidden_index: streams[0]}
        if self.encoder_index is not None:
            positions[self.encoder_index] = streams[1]
        return tuple(positions.get(i) for i in range(max(positions) + 1))


def _registered_metadata(block_class: type) -> object | None:
    """Return diffusers' own description of a block class's outputs, if it has one."""
    from diffusers.hooks._helpers import TransformerBlockRegistry

    try:
        return TransformerBlockRegistry.get(block_class)
    except ValueError:
        return None


# --- per-level runtimes ----------------------------------------------------------------


class _OutputRuntime:
    """A core cache around the whole forward; stores and predicts the sample tensor."""

    def __init__(self, config: Any) -> None:
        self.cache = config.make_cache(self._run)
        self.wrap: Callable[[torch.Tensor], Any] | None = None

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    def _run(self, x: torch.Tensor, t: float, original: Callable, bound: Any) -> torch.Tensor:
        sample, self.wrap = _split_output(_call(original, bound))
        return sample

    def forward(self, original: Callable, bound: inspect.BoundArguments, t: float) -> Any:
        sample = self.cache(_hidden_states(bound), t, original, bound)
        return self.wrap(sample)


class _BlocksRuntime:
    """Brackets the forward with the block runtime's steps; block hooks do the work."""

    def __init__(self, config: Any, num_blocks: int) -> None:
        self.blocks = config.make_runtime(num_blocks)

    @property
    def stats(self) -> CacheStats:
        return self.blocks.stats

    def forward(self, original: Callable, bound: inspect.BoundArguments, t: float) -> Any:
        self.blocks.begin_step(t)
        output = _call(original, bound)
        self.blocks.end_step()
        return output


class _GuidanceRuntime:
    """The CFG cache on a batch ``[uncond, cond]`` (or ``[cond, uncond]``)."""

    def __init__(self, config: Any) -> None:
        self.cache = config.make_runtime()
        self.uncond_first = config.uncond_first

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    def forward(self, original: Callable, bound: inspect.BoundArguments, t: float) -> Any:
        start = time.perf_counter()
        batch = _hidden_states(bound).shape[0]
        if batch % 2:
            raise ValueError(
                f"CFGCache needs both guidance branches in one batch; got batch size {batch}"
            )
        full = self.cache.should_compute()
        output = self._full(original, bound, t) if full else self._reuse(original, bound, t, batch)
        self.cache.finish(full, time.perf_counter() - start)
        return output

    def _halves(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = sample.chunk(2)
        return (first, second) if self.uncond_first else (second, first)

    def _full(self, original: Callable, bound: inspect.BoundArguments, t: float) -> Any:
        output = _call(original, bound)
        uncond, cond = self._halves(_split_output(output)[0])
        self.cache.record(t, uncond, cond)
        return output

    def _reuse(
        self, original: Callable, bound: inspect.BoundArguments, t: float, batch: int
    ) -> Any:
        arguments = OrderedDict(
            (
                name,
                _take_half(value, batch, self.uncond_first) if name in BATCHED_ARGUMENTS else value,
            )
            for name, value in bound.arguments.items()
        )
        half = inspect.BoundArguments(bound.signature, arguments)
        cond, wrap = _split_output(_call(original, half))
        uncond = self.cache.rebuild(t, cond)
        return wrap(torch.cat([uncond, cond] if self.uncond_first else [cond, uncond]))


class _LowResLevel:
    """Brackets a UNet's forward with the low-resolution runtime's steps; block hooks skip."""

    def __init__(self, config: Any) -> None:
        self.lowres = config.make_runtime()

    @property
    def stats(self) -> CacheStats:
        return self.lowres.stats

    def forward(self, original: Callable, bound: inspect.BoundArguments, t: float) -> Any:
        self.lowres.begin_step(t)
        return _call(original, bound)


_LEVELS: dict[str, Callable[[Any, int], Callable[[], Any]]] = {
    "output": lambda config, num_blocks: lambda: _OutputRuntime(config),
    "blocks": lambda config, num_blocks: lambda: _BlocksRuntime(config, num_blocks),
    "guidance": lambda config, num_blocks: lambda: _GuidanceRuntime(config),
    "lowres": lambda config, num_blocks: lambda: _LowResLevel(config),
}


# --- hooks -----------------------------------------------------------------------------


class _Generation:
    """One context's state: the level runtime of the current generation."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.runtime = factory()
        self.last_t: float | None = None

    def reset(self) -> None:
        """Nothing to release: the state manager drops this object."""


class _Contexts(StateManager):
    """diffusers' per-context state, with a default context for calls outside any."""

    def current(self) -> tuple[str, _Generation]:
        context = self._context
        name = getattr(context, "name", context) or DEFAULT_CONTEXT
        if name not in self._state_cache:
            self._state_cache[name] = self._state_cls(*self._init_args, **self._init_kwargs)
        return name, self._state_cache[name]


class _RootHook(ModelHook):
    """Runs the transformer's forward through the current context's runtime."""

    _is_stateful = True

    def __init__(self, factory: Callable[[], Any]) -> None:
        super().__init__()
        self.contexts = _Contexts(_Generation, init_args=(factory,))
        self.stats: dict[str, CacheStats] = {}
        self.active: Any = None
        self.signature: inspect.Signature | None = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        """Read the transformer's forward signature once."""
        self.signature = inspect.signature(type(module).forward)
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        bound = self.signature.bind(module, *args, **kwargs)
        t = _timestep(bound)
        name, generation = self.contexts.current()
        if generation.last_t is not None and t == generation.last_t:
            logger.debug("repeated timestep %s in context %r: full, uncached", t, name)
            return _call(self.fn_ref.original_forward, bound)
        if generation.last_t is not None and t > generation.last_t:
            logger.debug("timestep rose to %s in context %r: new generation", t, name)
            generation.runtime = generation.factory()
        generation.last_t = t
        self.stats[name] = generation.runtime.stats
        self.active = generation.runtime
        try:
            return generation.runtime.forward(self.fn_ref.original_forward, bound, t)
        finally:
            self.active = None

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        """Forget every context's generation (diffusers calls this after a pipeline run)."""
        self.contexts.reset()
        return module


class _BlockHook(ModelHook):
    """Asks the active block runtime whether to run this block or predict it."""

    def __init__(self, root: _RootHook, index: int, block: torch.nn.Module) -> None:
        super().__init__()
        self.root = root
        self.index = index
        self.io = _BlockIO(block)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        runtime = getattr(self.root.active, "blocks", None)
        if runtime is None:
            return self.fn_ref.original_forward(*args, **kwargs)

        def run() -> Streams:
            return self.io.to_streams(self.fn_ref.original_forward(*args, **kwargs))

        streams = runtime.block(self.index, self.io.inputs(module, args, kwargs), run)
        return self.io.from_streams(streams)


# --- public API ------------------------------------------------------------------------


def _root(transformer: torch.nn.Module) -> _RootHook | None:
    registry = getattr(transformer, "_diffusers_hook", None)
    return None if registry is None else registry.get_hook(ROOT_HOOK)


def apply_cache(transformer: torch.nn.Module, config: Any) -> None:
    """Attach a caching method to a diffusers transformer or UNet.

    Parameters
    ----------
    transformer
        A diffusers transformer (or any module whose forward takes ``hidden_states`` and
        ``timestep``, with blocks in a ``transformer_blocks`` ``ModuleList``); for
        low-resolution methods, a diffusers UNet (``UNet2DModel``,
        ``UNet2DConditionModel``).
    config
        An output-, block-, guidance- or low-resolution method from
        :mod:`integrators.methods` (or a :class:`~integrators.samplers.Recorder`,
        ``BlockRecorder`` or ``LowResRecorder``).

    Raises
    ------
    TypeError
        If ``config`` is not a method.
    ValueError
        If the model already has a cache, has no blocks for a block-level one, or is not
        a UNet this low-resolution method can split.
    """
    level = getattr(config, "level", None)
    if level not in _LEVELS:
        raise TypeError(
            f"apply_cache(config=...) takes a method from integrators.methods, got "
            f"{type(config).__name__} (level={level!r})"
        )
    if _root(transformer) is not None:
        raise ValueError(f"{type(transformer).__name__} already has a cache; call remove_cache")
    blocks = find_blocks(transformer)
    if level == "blocks" and not blocks:
        raise ValueError(
            f"{type(transformer).__name__} has no blocks in any of {BLOCK_LISTS}; "
            "block-level methods need them"
        )
    if level == "lowres":
        inner_levels(transformer, config.depth)
    root = _RootHook(_LEVELS[level](config, len(blocks)))
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(root, ROOT_HOOK)
    if level == "blocks":
        for index, (_, block) in enumerate(blocks):
            block_registry = HookRegistry.check_if_exists_or_initialize(block)
            block_registry.register_hook(_BlockHook(root, index, block), BLOCK_HOOK)
    if level == "lowres":
        register_lowres_hooks(transformer, root, config.depth)
    _invalidate_child_cache(registry)
    logger.debug("applied %r to %s (%d blocks)", config, type(transformer).__name__, len(blocks))


def remove_cache(transformer: torch.nn.Module) -> None:
    """Remove the cache attached by :func:`apply_cache`; the forward is the original again."""
    if _root(transformer) is None:
        logger.warning("%s has no integrators cache to remove", type(transformer).__name__)
        return
    registry = transformer._diffusers_hook
    registry.remove_hook(ROOT_HOOK, recurse=False)
    registry.remove_hook(BLOCK_HOOK, recurse=True)
    registry.remove_hook(LOWRES_HOOK, recurse=True)
    _invalidate_child_cache(registry)


def reset_cache(transformer: torch.nn.Module) -> None:
    """End the current generation in every context (pipelines do this after each call)."""
    root = _root(transformer)
    if root is not None:
        root.reset_state(transformer)


def cache_stats(transformer: torch.nn.Module) -> dict[str, CacheStats]:
    """Full and reuse counts of the latest generation, per cache context.

    For block-level methods the counts are block evaluations; for the CFG cache, steps
    with and without the unconditional pass.
    """
    root = _root(transformer)
    if root is None:
        raise ValueError(f"{type(transformer).__name__} has no integrators cache")
    return dict(root.stats)


def _invalidate_child_cache(registry: HookRegistry) -> None:
    """Make diffusers' cache-context propagation see the block hooks added or removed."""
    invalidate = getattr(registry, "invalidate_child_registries_cache", None)
    if invalidate is not None:
        invalidate()
