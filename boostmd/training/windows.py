"""On-policy training data: single BoostMD windows, started from reference states.

A surrogate trained on reference trajectories only is tested, in BoostMD, on the
configurations its *own* forces lead to. Where it is too soft the window runs further than
the reference would, and the refresh error grows (DAgger's distribution shift). These
windows show the surrogate exactly that situation and nothing else:

1. take a frame of a reference run (so the start is a Boltzmann sample of the reference),
2. draw Maxwell-Boltzmann momenta at the run's temperature,
3. run ``window`` Langevin steps with the surrogate alone, framed at that start,
4. label every frame with the reference (energy, forces; node features at the start).

Unlike long on-policy runs, a window never compounds earlier errors: a window that heats
cannot hand a hot start to the next one, so hot outliers do not dominate the training loss.

A window file has the layout of a reference run (:mod:`boostmd.training.data`), with the windows
one after the other: reference frames every ``window + 1`` frames, and ``window`` in the
``.npz`` so that training never pairs frames of different windows.

    python -m boostmd.data --reference REFERENCE.pt --surrogate runs/s/surrogate.pt \
        --windows-from data/pairs --out data/windows
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from tqdm import tqdm

from boostmd.dynamics.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.dynamics.md import langevin, thermal_momenta
from boostmd.dynamics.stability import BondTopology, first_collapse
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import Surrogate
from boostmd.training.run_files import labelled_frame, write_run

__all__ = ["WindowConfig", "generate_windows", "run_temperature"]

logger = logging.getLogger(__name__)

_TEMPERATURE = re.compile(r"_(\d+(?:\.\d+)?)K$")


@dataclass
class WindowConfig:
    """Recipe of on-policy windows.

    Parameters
    ----------
    window
        Surrogate steps per window (cover the interval you run BoostMD at, plus a margin).
    every
        Start a window at every ``every``-th frame of each source run.
    timestep_fs, friction_per_ps
        The Langevin dynamics BoostMD will run.
    seed
        Seed of the momenta and the random forces.
    """

    window: int = 12
    every: int = 12
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    seed: int = 0


def run_temperature(path: Path) -> float:
    """Temperature of a run from its name (``ALA_300K.extxyz`` -> 300.0)."""
    match = _TEMPERATURE.search(Path(path).stem)
    if match is None:
        raise ValueError(
            f"cannot tell the temperature of {path}: run files are named NAME_<T>K.extxyz "
            "(as python -m boostmd.data writes them)"
        )
    return float(match.group(1))


def _label(calculator: ReferenceCalculator, atoms: Atoms) -> Atoms:
    calculator.calculate(atoms, ["energy", "forces"])
    return labelled_frame(atoms, calculator.results)


def _one_window(
    start: Atoms,
    temperature: float,
    booster: BoostMDCalculator,
    labeller: ReferenceCalculator,
    config: WindowConfig,
    rng: np.random.Generator,
) -> tuple[list[Atoms], np.ndarray] | None:
    """Frames ``0..window`` of one surrogate window and the start's node features."""
    atoms = Atoms(start.numbers, start.positions, cell=start.cell, pbc=start.pbc)
    atoms.calc = booster
    booster.reset()
    thermal_momenta(atoms, temperature, rng)
    dynamics = langevin(atoms, temperature, config.timestep_fs, config.friction_per_ps, rng)
    atoms.get_forces()  # the reference call that frames the window labels its start
    frames = [labelled_frame(atoms, booster.results)]
    features = booster.results["node_features"].copy()
    for _ in range(config.window):
        dynamics.run(1)
        frames.append(_label(labeller, atoms))
    positions = np.stack([f.positions for f in frames])
    if first_collapse(positions, BondTopology.of(atoms)) is not None:
        return None
    return frames, features


def generate_windows(
    reference: MACEReference,
    surrogate: Surrogate,
    sources: list[Path],
    out: Path,
    config: WindowConfig,
) -> list[Path]:
    """Write one window file per source run (resumable: finished files are kept).

    Parameters
    ----------
    reference
        The reference that labels every frame (and made the source runs).
    surrogate
        The surrogate that drives the windows.
    sources
        Reference runs (``.extxyz`` from :mod:`boostmd.training.data`) whose frames start windows.
    out
        Directory of the window files, named like their sources.
    config
        The recipe.

    Returns
    -------
    list of Path
        The ``.extxyz`` file of each source's windows.
    """
    out.mkdir(parents=True, exist_ok=True)
    # interval beyond the window: the surrogate alone drives every step after the start
    booster = BoostMDCalculator(reference, surrogate, interval=config.window + 1, frame="start")
    labeller = ReferenceCalculator(reference)
    paths = []
    for source in tqdm(sources, desc="window files"):
        path = out / Path(source).name
        paths.append(path)
        if path.exists() and path.with_suffix(".npz").exists():
            continue
        temperature = run_temperature(source)
        rng = np.random.default_rng(zlib.crc32(f"{path.stem}-{config.seed}".encode()))
        starts = read(source, index=f"::{config.every}")
        frames, features, dropped = [], [], 0
        for start in tqdm(starts, desc=path.stem, leave=False):
            result = _one_window(start, temperature, booster, labeller, config, rng)
            if result is None:  # a broken molecule is not a configuration worth learning
                dropped += 1
                continue
            frames.extend(result[0])
            features.append(result[1])
        if not features:
            raise RuntimeError(
                f"every window from {source} collapsed: this surrogate breaks molecules "
                "within a window; train it further on reference runs before on-policy windows"
            )
        if dropped:
            logger.warning(
                "%s: %d of %d windows collapsed, left out", path.stem, dropped, len(starts)
            )
        steps = np.arange(len(features)) * (config.window + 1)
        write_run(path, frames, steps, np.asarray(features, np.float32), reference, config.window)
    return paths
