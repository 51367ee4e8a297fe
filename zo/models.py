"""Models for zeroth-order training, each split into stages for feature reuse.

- :class:`ResNet20`: the CIFAR ResNet-20 of He et al. (parameter-free shortcuts, about
  0.27 M parameters); every residual block is two stages, so a query for the second
  convolution of a block does not rerun the first.
- :class:`SmallCNN`: convolution blocks and a linear head (an ``nn.Sequential`` of
  stages).
- :class:`MLP`: linear layers (an ``nn.Sequential`` of stages).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "MODELS", "BasicBlock", "ResNet20", "SmallCNN", "build_model"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class _BlockEntry(nn.Module):
    """First half of a residual block: ``x -> (relu(bn(conv(x))), x)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = _conv3x3(in_channels, out_channels, stride)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(self.bn(self.conv(x))), x


class _BlockExit(nn.Module):
    """Second half: ``(h, x) -> relu(bn(conv(h)) + shortcut(x))``.

    The shortcut subsamples ``x`` and pads the new channels with zeros (option A of
    He et al.), so it has no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = _conv3x3(out_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h, x = state
        shortcut = x[..., :: self.stride, :: self.stride]
        if self.extra_channels:
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(self.bn(self.conv(h)) + shortcut)


class BasicBlock(nn.Module):
    """Residual block of two 3x3 convolutions, run as two stages."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.entry = _BlockEntry(in_channels, out_channels, stride)
        self.exit = _BlockExit(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``."""
        return self.exit(self.entry(x))

    def stages(self) -> list[nn.Module]:
        """Return the block's two halves."""
        return [self.entry, self.exit]


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 images: 3 groups of 3 blocks, 16/32/64 channels.

    Parameters
    ----------
    num_classes
        Outputs of the final linear layer.
    in_channels
        Input image channels.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU())
        blocks = []
        channels = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(3):
                blocks.append(BasicBlock(channels, width, stride if index == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class scores of images ``x``, shape ``(N, num_classes)``."""
        return self.head(self.blocks(self.stem(x)))

    def stages(self) -> list[nn.Module]:
        """Stem, the two halves of each block, head: 20 stages."""
        return [self.stem, *(half for block in self.blocks for half in block.stages()), self.head]


class SmallCNN(nn.Sequential):
    """Convolution blocks (3x3 conv, batch norm, ReLU, 2x2 max pool) and a linear head.

    Parameters
    ----------
    in_channels, image_size, num_classes
        Input channels, input height (= width) and outputs.
    widths
        Channels of each block; the image size must be divisible by ``2 ** len(widths)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32),
    ) -> None:
        if image_size % 2 ** len(widths):
            raise ValueError(
                f"image_size {image_size} is not divisible by 2**{len(widths)} (one pool per block)"
            )
        stages: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            stages.append(
                nn.Sequential(
                    _conv3x3(channels, width), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
                )
            )
            channels = width
        features = channels * (image_size // 2 ** len(widths)) ** 2
        stages.append(nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes)))
        super().__init__(*stages)


class MLP(nn.Sequential):
    """Flatten, then linear layers with ReLU between them; one stage per linear layer.

    Parameters
    ----------
    in_features, num_classes
        Input size (after flattening) and outputs.
    hidden
        Widths of the hidden layers.
    """

    def __init__(
        self, in_features: int = 64, num_classes: int = 10, hidden: Sequence[int] = (64,)
    ) -> None:
        widths = [in_features, *hidden]
        stages: list[nn.Module] = []
        for index, (size_in, size_out) in enumerate(itertools.pairwise(widths)):
            flatten = [nn.Flatten()] if index == 0 else []
            stages.append(nn.Sequential(*flatten, nn.Linear(size_in, size_out), nn.ReLU()))
        head = nn.Linear(widths[-1], num_classes)
        stages.append(head if hidden else nn.Sequential(nn.Flatten(), head))
        super().__init__(*stages)


MODELS = ("resnet20", "cnn", "mlp")


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build model ``name`` (one of :data:`MODELS`) for images of the given shape."""
    if name == "resnet20":
        return ResNet20(num_classes, in_channels)
    if name == "cnn":
        return SmallCNN(in_channels, image_size, num_classes)
    if name == "mlp":
        return MLP(in_channels * image_size**2, num_classes)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
