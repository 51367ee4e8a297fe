"""Periodic cells: displacements that do not see an atom wrapped back into the cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import complete_cell
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components

__all__ = [
    "MAX_FRAME_STRAIN",
    "WRAP_ROUNDING",
    "Molecules",
    "cell_strain",
    "minimum_image",
    "voigt_stress",
    "whole_molecules",
]

BOND_MULTIPLIER = 1.15  # bonds: below this times the sum of the covalent radii

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


@dataclass(frozen=True)
class Molecules:
    """The covalently bonded components of a system, to make whole and move as rigid units.

    ``labels[i]``: atom ``i``'s molecule; ``levels``: the atoms of a breadth-first
    spanning tree of each molecule's bonds, level by level after the roots, with
    ``parents`` their parents in it, along which a molecule split across periodic faces
    is made whole.
    """

    count: int
    labels: np.ndarray
    levels: tuple[np.ndarray, ...]
    parents: np.ndarray
    masses: np.ndarray

    @classmethod
    def of(cls, atoms: Atoms, multiplier: float = BOND_MULTIPLIER) -> Molecules:
        """Find the molecules of ``atoms``: bonds below ``multiplier`` times the covalent radii."""
        n = len(atoms)
        i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=multiplier))
        graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
        count, labels = connected_components(graph, directed=False)
        parents, depth = np.arange(n), np.zeros(n, dtype=int)
        for root in np.unique(labels, return_index=True)[1]:
            visited, predecessors = breadth_first_order(graph, root, directed=False)
            for atom in visited[1:]:  # breadth-first: a parent's depth is known first
                parents[atom] = predecessors[atom]
                depth[atom] = depth[parents[atom]] + 1
        levels = tuple(np.flatnonzero(depth == d) for d in range(1, depth.max(initial=0) + 1))
        return cls(count, labels, levels, parents, atoms.get_masses())

    def whole(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
        """Return the positions with each molecule in one image (its root atom's).

        Atoms move by whole cell vectors only, so those of whole molecules keep their
        positions exactly.
        """
        cell = complete_cell(np.asarray(cell, dtype=float))
        periodic = np.asarray(pbc, dtype=bool)
        images = np.zeros(positions.shape)  # each atom's shift, in cell vectors
        for level in self.levels:
            parents = self.parents[level]
            bond = positions[level] - positions[parents]
            fractional = np.linalg.solve(cell.T, bond.T).T
            images[level] = images[parents] - np.where(periodic, np.round(fractional), 0.0)
        moved = images.any(axis=1)
        whole = positions.copy()
        whole[moved] += images[moved] @ cell
        return whole

    def centres(self, whole: np.ndarray) -> np.ndarray:
        """Return each molecule's centre of mass from :meth:`whole` positions, (count, 3)."""
        weighted = np.zeros((self.count, 3))
        np.add.at(weighted, self.labels, self.masses[:, None] * whole)
        return weighted / np.bincount(self.labels, self.masses, self.count)[:, None]

    def scaled(self, atoms: Atoms, factor: float) -> tuple[np.ndarray, np.ndarray]:
        """Return positions and cell with the cell and the molecules' centres times ``factor``.

        Each atom moves with its molecule's centre taken in the atom's own image, so
        atoms of a molecule split across faces stay bonded in the scaled cell.
        """
        positions, cell = atoms.positions, atoms.cell.array
        whole = self.whole(positions, cell, atoms.pbc)
        centres = self.centres(whole)[self.labels] + (positions - whole)
        return positions + (factor - 1) * centres, factor * cell


def whole_molecules(atoms: Atoms, multiplier: float = BOND_MULTIPLIER) -> Atoms:
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
    molecules = Molecules.of(atoms, multiplier)
    whole.positions = molecules.whole(atoms.positions, atoms.cell.array, atoms.pbc)
    return whole
