"""The digits UNet: a class-conditional diffusers ``UNet2DModel`` for the low-resolution caches.

Three levels (16x16, 8x8, 4x4) with attention only at 4x4, so most of the compute sits in
the low-resolution middle that Clockwork and DeepCache skip: everything inside the outer
level (``down_blocks[1:]``, the mid block, ``up_blocks[:-1]``) is about three quarters
of a forward pass here. Trained by ``python -m integrators.digits.train_unet`` and stored
as diffusers' ``config.json`` plus safetensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from integrators.digits.data import IMAGE_SIZE, NUM_CLASSES, require
from integrators.digits.models import MODELS_DIR, load_diffusers_model

__all__ = ["CLOCKWORK_DIR", "UNET_DIR", "UNetRecipe", "load_unet"]

UNET_DIR = MODELS_DIR / "digits_unet"
CLOCKWORK_DIR = MODELS_DIR / "digits_clockwork"
"""The shipped Clockwork adaptor of the digits UNet
(:func:`integrators.methods.adaptor.load_adaptor`)."""


@dataclass(frozen=True)
class UNetRecipe:
    """Architecture of the digits UNet (a ``UNet2DModel``).

    Noise prediction with DDPM's linear schedule, like the digits DiT; label
    :data:`~integrators.digits.NULL_CLASS` is the unconditional branch (dropped labels
    during training).

    Examples
    --------
    >>> unet = UNetRecipe(channels=(8, 16), norm_groups=4).build()
    >>> len(unet.down_blocks), unet.config.num_class_embeds
    (2, 11)
    """

    channels: tuple[int, ...] = (16, 48, 96)
    attention_head_dim: int = 16
    norm_groups: int = 8

    def build(self) -> nn.Module:
        """Return a freshly initialised UNet."""
        diffusers = require("diffusers")
        levels = len(self.channels)
        if levels < 2:
            raise ValueError(f"a UNet needs at least two levels, got channels {self.channels}")
        return diffusers.UNet2DModel(
            sample_size=IMAGE_SIZE,
            in_channels=1,
            out_channels=1,
            block_out_channels=tuple(self.channels),
            layers_per_block=1,
            down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
            norm_num_groups=self.norm_groups,
            attention_head_dim=self.attention_head_dim,
            num_class_embeds=NUM_CLASSES + 1,
        )

    def as_dict(self) -> dict:
        """Return the recipe as plain data (for metadata files)."""
        return {**asdict(self), "channels": list(self.channels)}


def load_unet(path: str | Path = UNET_DIR) -> nn.Module:
    """Load a digits UNet saved with ``save_pretrained`` (safetensors), in eval mode.

    Raises
    ------
    FileNotFoundError
        If no model is there; ``python -m integrators.digits.train_unet`` makes one.
    """
    return load_diffusers_model("UNet2DModel", path, "integrators.digits.train_unet")
