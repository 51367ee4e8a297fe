"""The one place the project imports mace-torch.

mace-torch pins e3nn 0.4.4, whose import calls ``torch.load`` on bundled constants
without ``weights_only``; torch >= 2.6 refuses that unless the environment variable
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set before e3nn is first imported. mace sets it
itself when imported; we set it here first, on purpose and with a log line, so the change
is visible and happens only when MACE is actually needed (never at ``import boostmd``).
The variable only changes ``torch.load`` calls that leave ``weights_only`` unset: every
load in this project passes it explicitly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from integrators.console import known_prints_dropped, start_tool

logger = logging.getLogger(__name__)

_VARIABLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def import_mace() -> ModuleType:
    """Import and return :mod:`mace` after making e3nn 0.4.4 importable.

    Returns
    -------
    module
        The ``mace`` package, with ``mace.modules`` and ``mace.data`` imported.

    Raises
    ------
    ImportError
        If mace-torch is not installed, with the command that installs it.
    """
    if os.environ.get(_VARIABLE) != "1" and "e3nn" not in sys.modules:
        logger.info(
            "setting %s=1 so that e3nn 0.4.4 (pinned by mace-torch) imports on this torch",
            _VARIABLE,
        )
        os.environ[_VARIABLE] = "1"
    try:
        import mace
        import mace.data
        import mace.modules
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "BoostMD needs mace-torch for its reference model: pip install mace-torch"
        ) from error
    return mace


@contextmanager
def eager_e3nn() -> Iterator[None]:
    """Build e3nn modules inside the block as plain ``torch.fx`` code, not TorchScript.

    TorchScript's profiling executor runs a function's first call through another graph
    than later calls, so forces would differ in the last bits with the number of calls a
    process made before (a resumed run would not repeat an uninterrupted one). The eager
    modules give the same result on every call and are no slower on a dipeptide (0.137
    against 0.156 s per call). e3nn's global default is restored on leaving the block.
    """
    import e3nn

    previous = e3nn.get_optimization_defaults()["jit_script_fx"]
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(jit_script_fx=previous)


def start_command(level: int = logging.INFO, *, mace: bool = True) -> None:
    """Start a BoostMD command: logging at ``level``, known third-party noise dropped.

    With ``mace`` the reference's packages are imported here, so that what they print at
    import is filtered (:func:`integrators.console.known_prints_dropped`).
    """
    start_tool(level)
    if mace:
        with known_prints_dropped():
            import_mace()
