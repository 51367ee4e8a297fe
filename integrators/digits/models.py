"""The shipped digits models: a class-conditional diffusers DiT and a small classifier.

Both are stored in formats that cannot run code when loaded: the DiT as diffusers'
``config.json`` plus ``diffusion_pytorch_model.safetensors``, the classifier as a
safetensors state dict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from integrators.digits.data import IMAGE_SIZE, NUM_CLASSES, require
from integrators.samplers import DDIM, linear_alphas_cumprod, spaced_timesteps

__all__ = [
    "CLASSIFIER_FILE",
    "DIT_DIR",
    "MODELS_DIR",
    "NULL_CLASS",
    "DiTRecipe",
    "DigitsClassifier",
    "denoiser",
    "guided_ddim",
    "load_classifier",
    "load_dit",
    "noise_schedule",
    "save_classifier",
]

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DIT_DIR = MODELS_DIR / "digits_dit"
CLASSIFIER_FILE = MODELS_DIR / "digits_classifier.safetensors"
NULL_CLASS = NUM_CLASSES
"""The label of the unconditional branch (DiT's extra embedding for dropped labels)."""


def noise_schedule() -> torch.Tensor:
    """``alpha_bar`` of the digits DiT: DDPM's linear schedule over 1,000 timesteps."""
    return linear_alphas_cumprod(1000)


@dataclass(frozen=True)
class DiTRecipe:
    """Architecture of the digits DiT (a ``DiTTransformer2DModel``).

    Noise prediction on ``IMAGE_SIZE`` pixel images with DDPM's linear schedule over
    1,000 training timesteps; labels are dropped with probability 0.1 during training
    (DiT's own label dropout), which gives the unconditional branch for guidance.
    """

    width: int = 96
    heads: int = 4
    layers: int = 6
    patch_size: int = 4

    def build(self) -> nn.Module:
        """Return a freshly initialised transformer."""
        diffusers = require("diffusers")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return diffusers.DiTTransformer2DModel(
            in_channels=1,
            out_channels=1,
            num_attention_heads=self.heads,
            attention_head_dim=self.width // self.heads,
            num_layers=self.layers,
            norm_type="ada_norm_zero",
            num_embeds_ada_norm=NUM_CLASSES,
            patch_size=self.patch_size,
            sample_size=IMAGE_SIZE,
        )

    def as_dict(self) -> dict[str, int]:
        """Return the recipe as plain data (for metadata files)."""
        return asdict(self)


def load_dit(path: str | Path = DIT_DIR) -> nn.Module:
    """Load a digits DiT saved with ``save_pretrained`` (safetensors), in eval mode.

    Raises
    ------
    FileNotFoundError
        If no model is there; ``python -m integrators.digits.train`` makes one.
    """
    return load_diffusers_model("DiTTransformer2DModel", path, "integrators.digits.train")


def load_diffusers_model(class_name: str, path: str | Path, command: str) -> nn.Module:
    """Load a diffusers model saved with ``save_pretrained`` (safetensors), in eval mode.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no model, naming ``python -m command``, which makes one.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no {class_name} at {path}; train one with `python -m {command}`")
    model_class = getattr(require("diffusers"), class_name)
    model = model_class.from_pretrained(path, use_safetensors=True, low_cpu_mem_usage=False)
    return model.eval()


def denoiser(transformer: nn.Module) -> Any:
    """Return ``model_fn(x, t, labels) -> noise`` for :mod:`integrators.samplers`."""

    def model_fn(x: torch.Tensor, t: float, labels: torch.Tensor) -> torch.Tensor:
        timestep = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        out = transformer(x, timestep=timestep, class_labels=labels).sample
        return out[:, : x.shape[1]]

    return model_fn


def guided_ddim(
    model: nn.Module, labels: torch.Tensor, x_T: torch.Tensor, steps: int = 50, scale: float = 3.0
) -> torch.Tensor:
    """Class-conditional DDIM samples of a digits denoiser (DiT or UNet), in ``[-1, 1]``.

    Classifier-free guidance with ``scale`` against :data:`NULL_CLASS`, ``steps`` evenly
    spaced timesteps, no gradients. Caches attached to ``model`` with
    :func:`integrators.diffusers.apply_cache` act on its calls.
    """
    with torch.no_grad():
        images = DDIM(noise_schedule()).sample(
            denoiser(model),
            x_T,
            spaced_timesteps(steps),
            cond=labels,
            uncond=torch.full_like(labels, NULL_CLASS),
            guidance_scale=scale,
        )
    return images.clamp(-1, 1)


class DigitsClassifier(nn.Module):
    """A small CNN for ``(n, 1, 16, 16)`` digits; :meth:`features` feeds Fréchet distances.

    Examples
    --------
    >>> import torch
    >>> model = DigitsClassifier()
    >>> model(torch.zeros(2, 1, 16, 16)).shape, model.features(torch.zeros(2, 1, 16, 16)).shape
    (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    def __init__(self, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (IMAGE_SIZE // 4) ** 2, feature_dim),
            nn.GELU(),
        )
        self.head = nn.Linear(feature_dim, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features of images in ``[-1, 1]``."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.body(images))


def save_classifier(model: DigitsClassifier, path: str | Path, metadata: dict) -> None:
    """Save the classifier's state dict as safetensors, with JSON metadata beside it."""
    safetensors_torch = require("safetensors.torch")
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    safetensors_torch.save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")


def load_classifier(path: str | Path = CLASSIFIER_FILE) -> DigitsClassifier:
    """Load the digits classifier (safetensors state dict), in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no digits classifier at {path}; train one with `python -m integrators.digits.train`"
        )
    safetensors_torch = require("safetensors.torch")
    model = DigitsClassifier()
    model.load_state_dict(safetensors_torch.load_file(str(path)))
    return model.eval()
