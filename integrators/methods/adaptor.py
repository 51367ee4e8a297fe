"""Clockwork's adaptor: a small network standing in for a UNet's inner levels.

The adaptor predicts the inner levels' output at the current step from the output at
the last full step, the entry features now and then, and both steps' embeddings. It
works at the entry resolution (half the exit resolution): the last exit, read by a 2x2
stride-2 convolution, is mixed with the entry features and their change (a 1x1
convolution), modulated by the embeddings, passed through one 3x3 residual convolution,
and brought back by a 1x1 convolution and pixel shuffling as a *correction* of the last
exit. The final layer starts at zero, so an untrained adaptor is exactly DeepCache's
plain reuse.

It is distilled from the full UNet on features recorded along the sampler's own
trajectories (:class:`~integrators.methods.lowres.LowResRecorder`): pairs of steps ``i``
and ``i + g`` (gap ``g`` up to the cheap steps a schedule allows) of one trajectory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from integrators.methods.lowres import LowResFeatures
from integrators.methods.output import check_int

__all__ = [
    "AdaptorRecipe",
    "ClockworkAdaptor",
    "distill",
    "load_adaptor",
    "save_adaptor",
    "unet_fingerprint",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptorRecipe:
    """Shapes of an adaptor: what the UNet's inner levels take and return.

    Parameters
    ----------
    entry_channels
        Channels of the inner levels' input (the outer down blocks' output).
    exit_channels
        Channels of their output (at twice the entry resolution).
    embedding_dim
        Width of the UNet's time embedding.
    depth
        Outer levels that run on every step.
    width
        Hidden channels of the adaptor.
    """

    entry_channels: int
    exit_channels: int
    embedding_dim: int
    depth: int = 1
    width: int = 32

    def __post_init__(self) -> None:
        for name in ("entry_channels", "exit_channels", "embedding_dim", "depth", "width"):
            check_int(getattr(self, name), f"AdaptorRecipe({name}=...)", 1)

    @classmethod
    def for_unet(cls, unet: nn.Module, depth: int = 1, width: int = 32) -> AdaptorRecipe:
        """Return the recipe matching a diffusers ``UNet2DModel`` / ``UNet2DConditionModel``."""
        channels = list(unet.config.block_out_channels)
        if not 1 <= depth < len(channels):
            raise ValueError(
                f"depth must be between 1 and {len(channels) - 1} for a UNet with "
                f"{len(channels)} levels, got {depth}"
            )
        return cls(
            entry_channels=channels[depth - 1],
            exit_channels=channels[depth],
            embedding_dim=unet.time_embedding.linear_2.out_features,
            depth=depth,
            width=width,
        )


class ClockworkAdaptor(nn.Module):
    """Predict the inner levels' output from the last full step's and the current features.

    Parameters
    ----------
    recipe
        The shapes, see :class:`AdaptorRecipe`.

    Examples
    --------
    >>> import torch
    >>> adaptor = ClockworkAdaptor(AdaptorRecipe(4, 6, 8, width=8))
    >>> last_exit = torch.randn(2, 6, 8, 8)
    >>> entry, embedding = torch.randn(2, 4, 4, 4), torch.randn(2, 8)
    >>> out = adaptor(last_exit, entry, entry, embedding, embedding)
    >>> torch.equal(out, last_exit)  # untrained: DeepCache's plain reuse
    True
    """

    def __init__(self, recipe: AdaptorRecipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.entry_mix = nn.Conv2d(2 * recipe.entry_channels, recipe.width, 1)
        self.exit_mix = nn.Conv2d(recipe.exit_channels, recipe.width, 2, stride=2)
        self.norm = nn.GroupNorm(_groups(recipe.width), recipe.width)
        self.modulation = nn.Linear(2 * recipe.embedding_dim, 2 * recipe.width)
        self.conv = nn.Conv2d(recipe.width, recipe.width, 3, padding=1)
        self.out = nn.Conv2d(recipe.width, 4 * recipe.exit_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # oneDNN runs these convolutions without layout conversions when the weights are
        # channels-last: 31 -> 18 ms at batch 100 on one CPU thread here.
        self.to(memory_format=torch.channels_last)

    def forward(
        self,
        last_exit: torch.Tensor,
        entry: torch.Tensor,
        last_entry: torch.Tensor,
        embedding: torch.Tensor,
        last_embedding: torch.Tensor,
    ) -> torch.Tensor:
        """Return the predicted exit features, shaped like ``last_exit``."""
        self._check(last_exit, entry)
        mixed = self.entry_mix(torch.cat([entry, entry - last_entry], 1)) + self.exit_mix(last_exit)
        scale, shift = self.modulation(F.silu(torch.cat([embedding, last_embedding], 1))).chunk(
            2, dim=1
        )
        h = F.silu(self.norm(mixed))
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = h + self.conv(F.silu(h))
        return last_exit + F.pixel_shuffle(self.out(F.silu(h)), 2)

    def _check(self, last_exit: torch.Tensor, entry: torch.Tensor) -> None:
        recipe = self.recipe
        if entry.shape[1] != recipe.entry_channels or last_exit.shape[1] != recipe.exit_channels:
            raise ValueError(
                f"this adaptor was distilled for inner levels taking {recipe.entry_channels} "
                f"and returning {recipe.exit_channels} channels at depth {recipe.depth}; this "
                f"UNet gives {entry.shape[1]} and {last_exit.shape[1]}: distill one for it "
                "(integrators.methods.adaptor.distill)"
            )
        if last_exit.shape[-2:] != tuple(2 * s for s in entry.shape[-2:]):
            raise ValueError(
                f"the inner levels' output {tuple(last_exit.shape[-2:])} is not twice their "
                f"input's resolution {tuple(entry.shape[-2:])}; Clockwork's adaptor expects "
                "one downsampling into and one upsampling out of the inner levels"
            )


def _groups(width: int) -> int:
    return next(g for g in (8, 4, 2, 1) if width % g == 0)


def unet_fingerprint(unet: nn.Module) -> str:
    """Return a short hash of a UNet's configuration and weights (which UNet an adaptor is for).

    Private configuration entries (diffusers' ``_name_or_path``, versions) are left out,
    so the same model loaded from another folder has the same fingerprint.
    """
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in unet.state_dict().items():
        digest.update(name.encode())
        digest.update(f"{float(tensor.double().sum()):.6e}".encode())
    return digest.hexdigest()[:16]


# --- distillation ----------------------------------------------------------------------


def _pairs(
    trajectories: list[list[LowResFeatures]], max_gap: int
) -> list[tuple[LowResFeatures, LowResFeatures]]:
    return [
        (steps[i], steps[i + gap])
        for steps in trajectories
        for gap in range(1, max_gap + 1)
        for i in range(len(steps) - gap)
    ]


def _batch(pairs: list, rows: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
    """Stack the selected ``(pair, row)`` items: the adaptor's five inputs, then the target."""
    items = [
        (ref.exit[r], cur.entry[r], ref.entry[r], cur.embedding[r], ref.embedding[r], cur.exit[r])
        for ref, cur, r in ((*pairs[p], r) for p, r in rows)
    ]
    return tuple(torch.stack(column) for column in zip(*items))


def _relative_error(adaptor: ClockworkAdaptor, pairs: list, rows: list) -> tuple[float, float]:
    """RMS error of the adaptor and of plain reuse, relative to the target's RMS."""
    with torch.no_grad():
        *inputs, target = _batch(pairs, rows)
        scale = target.pow(2).mean().sqrt()
        adapted = (adaptor(*inputs) - target).pow(2).mean().sqrt() / scale
        reused = (inputs[0] - target).pow(2).mean().sqrt() / scale
    return float(adapted), float(reused)


def distill(
    adaptor: ClockworkAdaptor,
    trajectories: list[list[LowResFeatures]],
    max_gap: int,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    held_out: float = 0.1,
    seed: int = 0,
) -> dict:
    """Distil the adaptor on recorded features: the current exit from the last full step's.

    Parameters
    ----------
    adaptor
        Trained in place (left in eval mode).
    trajectories
        Features of full generations, one list per generation
        (:class:`~integrators.methods.lowres.LowResRecorder`).
    max_gap
        Largest distance (in steps) from a full step to a cheap one: ``interval - 1``
        for ``Periodic(interval)``.
    steps, batch_size, lr
        AdamW steps on the mean squared error, with cosine decay.
    held_out
        Fraction of the trajectories kept out of training for the reported errors.

    Returns
    -------
    dict
        ``train_loss`` (last 100 steps) and, on the held-out trajectories, the RMS error
        relative to the target of the adaptor (``relative_error``) and of plain reuse
        (``reuse_relative_error``).
    """
    check_int(max_gap, "max_gap", 1)
    if len(trajectories) < 2:
        raise ValueError("distill needs at least two recorded generations (one is held out)")
    rng = random.Random(seed)
    order = list(range(len(trajectories)))
    rng.shuffle(order)
    split = max(1, round(held_out * len(order)))
    train_pairs = _pairs([trajectories[i] for i in order[split:]], max_gap)
    test_pairs = _pairs([trajectories[i] for i in order[:split]], max_gap)
    train_rows = [(p, r) for p, pair in enumerate(train_pairs) for r in range(len(pair[0].entry))]
    test_rows = [(p, r) for p, pair in enumerate(test_pairs) for r in range(len(pair[0].entry))]
    test_rows = rng.sample(test_rows, min(len(test_rows), 2048))
    optimizer = torch.optim.AdamW(adaptor.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    adaptor.train()
    losses = []
    for step in range(steps):
        rows = rng.sample(train_rows, min(batch_size, len(train_rows)))
        *inputs, target = _batch(train_pairs, rows)
        loss = F.mse_loss(adaptor(*inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 5) == 0:
            recent = losses[-100:]
            logger.info("adaptor step %d  loss %.5f", step + 1, sum(recent) / len(recent))
    adaptor.eval()
    adapted, reused = _relative_error(adaptor, test_pairs, test_rows)
    return {
        "train_loss": sum(losses[-100:]) / max(1, len(losses[-100:])),
        "relative_error": adapted,
        "reuse_relative_error": reused,
        "train_pairs": len(train_rows),
        "held_out_generations": split,
    }


# --- files -----------------------------------------------------------------------------


def save_adaptor(
    adaptor: ClockworkAdaptor, folder: str | Path, unet: nn.Module, metadata: dict | None = None
) -> None:
    """Save as ``adaptor.safetensors`` and ``adaptor.json`` (recipe, UNet fingerprint)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in adaptor.state_dict().items()}
    save_file(state, str(folder / "adaptor.safetensors"))
    info = {
        "recipe": asdict(adaptor.recipe),
        "unet_fingerprint": unet_fingerprint(unet),
        **(metadata or {}),
    }
    (folder / "adaptor.json").write_text(json.dumps(info, indent=2) + "\n")


def load_adaptor(folder: str | Path, unet: nn.Module | None = None) -> ClockworkAdaptor:
    """Load an adaptor saved by :func:`save_adaptor`, in eval mode.

    Parameters
    ----------
    folder
        The folder holding ``adaptor.safetensors`` and ``adaptor.json``.
    unet
        If given, the adaptor must have been distilled for exactly this UNet (same
        configuration and weights).

    Raises
    ------
    FileNotFoundError
        If the files are missing.
    ValueError
        If ``unet`` is not the UNet the adaptor was distilled for.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    info_file, weights_file = folder / "adaptor.json", folder / "adaptor.safetensors"
    for file in (info_file, weights_file):
        if not file.exists():
            raise FileNotFoundError(
                f"no Clockwork adaptor at {folder} ({file.name} is missing); distil one with "
                "integrators.methods.adaptor.distill (for the digits UNet: "
                "`python -m integrators.digits.distill_clockwork`)"
            )
    info = json.loads(info_file.read_text())
    if unet is not None and info["unet_fingerprint"] != unet_fingerprint(unet):
        raise ValueError(
            f"the adaptor at {folder} was distilled for another UNet (fingerprint "
            f"{info['unet_fingerprint']}, this one {unet_fingerprint(unet)}); distil one "
            "for this UNet"
        )
    adaptor = ClockworkAdaptor(AdaptorRecipe(**info["recipe"]))
    adaptor.load_state_dict(load_file(str(weights_file)))
    return adaptor.eval()
