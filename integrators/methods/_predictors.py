"""Predictors by name, so that method configs stay plain data."""

from __future__ import annotations

import re

from integrators.predictors import AdamsBashforth, Linear, Reuse, Taylor

_PATTERN = re.compile(r"(reuse|linear|ab|taylor)(\d*)")


def make_predictor(name: str) -> object:
    """Build a fresh predictor from its name.

    ``"reuse"``, ``"linear"``, ``"ab<k>"`` (Adams-Bashforth order ``k``) and
    ``"taylor<k>"`` (Taylor order ``k``).

    Examples
    --------
    >>> make_predictor("ab3")
    AdamsBashforth(order=3, effective_order=0)
    """
    match = _PATTERN.fullmatch(name) if isinstance(name, str) else None
    if match is None or (match[1] in ("reuse", "linear")) == bool(match[2]):
        raise ValueError(
            f"unknown predictor {name!r}; use 'reuse', 'linear', 'ab<k>' or 'taylor<k>'"
        )
    kind, order = match[1], match[2]
    if kind == "reuse":
        return Reuse()
    if kind == "linear":
        return Linear()
    return (AdamsBashforth if kind == "ab" else Taylor)(order=int(order))
