"""scikit-learn's handwritten digits, upsampled for a tiny diffusion model."""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

__all__ = ["IMAGE_SIZE", "NUM_CLASSES", "digits", "require"]

IMAGE_SIZE = 16
"""Side of the images the shipped models use (the 8x8 originals, upsampled)."""

NUM_CLASSES = 10


def require(module: str, extra: str = "diffusion") -> object:
    """Import ``module`` or raise an ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{module} is needed here: pip install 'boostmd[{extra}]'") from error


def digits(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as images in ``[-1, 1]`` of shape ``(n, 1, size, size)``, and labels.

    The 8x8 originals (intensities 0-16) are upsampled bilinearly.

    Examples
    --------
    >>> images, labels = digits()
    >>> images.shape, labels[:5].tolist()
    (torch.Size([1797, 1, 16, 16]), [0, 1, 2, 3, 4])
    >>> bool(images.min() >= -1) and bool(images.max() <= 1)
    True
    """
    datasets = require("sklearn.datasets")
    bunch = datasets.load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return (images * 2 - 1).clamp(-1, 1), torch.tensor(bunch.target, dtype=torch.long)
