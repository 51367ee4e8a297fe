"""Image datasets held in memory: CIFAR-10 from its python batches, and sklearn's digits.

CIFAR-10 is read from the standard "python version" archive (``cifar-10-python.tar.gz``
from https://www.cs.toronto.edu/~kriz/cifar.html), extracted: ``data_batch_1`` ..
``data_batch_5`` and ``test_batch``, either directly in ``data_dir`` or in
``data_dir/cifar-10-batches-py``. Nothing is downloaded. The batches are pickles; they
are read with an unpickler that only builds plain containers and numpy arrays.
"""

from __future__ import annotations

import codecs
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_FILES",
    "DATASETS",
    "ImageData",
    "crop_and_flip",
    "load_cifar10",
    "load_dataset",
    "load_digits",
]

logger = logging.getLogger(__name__)

CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
DATASETS = ("cifar10", "digits")
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ImageData:
    """Training and test images with labels, and how to normalise them.

    Images are ``(N, C, H, W)`` in their stored units (``uint8`` for CIFAR-10);
    ``mean`` and ``std`` are per channel in the same units.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    num_classes: int
    augment: bool = False

    @property
    def in_channels(self) -> int:
        """Image channels."""
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        """Image height (images are square)."""
        return self.train_images.shape[2]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float images with zero mean and unit variance per channel."""
        mean = self.mean.view(-1, 1, 1).to(images.device)
        std = self.std.view(-1, 1, 1).to(images.device)
        return (images.float() - mean) / std

    def train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, normalised (and augmented) full training batches; the rest is dropped."""
        order = torch.randperm(len(self.train_labels), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = order[start : start + batch_size]
            images = self.normalise(self.train_images[chosen])
            if self.augment:
                images = crop_and_flip(images, generator)
            yield images, self.train_labels[chosen]

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised test batches in order."""
        for start in range(0, len(self.test_labels), batch_size):
            stop = start + batch_size
            yield self.normalise(self.test_images[start:stop]), self.test_labels[start:stop]


def crop_and_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    rows = (top + torch.arange(height)).view(n, 1, height, 1)
    columns = (left + torch.arange(width)).view(n, 1, 1, width)
    cropped = padded[
        torch.arange(n).view(n, 1, 1, 1),
        torch.arange(images.shape[1]).view(1, -1, 1, 1),
        rows,
        columns,
    ]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), cropped.flip(-1), cropped)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only containers, bytes and numpy arrays; refuses any other class."""

    def find_class(self, module: str, name: str) -> object:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # numpy's own array rebuilder, wherever this numpy version keeps it
            return np.empty(0).__reduce__()[0]
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles from Python 3
            return codecs.encode
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays and lists"
        )


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with path.open("rb") as handle:
        batch = _ArrayUnpickler(handle, encoding="bytes").load()
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def _cifar_directory(data_dir: Path) -> Path:
    candidates = (data_dir, data_dir / "cifar-10-batches-py")
    for directory in candidates:
        if all((directory / name).is_file() for name in CIFAR10_FILES):
            return directory
    raise FileNotFoundError(
        f"CIFAR-10 not found in {data_dir}: expected the python-version batches "
        f"({', '.join(CIFAR10_FILES)}) in {data_dir} or {data_dir / 'cifar-10-batches-py'}. "
        "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        f"and extract it there (tar -xzf cifar-10-python.tar.gz -C {data_dir}), or pass "
        "--data-dir pointing at the extracted folder"
    )


def load_cifar10(data_dir: str | Path) -> ImageData:
    """Read CIFAR-10 (50,000 training and 10,000 test images) from the python batches.

    Raises
    ------
    FileNotFoundError
        If the batches are not in ``data_dir``, saying what to put where.
    """
    directory = _cifar_directory(Path(data_dir))
    parts = [_read_cifar_batch(directory / name) for name in CIFAR10_FILES]
    train_images = torch.cat([images for images, _ in parts[:-1]])
    train_labels = torch.cat([labels for _, labels in parts[:-1]])
    logger.info("CIFAR-10 from %s: %d training images", directory, len(train_labels))
    return ImageData(
        train_images=train_images,
        train_labels=train_labels,
        test_images=parts[-1][0],
        test_labels=parts[-1][1],
        mean=255 * torch.tensor(_CIFAR_MEAN),
        std=255 * torch.tensor(_CIFAR_STD),
        num_classes=10,
        augment=True,
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """Scikit-learn's bundled 8x8 digits (1,797 images, values 0-16), split stratified.

    Needs scikit-learn (the ``zo`` extra); reads only files shipped with it.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = digits.images.astype(np.float32)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    train_images = torch.from_numpy(train_x)
    return ImageData(
        train_images=train_images,
        train_labels=torch.from_numpy(train_y).long(),
        test_images=torch.from_numpy(test_x),
        test_labels=torch.from_numpy(test_y).long(),
        mean=train_images.mean().reshape(1),
        std=train_images.std().reshape(1),
        num_classes=10,
    )


def load_dataset(name: str, data_dir: str | Path | None = None) -> ImageData:
    """Load dataset ``name`` (one of :data:`DATASETS`)."""
    if name == "cifar10":
        if data_dir is None:
            raise FileNotFoundError(
                "CIFAR-10 needs --data-dir: a folder holding the extracted python batches "
                "(cifar-10-batches-py from cifar-10-python.tar.gz)"
            )
        return load_cifar10(data_dir)
    if name == "digits":
        return load_digits()
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
