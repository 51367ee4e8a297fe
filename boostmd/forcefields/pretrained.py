"""The models shipped with the package, and how commands name a reference.

A command's ``--reference MODEL`` is one of three things (:func:`load_reference`): the
name of a shipped reference (``dipeptides``; ``water``, for liquid water and solvated
dipeptides in periodic cells, with a surrogate fitted to small boxes of both), a weights
file written by :func:`boostmd.forcefields.mace_io.save_mace` (safe to load), or, with
``pickled=True`` (``--pickled-reference``), a mace-torch ``.model`` file, which is a
pickled module and runs code from the file when loaded: that flag is the user's explicit
choice to trust it. :func:`convert_reference` turns such a file into safe weights once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from boostmd.forcefields.mace_io import save_mace
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import Surrogate

__all__ = [
    "MODELS_DIR",
    "PRETRAINED",
    "convert_reference",
    "load_pretrained",
    "load_reference",
    "shipped_surrogate_for",
]

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).parent / "models"
PRETRAINED = {
    # name: (reference weights, surrogate or None, how they were made)
    "dipeptides": (
        "dipeptides-reference.pt",
        "dipeptides-surrogate.pt",
        "python -m boostmd.make_reference; python -m boostmd.train",
    ),
    "water": (
        "water-reference.pt",
        "water-surrogate.pt",
        "python -m boostmd.make_reference --model water; python -m boostmd.fit --reference "
        "water (the commands in models/water-surrogate.json)",
    ),
}


def _shipped_file(name: str, which: int) -> Path:
    reference_file, surrogate_file, recipe = PRETRAINED[name]
    if which == 1 and surrogate_file is None:
        raise ValueError(
            f"the shipped {name!r} reference comes without a surrogate: fit one to your "
            f"system with python -m boostmd.fit --reference {name} --structure YOUR_STRUCTURE "
            "--out DIR, then pass DIR/surrogate.pt"
        )
    path = MODELS_DIR / (reference_file, surrogate_file)[which]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from this installation; make it with {recipe}, or reinstall "
            "the package"
        )
    return path


def load_pretrained(
    name: str = "dipeptides", device: str | torch.device = "cpu", dtype: str = "float32"
) -> tuple[MACEReference, Surrogate]:
    """Load a shipped reference and its surrogate.

    Parameters
    ----------
    name
        One of :data:`PRETRAINED`.
    device
        Where to run.
    dtype
        ``"float32"`` (MD) or ``"float64"``.

    Raises
    ------
    ValueError
        For an unknown name, or a shipped reference without a surrogate (with the command
        that fits one).
    FileNotFoundError
        If the files are missing from this installation, with the commands that make them.
    """
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained models named {name!r}; choose from {sorted(PRETRAINED)}")
    surrogate_file = _shipped_file(name, 1)
    reference = MACEReference.load(_shipped_file(name, 0), device=device, dtype=dtype)
    surrogate = Surrogate.load(surrogate_file, device=device, dtype=reference.dtype)
    _warn_if_not_validated(surrogate_file)
    return reference, surrogate


_WARNED: set[Path] = set()


def _warn_if_not_validated(surrogate_file: Path) -> None:
    """Say once per file when its model card records a failed sampling validation."""
    card = surrogate_file.with_suffix(".json")
    if surrogate_file in _WARNED or not card.is_file():
        return
    validation = json.loads(card.read_text()).get("validation")
    if validation is None or validation.get("verdict") == "pass":
        return
    _WARNED.add(surrogate_file)
    logger.warning(
        "the shipped surrogate %s has not passed the sampling validation: %s (%s). It runs "
        "and pays, but check what you sample with python -m boostmd.validate",
        surrogate_file.name,
        validation.get("summary", validation.get("verdict")),
        validation.get("report", "no report"),
    )


def load_reference(
    spec: str | Path,
    *,
    pickled: bool = False,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> MACEReference:
    """Load the reference a command's ``--reference`` names.

    Parameters
    ----------
    spec
        A shipped reference's name (:data:`PRETRAINED`), a weights file of
        :func:`~boostmd.forcefields.mace_io.save_mace`, or with ``pickled`` a mace-torch
        ``.model`` file.
    pickled
        Load ``spec`` as a pickled ``.model`` (runs code from the file: trust it).
    device, dtype
        Where and in which precision to run.

    Raises
    ------
    FileNotFoundError
        If ``spec`` is neither a shipped name nor a file.
    ValueError
        If the file is not a weights file; for a ``.model`` file, naming the flag.
    """
    if not pickled and str(spec) in PRETRAINED:
        return MACEReference.load(_shipped_file(str(spec), 0), device=device, dtype=dtype)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"reference {spec}: no such file, and no shipped reference of that name "
            f"(shipped: {', '.join(sorted(PRETRAINED))})"
        )
    if pickled:
        return MACEReference.from_file(path, device=device, dtype=dtype)
    try:
        return MACEReference.load(path, device=device, dtype=dtype)
    except ValueError as error:
        if path.suffix != ".model":
            raise
        raise ValueError(
            f"{path} looks like a mace-torch .model file, a pickled module that runs code "
            "from the file when loaded; if you trust it, pass --pickled-reference "
            "(python -m boostmd.fit converts it once into safe weights in its --out folder)"
        ) from error


def convert_reference(reference: MACEReference, out: str | Path) -> Path:
    """Write a loaded reference (say, from a trusted ``.model``) as a safe weights file, once.

    Returns ``out``; an existing ``out`` is kept as it is (the caller checks that it holds
    this reference, as :mod:`boostmd.training.fit` does by its folder's fingerprint).
    """
    out = Path(out)
    return out if out.is_file() else save_mace(reference.model, out)


def shipped_surrogate_for(reference: MACEReference) -> Surrogate | None:
    """Return the shipped surrogate made for ``reference``, or ``None`` if there is none."""
    for name in PRETRAINED:
        if PRETRAINED[name][1] is None:
            continue
        path = MODELS_DIR / PRETRAINED[name][1]
        if not path.is_file():
            continue
        surrogate = Surrogate.load(path, dtype=reference.dtype)
        if surrogate.config.reference_fingerprint == reference.fingerprint:
            return surrogate.to(device=reference.device)
    return None
