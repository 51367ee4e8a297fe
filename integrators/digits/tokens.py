"""A masked token model of the digits: the test bed for context-feature reuse (ReCAP).

Each 16x16 digit becomes 256 tokens, its pixels quantised to :data:`LEVELS` grey levels
(no VQ tokenizer needed), and a small bidirectional transformer predicts masked tokens
from the visible ones and the class (MaskGIT's training objective). Its attention keeps
keys and values per layer, so a sampler can run every token (a full pass) or only some
positions against the keys and values of the others kept from an earlier pass
(:meth:`MaskedTokenModel.partial`): what :class:`integrators.masked.MaskGIT` needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from integrators.digits.data import IMAGE_SIZE, NUM_CLASSES

__all__ = [
    "LEVELS",
    "MASKED_DIR",
    "KeyValues",
    "MaskedTokenModel",
    "TokenRecipe",
    "detokenise",
    "load_masked_model",
    "save_masked_model",
    "tokenise",
]

LEVELS = 8
MASKED_DIR = Path(__file__).resolve().parent.parent / "models" / "digits_masked"

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, keys and values of every position: ``(batch, heads, positions, head_dim)``."""
Remember = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def tokenise(images: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """``(n, 1, H, W)`` images in [-1, 1] to ``(n, H * W)`` tokens in ``0 .. levels - 1``."""
    unit = ((images.flatten(1) + 1) / 2).clamp(0, 1)
    return (unit * levels).long().clamp(max=levels - 1)


def detokenise(tokens: torch.Tensor, levels: int = LEVELS, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Tokens back to ``(n, 1, size, size)`` images in [-1, 1] (each level's centre)."""
    unit = (tokens.float() + 0.5) / levels
    return (2 * unit - 1).view(-1, 1, size, size)


@dataclass(frozen=True)
class TokenRecipe:
    """Shape of a :class:`MaskedTokenModel`."""

    width: int = 64
    layers: int = 4
    heads: int = 4
    levels: int = LEVELS
    positions: int = IMAGE_SIZE * IMAGE_SIZE
    classes: int = NUM_CLASSES


class _Block(nn.Module):
    """Pre-norm transformer block whose attention takes the keys and values it attends."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        hidden = 4 * width
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, attend: Remember) -> torch.Tensor:
        """Run ``x``; ``attend(k, v)`` gets its keys and values and returns those to use."""
        q, k, v = (self._split(part) for part in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, *attend(k, v))
        x = x + self.out(attended.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class MaskedTokenModel(nn.Module):
    """Bidirectional transformer over a class token and the image tokens.

    Token id ``levels`` is the mask. Position 0 of the sequence is the class token;
    positions ``1 ..`` are the image tokens, so image position ``i`` is sequence position
    ``i + 1``.

    Examples
    --------
    >>> model = MaskedTokenModel(TokenRecipe(width=32, layers=2, heads=2))
    >>> tokens = torch.full((2, 256), model.mask_id)
    >>> logits, cache = model.full(tokens, torch.tensor([3, 7]))
    >>> logits.shape, len(cache)
    (torch.Size([2, 256, 8]), 2)
    """

    def __init__(self, recipe: TokenRecipe = TokenRecipe()) -> None:
        super().__init__()
        self.recipe = recipe
        self.mask_id = recipe.levels
        self.token_embedding = nn.Embedding(recipe.levels + 1, recipe.width)
        self.class_embedding = nn.Embedding(recipe.classes, recipe.width)
        self.position = nn.Parameter(torch.zeros(1, recipe.positions + 1, recipe.width))
        nn.init.normal_(self.position, std=0.02)
        blocks = (_Block(recipe.width, recipe.heads) for _ in range(recipe.layers))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(recipe.width)
        self.head = nn.Linear(recipe.width, recipe.levels)

    def _embed(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sequence = torch.cat(
            [self.class_embedding(labels)[:, None], self.token_embedding(tokens)], dim=1
        )
        return sequence + self.position

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, positions, levels)`` for every image position."""
        return self.full(tokens, labels)[0]

    def full(self, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, KeyValues]:
        """Run every position; return the logits and every layer's keys and values."""
        x = self._embed(tokens, labels)
        cache: KeyValues = []

        def keep(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cache.append((k, v))
            return k, v

        for block in self.blocks:
            x = block(x, keep)
        return self.head(self.norm(x[:, 1:])), cache

    def partial(
        self, tokens: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor, cache: KeyValues
    ) -> torch.Tensor:
        """Run only image ``positions`` against ``cache``; update the cache there.

        Each layer attends to the cached keys and values of every position, with those
        at ``positions`` replaced by the ones just computed (so the cache holds them
        afterwards). Costs about ``len(positions) / (positions + 1)`` of :meth:`full`.

        Parameters
        ----------
        tokens
            ``(batch, positions)`` current tokens (the mask id where undecided).
        labels
            ``(batch,)`` classes.
        positions
            ``(batch, n)`` image positions to run, the same count ``n`` in every row.
        cache
            Keys and values from :meth:`full` (updated in place).

        Returns
        -------
        torch.Tensor
            ``(batch, n, levels)`` logits at ``positions``.
        """
        rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
        sequence = positions + 1
        x = self.token_embedding(tokens.gather(1, positions)) + self.position[0, sequence]
        for block, (keys, values) in zip(self.blocks, cache, strict=True):

            def write(k: torch.Tensor, v: torch.Tensor, keys=keys, values=values) -> tuple:
                keys[rows, :, sequence] = k.transpose(1, 2)
                values[rows, :, sequence] = v.transpose(1, 2)
                return keys, values

            x = block(x, write)
        return self.head(self.norm(x))


def save_masked_model(model: MaskedTokenModel, path: str | Path, metadata: dict) -> None:
    """Write ``model.safetensors`` and ``config.json`` (recipe and ``metadata``) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), path / "model.safetensors")
    config = {"recipe": asdict(model.recipe), **metadata}
    (path / "config.json").write_text(json.dumps(config, indent=2))


def load_masked_model(path: str | Path = MASKED_DIR) -> MaskedTokenModel:
    """Load a model saved by :func:`save_masked_model`, in eval mode.

    Raises
    ------
    FileNotFoundError
        If no model is there; ``python -m integrators.digits.train_tokens`` makes one.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no masked token model at {path}; train one with "
            "`python -m integrators.digits.train_tokens`"
        )
    recipe = TokenRecipe(**json.loads((path / "config.json").read_text())["recipe"])
    model = MaskedTokenModel(recipe)
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model.eval()
