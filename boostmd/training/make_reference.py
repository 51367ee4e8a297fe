"""Make a shipped reference MACE from GFN2-xTB data: capped dipeptides, or water.

Two recipes (``--model``): ``dipeptides``, capped dipeptides in vacuum
(:mod:`boostmd.training.xtb_data`), and ``water``, periodic liquid water and dipeptides
solvated in it (:mod:`boostmd.training.water_data`), a smaller and cheaper model trained on
stresses too, so that barostats run with it.

Steps, each resumable: (1) xTB data; (2) a seeded split
into training and held-out test configurations; (3) training with mace-torch's own
``mace_run_train`` (restarts from its latest checkpoint); (4) errors against xTB on the
held-out configurations; (5) export as safe weights (:mod:`boostmd.forcefields.mace_io`) plus a JSON
report with the recipe and the errors.

    python -m boostmd.make_reference --work data/reference --out boostmd/models
    python -m boostmd.make_reference --model water --work data/water --out boostmd/models
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
from ase import units
from ase.io import read, write

from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.pretrained import MODELS_DIR
from boostmd.training import water_data, xtb_data
from boostmd.training.water_data import SolventDataConfig
from boostmd.training.xtb_data import ENERGY_KEY, FORCES_KEY, STRESS_KEY, XTBDataConfig

__all__ = [
    "RECIPES",
    "ReferenceRecipe",
    "dipeptides_recipe",
    "evaluate",
    "make_reference",
    "water_recipe",
]

logger = logging.getLogger(__name__)

NAME = "dipeptides-reference"


@dataclass
class ReferenceRecipe:
    """Everything that determines a shipped reference model (defaults: the dipeptides')."""

    data: XTBDataConfig | SolventDataConfig = field(default_factory=XTBDataConfig)
    name: str = NAME
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
    stress_weight: float = 0.0
    seed: int = 1

    def train_command(self, work: Path) -> list[str]:
        """Return the ``mace_run_train`` command line (run inside ``work``)."""
        return [
            "mace_run_train",
            "--name",
            self.name,
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
            *self._stress_arguments(),
        ]

    def _stress_arguments(self) -> list[str]:
        if not self.stress_weight:
            return []
        return [
            "--loss",
            "stress",
            "--compute_stress",
            "True",
            "--stress_key",
            STRESS_KEY,
            "--stress_weight",
            str(self.stress_weight),
        ]


def water_recipe(work: Path = Path("data/water")) -> ReferenceRecipe:
    """Return the water reference's recipe: liquid water and solvated dipeptides, with stresses.

    32 + 32 channels and a 4.5 Å cutoff (the dipeptide reference has 96 + 96 and 5 Å), so
    that a 64-water box runs about three steps a second on one core of this CPU; stresses
    in the loss (weight 1000 on (eV/Å^3)^2, which makes their term comparable to the
    forces') so that the model's pressure, and a barostat's density, come from xTB.
    """
    return ReferenceRecipe(
        data=SolventDataConfig(out=work / "xtb"),
        name="water-reference",
        hidden_irreps="32x0e+32x1o",
        r_max=4.5,
        epochs=25,
        stress_weight=1000.0,
    )


def dipeptides_recipe(work: Path = Path("data/reference")) -> ReferenceRecipe:
    """Return the dipeptide reference's recipe (the shipped ``dipeptides-reference``)."""
    return ReferenceRecipe(data=XTBDataConfig(out=work / "xtb"))


# --model name -> (recipe of a work folder, default work folder)
RECIPES = {
    "dipeptides": (dipeptides_recipe, Path("data/reference")),
    "water": (water_recipe, Path("data/water")),
}


def _generate(data: XTBDataConfig | SolventDataConfig) -> list[Path]:
    if isinstance(data, SolventDataConfig):
        return water_data.generate(data)
    return xtb_data.generate(data)


def split(recipe: ReferenceRecipe, work: Path) -> tuple[Path, Path]:
    """Write ``train.extxyz`` and ``test.extxyz`` (held-out configurations) once."""
    train_path, test_path = work / "train.extxyz", work / "test.extxyz"
    if train_path.exists() and test_path.exists():
        return train_path, test_path
    files = _generate(recipe.data)
    frames = [frame for path in files for frame in read(path, index=":")]
    order = np.random.default_rng(recipe.split_seed).permutation(len(frames))
    n_test = round(recipe.test_fraction * len(frames))
    test = [frames[i] for i in order[:n_test]]
    train = [frames[i] for i in order[n_test : n_test + recipe.max_train]]
    write(test_path, test, format="extxyz")
    write(train_path, train, format="extxyz")
    logger.info("split %d frames: %d train, %d test", len(frames), len(train), len(test))
    return train_path, test_path


def _stress_errors(stress_errors: list[np.ndarray]) -> dict:
    """RMSE of the stress components and of the pressure, in GPa (none: no entry)."""
    if not stress_errors:
        return {}
    errors = np.asarray(stress_errors) / units.GPa
    pressure = -np.trace(errors, axis1=1, axis2=2) / 3
    return {
        "stress_rmse_GPa": float(np.sqrt(np.mean(errors**2))),
        "pressure_rmse_GPa": float(np.sqrt(np.mean(pressure**2))),
    }


def _rms_about_group_means(groups: dict[str, list[float]]) -> float:
    deviations = [np.asarray(v) - np.mean(v) for v in groups.values()]
    return float(np.sqrt(np.mean(np.concatenate(deviations) ** 2)))


def evaluate(model: torch.nn.Module, frames) -> dict:
    """Energy, force and (for bulk cells) stress errors of ``model`` against xTB labels."""
    from boostmd.forcefields.reference import MACEReference

    reference = MACEReference(model)
    energy_errors, force_errors, stress_errors, per_residue = [], [], [], {}
    energy_by_system: dict[str, list[float]] = {}
    for frame in frames:
        result = reference(frame)
        energy_errors.append((float(result.energy) - frame.info[ENERGY_KEY]) / len(frame))
        energy_by_system.setdefault(frame.info.get("residue", "?"), []).append(energy_errors[-1])
        error = result.forces.double().numpy() - frame.arrays[FORCES_KEY]
        force_errors.append(error.ravel())
        per_residue.setdefault(frame.info.get("residue", "?"), []).append(error.ravel())
        if STRESS_KEY in frame.info and result.stress is not None:
            stress = result.stress.double().numpy().reshape(3, 3)
            stress_errors.append(stress - np.reshape(frame.info[STRESS_KEY], (3, 3)))
    forces = np.concatenate(force_errors)
    energies = np.asarray(energy_errors)
    energies -= energies.mean()  # report the error beyond a constant offset too
    return {
        **_stress_errors(stress_errors),
        "configurations": len(frames),
        "energy_rmse_meV_per_atom": 1000 * float(np.sqrt(np.mean(np.square(energy_errors)))),
        "energy_rmse_meV_per_atom_offset_removed": 1000 * float(np.sqrt(np.mean(energies**2))),
        # each system (residue, or water) its own offset: what MD of one system feels
        "energy_rmse_meV_per_atom_offset_removed_per_system": 1000
        * _rms_about_group_means(energy_by_system),
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
    weights, report_path = out / f"{recipe.name}.pt", out / f"{recipe.name}.json"
    if weights.exists() and not overwrite:
        raise FileExistsError(f"{weights} exists; pass --overwrite to replace it")
    _, test_path = split(recipe, work)
    command = recipe.train_command(work)
    if shutil.which(command[0]) is None:
        raise RuntimeError("mace_run_train not found: pip install mace-torch")
    logger.info("training: %s", " ".join(command))
    subprocess.run(command, cwd=work, check=True)
    # Our own training run wrote this pickled module moments ago: we trust it.
    model = torch.load(work / f"{recipe.name}.model", map_location="cpu", weights_only=False)
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
    parser.add_argument("--model", choices=sorted(RECIPES), default="dipeptides")
    parser.add_argument(
        "--work", type=Path, default=None, help="data/reference (dipeptides), data/water (water)"
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--max-train", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--overwrite", action="store_true", help="replace shipped weights")
    args = parser.parse_args(argv)
    start_command(logging.INFO)
    make_recipe, default_work = RECIPES[args.model]
    work = args.work or default_work
    recipe = make_recipe(work)
    recipe.epochs = args.epochs or recipe.epochs
    recipe.max_train = args.max_train or recipe.max_train
    report = make_reference(recipe, work, args.out, args.overwrite)
    print(json.dumps(report["test_vs_gfn2_xtb"]))


if __name__ == "__main__":
    main()
