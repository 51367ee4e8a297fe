"""Periodic cells: displacements that do not see an atom wrapped back into the cell."""

from __future__ import annotations

import numpy as np
from ase.geometry import complete_cell

__all__ = ["WRAP_ROUNDING", "minimum_image"]

# Positions that differ by whole cell vectors to within this (Å) were wrapped, not moved:
# atoms.wrap() goes through fractional coordinates and back, which rounds.
WRAP_ROUNDING = 1e-9


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
