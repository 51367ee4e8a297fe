"""Quiet start-up for the project's command-line tools.

The packages we build on announce things at import that say nothing to a user of our
tools: e3nn and mace-torch decorate functions with ``torch.jit.script``, which current
torch marks as deprecated (one warning per function, dozens of lines with some builds);
e3nn loads its bundled constants with ``torch.load`` and no ``weights_only``, which torch
reports; mace prints that cuEquivariance is not installed. Command-line entry points call
:func:`start_tool` first; libraries never do (importing ``boostmd``, ``zo`` or
``integrators`` changes no warning filter). Only these known messages from these
packages are dropped: warnings our own code raises, and any other third-party warning,
still show.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings
from collections.abc import Iterator

__all__ = ["KNOWN_PRINTS", "KNOWN_WARNINGS", "known_prints_dropped", "start_tool"]

_THIRD_PARTY = r"(torch|e3nn|mace)(\..*)?$"

KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`torch\.jit\.script` is deprecated", DeprecationWarning),
    (r".*TorchScript", Warning),
    (r"Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected", UserWarning),
)
"""``(message regex, category)`` of the warnings :func:`start_tool` drops when raised
from torch, e3nn or mace modules."""

KNOWN_PRINTS: tuple[re.Pattern[str], ...] = (
    re.compile(r"cuequivariance or cuequivariance_torch is not available"),
)
"""Lines third-party imports print to standard output that :func:`known_prints_dropped`
drops."""


def start_tool(level: int = logging.INFO, fmt: str | None = None) -> None:
    """Set up a command-line tool's output: logging, and the known warnings dropped.

    Parameters
    ----------
    level
        Logging level of the root logger (``logging.basicConfig``).
    fmt
        Log record format; ``None`` keeps logging's default.
    """
    logging.basicConfig(level=level, **({"format": fmt} if fmt else {}))
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=_THIRD_PARTY)


@contextlib.contextmanager
def known_prints_dropped() -> Iterator[None]:
    """Capture standard output inside the block; pass on every line but the known ones.

    For imports that print (mace-torch does at import); the lines that are not in
    :data:`KNOWN_PRINTS` are written on leaving the block, in order.
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines(keepends=True):
            if not any(pattern.search(line) for pattern in KNOWN_PRINTS):
                sys.stdout.write(line)
