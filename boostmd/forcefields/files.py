"""Safe checkpoint files: a header naming the format, tensors and JSON, no code on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["read_payload", "write_payload"]


def write_payload(path: str | Path, kind: str, payload: dict[str, Any], overwrite: bool) -> Path:
    """Write ``payload`` (tensors, numbers, strings) under a ``kind`` header.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False: nothing saved is replaced silently.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": kind, **payload}, path)
    return path


def read_payload(path: str | Path, kind: str, what: str, how_to_make: str) -> dict[str, Any]:
    """Read a file written by :func:`write_payload` with ``torch.load(weights_only=True)``.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If it is not a ``kind`` file or cannot be read, saying how to make one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable {what} file ({error}); {how_to_make}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != kind:
        raise ValueError(
            f"{path} is not a readable {what} file (missing the {kind} header); {how_to_make}"
        )
    return payload
