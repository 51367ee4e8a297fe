"""Periodic boxes of liquid water, alone or around a solute, as ASE ``Atoms``.

Molecules are inserted one at a time at random positions and orientations, each kept only
if it is clear of everything placed before (minimum image in the cubic cell): oxygens at
least ``MIN_OO`` apart and from the solute's atoms, any two atoms of different molecules at
least ``MIN_CONTACT`` apart. The result is a packed but not equilibrated liquid: run a
thermostat over it before sampling (a few hundred fs at 0.5 fs).

The cell's edge holds the given density for the water and the solute together (the solute
counted at the water's density, which is close for peptides).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation

__all__ = ["MIN_CONTACT", "MIN_OO", "density", "solvated", "water_box", "water_count"]

# Mass of one water (amu) and amu per Å^3 in one g/cm^3.
WATER_MASS = 18.015
AMU_PER_A3 = 0.602214
OH_BOND, HOH_ANGLE_DEG = 0.9572, 104.52
MIN_OO, MIN_CONTACT = 2.5, 1.6
_MAX_TRIES = 200_000


def _water_template() -> np.ndarray:
    half = np.deg2rad(HOH_ANGLE_DEG) / 2
    xyz = np.array(
        [
            [0.0, 0.0, 0.0],
            [OH_BOND * np.sin(half), 0.0, OH_BOND * np.cos(half)],
            [-OH_BOND * np.sin(half), 0.0, OH_BOND * np.cos(half)],
        ]
    )
    return xyz - xyz.mean(axis=0)


def _edge(mass_amu: float, density: float) -> float:
    if not density > 0:
        raise ValueError(f"density must be positive (g/cm^3), got {density}")
    return float((mass_amu / (density * AMU_PER_A3)) ** (1 / 3))


def _distances(points: np.ndarray, others: np.ndarray, edge: float) -> np.ndarray:
    """Minimum-image distances (points x others) in a cubic cell of side ``edge``."""
    delta = points[:, None, :] - others[None, :, :]
    delta -= edge * np.round(delta / edge)
    return np.linalg.norm(delta, axis=-1)


def _insert_waters(solute: Atoms, waters: int, edge: float, rng: np.random.Generator) -> np.ndarray:
    """Positions (3 * waters, 3) of inserted waters around ``solute``'s positions."""
    template = _water_template()
    oxygens = np.empty((0, 3))
    atoms = np.asarray(solute.positions, dtype=float).reshape(-1, 3)
    placed: list[np.ndarray] = []
    tries = 0
    while len(placed) < waters:
        tries += 1
        if tries > _MAX_TRIES:
            raise RuntimeError(
                f"could place only {len(placed)} of {waters} waters in a {edge:.2f} Å cell "
                "by random insertion; lower the density or the number of waters"
            )
        rotation = Rotation.random(random_state=rng).as_matrix()
        molecule = rng.uniform(0, edge, 3) + template @ rotation.T
        if len(oxygens) and _distances(molecule[:1], oxygens, edge).min() < MIN_OO:
            continue
        if len(atoms) and _distances(molecule, atoms, edge).min() < MIN_CONTACT:
            continue
        if len(solute) and _distances(molecule[:1], solute.positions, edge).min() < MIN_OO:
            continue
        placed.append(molecule)
        oxygens = np.vstack([oxygens, molecule[:1]])
        atoms = np.vstack([atoms, molecule])
    return np.concatenate(placed) if placed else np.empty((0, 3))


def density(atoms: Atoms) -> float:
    """Density of a cell's contents in g/cm^3."""
    return float(atoms.get_masses().sum() / atoms.get_volume() / AMU_PER_A3)


def water_count(solute: Atoms, edge: float, density: float = 1.0) -> int:
    """Waters that fill a cubic cell of side ``edge`` around ``solute`` at ``density``."""
    total = density * AMU_PER_A3 * edge**3
    return max(0, round((total - float(solute.get_masses().sum())) / WATER_MASS))


def solvated(solute: Atoms, waters: int, density: float = 1.0, seed: int = 0) -> Atoms:
    """Return ``solute`` centred in a periodic cubic cell with ``waters`` waters.

    Parameters
    ----------
    solute
        The molecule (its own cell and periodicity are ignored); may be empty.
    waters
        Number of water molecules.
    density
        Density of the whole cell in g/cm^3 (the edge follows from the total mass).
    seed
        Seed of the positions and orientations.

    Returns
    -------
    ase.Atoms
        Solute atoms first, then O, H, H per water (each molecule whole, so a hydrogen may
        lie just outside the cell); ``pbc=True``.
    """
    if waters < 0:
        raise ValueError(f"waters must be >= 0, got {waters}")
    rng = np.random.default_rng(seed)
    mass = float(solute.get_masses().sum()) + waters * WATER_MASS
    edge = _edge(mass, density)
    centred = Atoms(solute.numbers, solute.positions)
    if len(centred):
        centred.positions += edge / 2 - centred.positions.mean(axis=0)
    water_positions = _insert_waters(centred, waters, edge, rng)
    # Molecules stay whole (an H may stick out of the cell): bonds need no minimum image.
    system = centred + Atoms("OH2" * waters, positions=water_positions)
    system.set_cell([edge] * 3)
    system.pbc = True
    return system


def water_box(waters: int, density: float = 1.0, seed: int = 0) -> Atoms:
    """Return a periodic cubic box of ``waters`` water molecules at ``density`` g/cm^3."""
    return solvated(Atoms(), waters, density, seed)
