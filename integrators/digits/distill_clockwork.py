"""Distil Clockwork's adaptor for the digits UNet on this CPU (about a minute).

Records the UNet's inner-level features along full guided DDIM generations (the sampler
the benchmark uses), then fits the adaptor to predict a step's inner-level output from
the output ``1..max_gap`` steps earlier (:func:`integrators.methods.adaptor.distill`).
Reports the adaptor's relative error on held-out generations next to plain reuse's.

    python -m integrators.digits.distill_clockwork --force         # the shipped adaptor
    python -m integrators.digits.distill_clockwork --generations 3 --distill-steps 20 --out /tmp/cw
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from integrators.console import start_tool
from integrators.diffusers import apply_cache, remove_cache
from integrators.digits.data import NUM_CLASSES
from integrators.digits.models import guided_ddim
from integrators.digits.train import refuse_to_overwrite
from integrators.digits.unet import CLOCKWORK_DIR, UNET_DIR, load_unet
from integrators.methods import AdaptorRecipe, ClockworkAdaptor, LowResRecorder, distill
from integrators.methods.adaptor import save_adaptor

__all__ = ["GUIDANCE", "SAMPLER_STEPS", "main", "record"]

logger = logging.getLogger(__name__)

SAMPLER_STEPS = 20
"""DDIM steps of the generations the adaptor is distilled on (and benchmarked with)."""
GUIDANCE = 3.0


def record(
    unet: torch.nn.Module,
    generations: int,
    batch: int,
    steps: int = SAMPLER_STEPS,
    depth: int = 1,
    seed: int = 0,
) -> LowResRecorder:
    """Record the inner-level features of ``generations`` full guided DDIM generations."""
    recorder = LowResRecorder(depth=depth)
    generator = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    apply_cache(unet, recorder)
    try:
        for _ in tqdm(range(generations), desc="recording", unit="generation"):
            labels = torch.randint(NUM_CLASSES, (batch,), generator=generator)
            x_T = torch.randn(batch, 1, size, size, generator=generator)
            guided_ddim(unet, labels, x_T, steps, GUIDANCE)
    finally:
        remove_cache(unet)
    return recorder


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unet", type=Path, default=UNET_DIR, help="the UNet to distil for")
    parser.add_argument("--out", type=Path, default=CLOCKWORK_DIR, help="output folder")
    parser.add_argument("--generations", type=int, default=12, help="recorded generations")
    parser.add_argument("--batch", type=int, default=16, help="samples per generation")
    parser.add_argument("--sampler-steps", type=int, default=SAMPLER_STEPS)
    parser.add_argument("--max-gap", type=int, default=3, help="interval - 1 of the schedule")
    parser.add_argument("--depth", type=int, default=1, help="outer levels that always run")
    parser.add_argument("--width", type=int, default=32, help="adaptor channels")
    parser.add_argument("--distill-steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="overwrite an existing adaptor")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Record, distil, save under ``--out`` and return the metadata written."""
    args = _parse(argv)
    start_tool(logging.INFO, "%(asctime)s %(message)s")
    refuse_to_overwrite([args.out / "adaptor.safetensors"], args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    unet = load_unet(args.unet)
    recorder = record(unet, args.generations, args.batch, args.sampler_steps, args.depth, args.seed)
    adaptor = ClockworkAdaptor(AdaptorRecipe.for_unet(unet, args.depth, args.width))
    log = distill(
        adaptor,
        recorder.trajectories,
        args.max_gap,
        steps=args.distill_steps,
        lr=args.lr,
        seed=args.seed,
    )
    logger.info("adaptor: %s", log)
    metadata = {
        "sampler": f"DDIM {args.sampler_steps} steps, guidance {GUIDANCE}",
        "generations": args.generations,
        "batch": args.batch,
        "max_gap": args.max_gap,
        "distill_steps": args.distill_steps,
        **log,
    }
    save_adaptor(adaptor, args.out, unet, metadata)
    return metadata


if __name__ == "__main__":
    main()
