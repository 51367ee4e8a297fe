"""The models shipped with the package, and how to load them."""

from __future__ import annotations

from pathlib import Path

import torch

from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import Surrogate

__all__ = ["MODELS_DIR", "PRETRAINED", "load_pretrained"]

MODELS_DIR = Path(__file__).parent / "models"
PRETRAINED = {
    # name: (reference weights, surrogate, how they were made)
    "dipeptides": (
        "dipeptides-reference.pt",
        "dipeptides-surrogate.pt",
        "python -m boostmd.make_reference; python -m boostmd.train",
    ),
}


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
        For an unknown name.
    FileNotFoundError
        If the files are missing from this installation, with the commands that make them.
    """
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained models named {name!r}; choose from {sorted(PRETRAINED)}")
    reference_file, surrogate_file, recipe = PRETRAINED[name]
    for file in (reference_file, surrogate_file):
        if not (MODELS_DIR / file).is_file():
            raise FileNotFoundError(
                f"{MODELS_DIR / file} is missing from this installation; make it with "
                f"{recipe}, or reinstall the package"
            )
    reference = MACEReference.load(MODELS_DIR / reference_file, device=device, dtype=dtype)
    surrogate = Surrogate.load(MODELS_DIR / surrogate_file, device=device, dtype=reference.dtype)
    return reference, surrogate
