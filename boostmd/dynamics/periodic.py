"""Periodic cells: displacements that do not see an atom wrapped back into the cell."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import complete_cell
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

__all__ = [
    "MAX_FRAME_STRAIN",
    "WRAP_ROUNDING",
    "cell_strain",
    "minimum_image",
    "voigt_stress",
    "whole_molecules",
]

# Positions that differ by whole cell vectors to within this (Å) were wrapped, not moved:
# atoms.wrap() goes through fractional coordinates and back, which rounds.
WRAP_ROUNDING = 1e-9

# A window's frame follows its cell through strains up to this (largest component of the
# strain from the frame's cell); a barostat's step is about 1e-5 of it.
MAX_FRAME_STRAIN = 0.01


def minimum_image(displacements: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Return ``displacements`` with whole cell vectors removed along the periodic axes.

    Each row becomes the image of itself whose fractional coordinates along the periodic
    axes lie in ``[-0.5, 0.5]``. For a displacement smaller than half of every cell height
    (an MD step's, or a window's: a fraction of an ångström) that is the displacement
    itself, however far an atom was wrapped, by ``atoms.wrap()`` or an integrator, in
    between.

    Parameters
    ----------
    displacements
        Shape ``(n, 3)``, Å.
    cell
        The cell vectors as rows, shape ``(3, 3)``.
    pbc
        Periodicity along each cell vector, shape ``(3,)``.

    Examples
    --------
    >>> minimum_image(np.array([[9.9, 0.0, 0.0]]), 10 * np.eye(3), np.array([True] * 3))
    array([[-0.1,  0. ,  0. ]])
    """
    periodic = np.asarray(pbc, dtype=bool)
    if not periodic.any():
        return displacements
    cell = complete_cell(np.asarray(cell, dtype=float))  # a unit vector for a missing one
    fractional = np.linalg.solve(cell.T, displacements.T).T
    whole = np.where(periodic, np.round(fractional), 0.0)
    return displacements - whole @ cell


def voigt_stress(stress) -> np.ndarray:
    """Return a ``(3, 3)`` stress (numpy or torch, eV/Å³) as ASE's six Voigt components."""
    if hasattr(stress, "detach"):
        stress = stress.detach().cpu().numpy()
    full = np.asarray(stress, dtype=np.float64).reshape(3, 3)
    return full_3x3_to_voigt_6_stress(0.5 * (full + full.T))


def cell_strain(reference_cell: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Return the small strain that takes ``reference_cell`` to ``cell``, shape (3, 3).

    Cells are rows of cell vectors; ``cell = reference_cell (1 + strain)^T``; the
    symmetric part is returned.
    """
    deformation = np.linalg.solve(np.asarray(reference_cell, float), np.asarray(cell, float))
    gradient = deformation.T - np.eye(3)
    return 0.5 * (gradient + gradient.T)


def whole_molecules(atoms: Atoms, multiplier: float = 1.15) -> Atoms:
    """Return a copy of ``atoms`` with every molecule whole: no bond across a cell face.

    Structure files from periodic MD often hold wrapped positions, so a molecule that
    straddles a face has atoms on both sides. Bond lengths, angles, the collapse check
    and the bond-stretch labels take raw position differences (right along an unwrapped
    MD trajectory), so a split molecule must first be made whole: each molecule's atoms
    are moved by whole cell vectors to the image bonded to their neighbours (bonds from
    covalent radii times ``multiplier``, as
    :class:`~boostmd.dynamics.stability.BondTopology`'s). Atoms of whole molecules keep
    their positions exactly; a structure without periodic axes is returned as it is.
    """
    whole = atoms.copy()
    if not atoms.pbc.any():
        return whole
    i, j, shifts = neighbor_list("ijS", atoms, natural_cutoffs(atoms, mult=multiplier))
    offsets = np.zeros((len(atoms), 3), dtype=int)
    placed = np.zeros(len(atoms), dtype=bool)
    neighbours = np.split(
        np.stack([j, *shifts.T], axis=1), np.searchsorted(i, np.arange(1, len(atoms)))
    )
    for root in range(len(atoms)):
        if placed[root]:
            continue
        placed[root] = True
        stack = [root]
        while stack:
            atom = stack.pop()
            for other, *shift in neighbours[atom]:
                if not placed[other]:
                    placed[other] = True
                    offsets[other] = offsets[atom] + np.asarray(shift)
                    stack.append(other)
    moved = offsets.any(axis=1)
    whole.positions[moved] += offsets[moved] @ atoms.cell.array
    return whole
