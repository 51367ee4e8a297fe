"""Minimal structure helpers so caches and predictors accept nested outputs.

A model step may return one tensor or a tuple, list or dict of tensors (a transformer
block returns hidden states and encoder hidden states, for instance). These helpers
apply a function leaf by leaf and keep the container type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

Value = torch.Tensor | tuple | list | dict
"""A tensor or a (nested) tuple, list or dict of tensors."""


def tree_map(fn: Callable[..., torch.Tensor], *trees: Any) -> Any:
    """Apply ``fn`` to corresponding tensor leaves of structurally equal trees.

    Parameters
    ----------
    fn
        Called with one leaf from each tree; returns the new leaf.
    *trees
        Trees with the same structure as the first one.

    Returns
    -------
    Any
        A tree of the first tree's structure holding ``fn``'s results.
    """
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return fn(*trees)
    if isinstance(first, Mapping):
        return type(first)((key, tree_map(fn, *(t[key] for t in trees))) for key in first)
    if isinstance(first, (tuple, list)):
        mapped = [tree_map(fn, *parts) for parts in zip(*trees)]
        if hasattr(first, "_fields"):  # namedtuple
            return type(first)(*mapped)
        return type(first)(mapped)
    raise TypeError(
        f"expected a tensor or a tuple, list or dict of tensors, got {type(first).__name__}"
    )


def leaves(value: Value) -> list[torch.Tensor]:
    """Return the tensor leaves of ``value`` in a fixed order."""
    found: list[torch.Tensor] = []

    def collect(leaf: torch.Tensor) -> torch.Tensor:
        found.append(leaf)
        return leaf

    tree_map(collect, value)
    return found


def detach(value: Value) -> Value:
    """Detach every tensor leaf (shares storage; no copy)."""
    return tree_map(torch.Tensor.detach, value)


def weighted_sum(weights: list[float], values: list[Value]) -> Value:
    """Return ``sum_j weights[j] * values[j]`` leaf by leaf, keeping dtype and device.

    Parameters
    ----------
    weights
        Python floats (computed in double precision by the caller).
    values
        Trees of equal structure, one per weight.
    """

    def combine(*leaves: torch.Tensor) -> torch.Tensor:
        out = leaves[0] * weights[0]
        for weight, leaf in zip(weights[1:], leaves[1:]):
            out = out.add(leaf, alpha=weight)
        return out

    return tree_map(combine, *values)
