"""Start a current surrogate from a version-1 file (``python -m boostmd.train --init``).

Version 1 learned a free polynomial ``a z^2 + b z^3 + c z^4`` (only ``c >= 0``) per atom
and channel; version 2 bounds it below (:mod:`boostmd.forcefields.surrogate`). Everything else, the
networks that read the reference's node features and weight the edges, has the same
shape and meaning, so it is copied. The new coefficient head is a linear map from the
same hidden features; it is fitted by least squares so that on the given node features
it reproduces the old polynomial as closely as the bounded form allows:

- ``alpha = sqrt(max(a, 0))`` and ``s = min(a, 0)`` (a negative curvature moves into the
  saturating term, equal to it for small ``z``);
- ``gamma = sqrt(c)``; ``tanh(beta) = b / (2 alpha gamma)``, clipped to +-0.95.

Version 1 had no many-body term either; it starts switched off (zero read-out), as for a
version-2 file. Fine-tuning then trains the result as usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from boostmd.forcefields.files import read_payload
from boostmd.forcefields.surrogate import FORMAT, Surrogate, SurrogateConfig

__all__ = ["upgrade_version_1"]

logger = logging.getLogger(__name__)


def _targets(old_raw: torch.Tensor) -> torch.Tensor:
    """Version-2 raw head outputs ``(alpha, beta, gamma, s)`` from version-1 ones."""
    a, b, c_raw = old_raw.chunk(3, dim=-1)
    c = nn.functional.softplus(c_raw)
    alpha, gamma = a.clamp(min=0).sqrt(), c.sqrt()
    ratio = (b / (2 * alpha * gamma).clamp(min=1e-8)).clamp(-0.95, 0.95)
    return torch.cat([alpha, torch.atanh(ratio), gamma, a.clamp(max=0)], dim=-1)


def upgrade_version_1(
    path: str | Path, numbers: np.ndarray, node_features: np.ndarray
) -> Surrogate:
    """Build a version-2 surrogate from the version-1 file at ``path``.

    Parameters
    ----------
    path
        A surrogate written by boostmd 0.1 (format version 1).
    numbers
        Atomic numbers of sample atoms, shape ``(m,)``.
    node_features
        The reference's node features of the same atoms, shape ``(m, feature_dim)``; the
        new head is fitted on them (use atoms from the training data).

    Raises
    ------
    ValueError
        If the file is not a version-1 surrogate.
    """
    payload = read_payload(path, FORMAT, "BoostMD surrogate", "python -m boostmd.train")
    if payload.get("version") != 1:
        raise ValueError(f"{path} is not a version-1 surrogate (version {payload.get('version')})")
    state = payload["state_dict"]
    dtype = state["feature_in.weight"].dtype
    surrogate = Surrogate(SurrogateConfig.from_json(payload["config"])).to(dtype)
    shared = {k: v for k, v in state.items() if not k.startswith("coefficient_head.")}
    missing, _ = surrogate.load_state_dict(shared, strict=False)
    missing = {key for key in missing if not key.startswith("body.")}  # off (zero read-out)
    if missing != {"coefficient_head.weight", "coefficient_head.bias"}:
        raise ValueError(f"{path}: unexpected version-1 layout (missing {missing})")
    with torch.no_grad():
        features = torch.as_tensor(node_features, dtype=dtype)
        features = (features - surrogate.feature_mean) / surrogate.feature_std
        species = surrogate.species_index(numbers)
        hidden = surrogate.node_mlp(
            surrogate.feature_in(features) + surrogate.species_embedding(species)
        )
        old_raw = hidden @ state["coefficient_head.weight"].T + state["coefficient_head.bias"]
        targets = _targets(old_raw)
        design = torch.cat([hidden, torch.ones(len(hidden), 1, dtype=dtype)], dim=1)
        solution = torch.linalg.lstsq(design.double(), targets.double()).solution.to(dtype)
        surrogate.coefficient_head.weight.copy_(solution[:-1].T)
        surrogate.coefficient_head.bias.copy_(solution[-1])
        residual = (design @ solution - targets).pow(2).mean().sqrt()
    logger.info("upgraded %s to version 2 (head fit RMS residual %.3g)", path, float(residual))
    return surrogate
