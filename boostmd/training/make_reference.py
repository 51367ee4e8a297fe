"""Make the shipped reference MACE for capped dipeptides, from GFN2-xTB data.

Steps, each resumable: (1) xTB MD data (:mod:`boostmd.training.xtb_data`); (2) a seeded split
into training and held-out test configurations; (3) training with mace-torch's own
``mace_run_train`` (restarts from its latest checkpoint); (4) errors against xTB on the
held-out configurations; (5) export as safe weights (:mod:`boostmd.forcefields.mace_io`) plus a JSON
report with the recipe and the errors.

    python -m boostmd.make_reference --work data/reference --out boostmd/models
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase.io import read, write

from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.training.xtb_data import ENERGY_KEY, FORCES_KEY, XTBDataConfig, generate

__all__ = ["ReferenceRecipe", "evaluate", "make_reference"]

logger = logging.getLogger(__name__)

NAME = "dipeptides-reference"


@dataclass
class ReferenceRecipe:
    """Everything that determines the shipped reference model."""

    data: XTBDataConfig = field(default_factory=XTBDataConfig)
    test_fraction: float = 0.1
    max_train: int = 1500
    split_seed: int = 0
    hidden_irreps: str = "96x0e+96x1o"
    num_interactions: int = 2
    r_max: float = 5.0
    correlation: int = 3
    batch_size: int = 4
    epochs: int = 12
    lr: float = 0.01
    forces_weight: float = 100.0
    seed: int = 1

    def train_command(self, work: Path) -> list[str]:
        """Return the ``mace_run_train`` command line (run inside ``work``)."""
        return [
            "mace_run_train",
            "--name",
            NAME,
            "--train_file",
            "train.extxyz",
            "--valid_fraction",
            "0.05",
            "--test_file",
            "test.extxyz",
            "--E0s",
            "average",
            "--model",
            "MACE",
            "--hidden_irreps",
            self.hidden_irreps,
            "--num_interactions",
            str(self.num_interactions),
            "--r_max",
            str(self.r_max),
            "--correlation",
            str(self.correlation),
            "--max_L",
            "1",
            "--batch_size",
            str(self.batch_size),
            "--valid_batch_size",
            "16",
            "--max_num_epochs",
            str(self.epochs),
            "--lr",
            str(self.lr),
            "--energy_key",
            ENERGY_KEY,
            "--forces_key",
            FORCES_KEY,
            "--energy_weight",
            "1",
            "--forces_weight",
            str(self.forces_weight),
            "--eval_interval",
            "1",
            "--patience",
            "1000",
            "--device",
            "cpu",
            "--default_dtype",
            "float32",
            "--seed",
            str(self.seed),
            "--restart_latest",
        ]


def split(recipe: ReferenceRecipe, work: Path) -> tuple[Path, Path]:
    """Write ``train.extxyz`` and ``test.extxyz`` (held-out configurations) once."""
    train_path, test_path = work / "train.extxyz", work / "test.extxyz"
    if train_path.exists() and test_path.exists():
        return train_path, test_path
    files = generate(recipe.data)
    frames = [frame for path in files for frame in read(path, index=":")]
    order = np.random.default_rng(recipe.split_seed).permutation(len(frames))
    n_test = round(recipe.test_fraction * len(frames))
    test = [frames[i] for i in order[:n_test]]
    train = [frames[i] for i in order[n_test : n_test + recipe.max_train]]
    write(test_path, test, format="extxyz")
    write(train_path, train, format="extxyz")
    logger.info("split %d frames: %d train, %d test", len(frames), len(train), len(test))
    return train_path, test_path


def evaluate(model: torch.nn.Module, frames) -> dict:
    """Energy and force errors of ``model`` against the frames' xTB labels."""
    from boostmd.forcefields.reference import MACEReference

    reference = MACEReference(model)
    energy_errors, force_errors, per_residue = [], [], {}
    for frame in frames:
        result = reference(frame)
        energy_errors.append((float(result.energy) - frame.info[ENERGY_KEY]) / len(frame))
        error = result.forces.double().numpy() - frame.arrays[FORCES_KEY]
        force_errors.append(error.ravel())
        per_residue.setdefault(frame.info.get("residue", "?"), []).append(error.ravel())
    forces = np.concatenate(force_errors)
    energies = np.asarray(energy_errors)
    energies -= energies.mean()  # report the error beyond a constant offset too
    return {
        "configurations": len(frames),
        "energy_rmse_meV_per_atom": 1000 * float(np.sqrt(np.mean(np.square(energy_errors)))),
        "energy_rmse_meV_per_atom_offset_removed": 1000 * float(np.sqrt(np.mean(energies**2))),
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(forces**2))),
        "force_mae_meV_per_A": 1000 * float(np.mean(np.abs(forces))),
        "force_rmse_by_residue_meV_per_A": {
            residue: 1000 * float(np.sqrt(np.mean(np.concatenate(e) ** 2)))
            for residue, e in sorted(per_residue.items())
        },
    }


def make_reference(recipe: ReferenceRecipe, work: Path, out: Path, overwrite: bool) -> dict:
    """Run all steps; returns the report written beside the weights."""
    from boostmd.forcefields.mace_io import save_mace

    work.mkdir(parents=True, exist_ok=True)
    weights, report_path = out / f"{NAME}.pt", out / f"{NAME}.json"
    if weights.exists() and not overwrite:
        raise FileExistsError(f"{weights} exists; pass --overwrite to replace it")
    _, test_path = split(recipe, work)
    command = recipe.train_command(work)
    if shutil.which(command[0]) is None:
        raise RuntimeError("mace_run_train not found: pip install mace-torch")
    logger.info("training: %s", " ".join(command))
    subprocess.run(command, cwd=work, check=True)
    # Our own training run wrote this pickled module moments ago: we trust it.
    model = torch.load(work / f"{NAME}.model", map_location="cpu", weights_only=False)
    model = model.float().eval()
    report = {
        "recipe": asdict(recipe),
        "command": " ".join(command),
        "test_vs_gfn2_xtb": evaluate(model, read(test_path, index=":")),
    }
    report["recipe"]["data"]["out"] = str(recipe.data.out)
    save_mace(model, weights, overwrite=overwrite)
    report_path.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    """Command line: make (or finish making) the reference model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("data/reference"))
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--epochs", type=int, default=ReferenceRecipe.epochs)
    parser.add_argument("--max-train", type=int, default=ReferenceRecipe.max_train)
    parser.add_argument("--overwrite", action="store_true", help="replace shipped weights")
    args = parser.parse_args(argv)
    start_command(logging.INFO)
    recipe = ReferenceRecipe(
        epochs=args.epochs, max_train=args.max_train, data=XTBDataConfig(out=args.work / "xtb")
    )
    report = make_reference(recipe, args.work, args.out, args.overwrite)
    print(json.dumps(report["test_vs_gfn2_xtb"]))


if __name__ == "__main__":
    main()
