"""A safe file format for MACE models: weights plus a JSON architecture.

mace-torch saves whole pickled modules (``.model``), and loading one runs code from the
file. We ship and load our models as a state dict with the architecture as JSON, read
with ``torch.load(weights_only=True)`` and rebuilt through mace-torch's own classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from boostmd.forcefields.files import read_payload, write_payload
from boostmd.forcefields.mace_import import eager_e3nn, import_mace

__all__ = ["load_mace", "save_mace"]

FORMAT = "boostmd-mace"


def _config_to_json(config: dict) -> str:
    def encode(value):
        if isinstance(value, type):
            return {"class": value.__name__}
        if callable(value) and hasattr(value, "__name__"):
            return {"function": value.__name__}
        if isinstance(value, (np.ndarray, torch.Tensor)):
            return np.asarray(value.cpu() if hasattr(value, "cpu") else value).tolist()
        if type(value).__name__ == "Irreps":
            return {"irreps": str(value)}
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        return value

    return json.dumps({key: encode(value) for key, value in config.items()}, sort_keys=True)


def _config_from_json(text: str) -> dict:
    mace = import_mace()
    from e3nn import o3

    def decode(value):
        if isinstance(value, dict) and "class" in value:
            return getattr(mace.modules.blocks, value["class"])
        if isinstance(value, dict) and "function" in value:
            return getattr(torch.nn.functional, value["function"])
        if isinstance(value, dict) and "irreps" in value:
            return o3.Irreps(value["irreps"])
        return value

    config = {key: decode(value) for key, value in json.loads(text).items()}
    config["atomic_energies"] = np.asarray(config["atomic_energies"])
    return config


def save_mace(model: torch.nn.Module, path: str | Path, overwrite: bool = False) -> Path:
    """Write a ``ScaleShiftMACE`` as weights plus JSON architecture.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    import_mace()
    from mace.tools.scripts_utils import extract_config_mace_model

    config = extract_config_mace_model(model)
    if "error" in config:
        raise TypeError(config["error"])
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return write_payload(
        path, FORMAT, {"config": _config_to_json(config), "state_dict": state}, overwrite
    )


def load_mace(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """Rebuild a model written by :func:`save_mace` (safe: ``weights_only=True``).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not in this format or is corrupt.
    """
    how = (
        "write one with boostmd.forcefields.mace_io.save_mace, or load a pickled .model with "
        "MACEReference.from_file"
    )
    payload = read_payload(path, FORMAT, "MACE weights", how)
    mace = import_mace()
    try:
        with eager_e3nn():
            model = mace.modules.ScaleShiftMACE(**_config_from_json(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as error:
        raise ValueError(f"{path} is not a readable MACE weights file ({error}); {how}") from error
    return model.to(device=device, dtype=dtype).eval()
