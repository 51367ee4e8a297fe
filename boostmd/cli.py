"""The ``boostmd`` command: ``boostmd demo|validate|fit|train|data|make-reference ...``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("boostmd.demo", "BoostMD against the reference alone on a dipeptide"),
    "validate": ("boostmd.validation.validate", "does BoostMD sample what the reference samples?"),
    "fit": ("boostmd.training.fit", "fit a surrogate to your own structures and reference"),
    "train": ("boostmd.training.train", "train a surrogate from reference MD runs"),
    "data": ("boostmd.training.data", "generate reference MD runs for surrogate training"),
    "make-reference": (
        "boostmd.training.make_reference",
        "make a shipped reference MACE (dipeptides, or water with --model water)",
    ),
    "xtb-data": ("boostmd.training.xtb_data", "generate GFN2-xTB data for the reference"),
    "water-data": (
        "boostmd.training.water_data",
        "generate xTB data of water cells for the water reference",
    ),
}


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``boostmd COMMAND ARGS`` to ``python -m boostmd.COMMAND ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:15s} {text}" for name, (_, text) in COMMANDS.items()]
        print("usage: boostmd COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines))
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module, _ = COMMANDS[argv[0]]
    importlib.import_module(module).main(argv[1:])
