"""Hooks that let the low-resolution methods skip a diffusers UNet's inner levels.

:func:`integrators.diffusers.apply_cache` with a method of level ``"lowres"``
(:mod:`integrators.methods.lowres`) calls :func:`register_lowres_hooks`. For ``depth``
outer levels of a UNet with ``n`` levels the hooks sit on:

- the *entry* block ``down_blocks[depth - 1]``: it always runs; its output sample (what
  goes inward) and its time embedding go to the method;
- the *skipped* blocks ``down_blocks[depth:]``, ``mid_block`` and
  ``up_blocks[:n - 1 - depth]``: they run on full steps; on cheap steps each returns what
  it returned on the context's last full step, untouched, so that the UNet's forward
  threads the right number and shapes of skip tensors (only skipped blocks consume
  them);
- the *exit* block ``up_blocks[n - 1 - depth]``: on full steps it runs and the method
  stores its output; on cheap steps the method's prediction replaces it.

This follows the UNet's own skip bookkeeping: the inner up blocks consume exactly the
skips of the inner down blocks plus the entry block's downsampled output, so the inner
levels are one function of the entry sample and the embedding (and, in
``UNet2DConditionModel``, the text conditioning).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any

from diffusers.hooks.hooks import HookRegistry, ModelHook
from torch import nn

__all__ = ["LOWRES_HOOK", "InnerLevels", "inner_levels", "register_lowres_hooks"]

LOWRES_HOOK = "integrators_cache_lowres"


@dataclass(frozen=True)
class InnerLevels:
    """The blocks around and inside a UNet's inner levels (see the module docstring)."""

    entry: nn.Module
    skipped: tuple[nn.Module, ...]
    exit: nn.Module


def inner_levels(unet: nn.Module, depth: int) -> InnerLevels:
    """Split a diffusers UNet into the blocks the hooks need.

    Raises
    ------
    ValueError
        If ``unet`` has no ``down_blocks`` / ``up_blocks`` of equal length, ``depth`` does
        not leave at least one inner level, or a block carries a skip sample (the
        ``*SkipDownBlock2D`` family, whose extra stream the inner levels would have to
        predict too).
    """
    down, up = getattr(unet, "down_blocks", None), getattr(unet, "up_blocks", None)
    if not isinstance(down, nn.ModuleList) or not isinstance(up, nn.ModuleList):
        raise ValueError(
            f"{type(unet).__name__} has no down_blocks/up_blocks; low-resolution methods "
            "work on diffusers UNets (UNet2DModel, UNet2DConditionModel)"
        )
    levels = len(down)
    if len(up) != levels:
        raise ValueError(f"{type(unet).__name__} has {levels} down and {len(up)} up blocks")
    if not 1 <= depth < levels:
        raise ValueError(
            f"depth must be between 1 and {levels - 1} for a UNet with {levels} levels, got {depth}"
        )
    skip_blocks = [type(b).__name__ for b in (*down, *up) if hasattr(b, "skip_conv")]
    if skip_blocks:
        raise ValueError(
            f"{type(unet).__name__} has skip-sample blocks ({', '.join(skip_blocks)}), "
            "which low-resolution methods do not support"
        )
    mid = getattr(unet, "mid_block", None)
    skipped = (*down[depth:], *([mid] if mid is not None else []), *up[: levels - 1 - depth])
    return InnerLevels(entry=down[depth - 1], skipped=skipped, exit=up[levels - 1 - depth])


def _runtime(root: Any) -> Any:
    return getattr(root.active, "lowres", None)


class _EntryHook(ModelHook):
    """Hands the entry block's output sample and time embedding to the method."""

    def __init__(self, root: Any, block: nn.Module) -> None:
        super().__init__()
        self.root = root
        self.signature = inspect.signature(type(block).forward)

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = self.fn_ref.original_forward(*args, **kwargs)
        runtime = _runtime(self.root)
        if runtime is not None:
            arguments = self.signature.bind(module, *args, **kwargs).arguments
            runtime.enter(output[0], arguments.get("temb"))
        return output


class _SkippedHook(ModelHook):
    """Runs an inner block on full steps; on cheap steps returns its last full output."""

    def __init__(self, root: Any) -> None:
        super().__init__()
        self.root = root
        self.last: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        runtime = _runtime(self.root)
        if runtime is None or runtime.full:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if runtime is not None:
                self.last[runtime] = output
            return output
        return self.last[runtime]


class _ExitHook(ModelHook):
    """Stores the exit block's output on full steps; predicts it on cheap steps."""

    def __init__(self, root: Any) -> None:
        super().__init__()
        self.root = root

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        runtime = _runtime(self.root)
        if runtime is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        if not runtime.full:
            return runtime.predict()
        output = self.fn_ref.original_forward(*args, **kwargs)
        runtime.leave(output)
        return output


def register_lowres_hooks(unet: nn.Module, root: Any, depth: int) -> None:
    """Put the entry, skipped and exit hooks on ``unet``'s blocks, all driven by ``root``.

    ``root.active.lowres`` is the current generation's
    :class:`~integrators.methods.lowres.LowResRuntime` during a call (``None`` outside).
    """
    levels = inner_levels(unet, depth)
    hooks = [(levels.entry, _EntryHook(root, levels.entry)), (levels.exit, _ExitHook(root))]
    hooks += [(block, _SkippedHook(root)) for block in levels.skipped]
    for block, hook in hooks:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, LOWRES_HOOK)
