"""Backbone dihedrals (phi, psi) of capped dipeptides, found from the bond topology."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import natural_cutoffs, neighbor_list

__all__ = ["backbone_dihedrals", "dihedral_angles"]


def _bonds(atoms: Atoms) -> list[set[int]]:
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.15))
    neighbours: list[set[int]] = [set() for _ in range(len(atoms))]
    for a, b in zip(i, j):
        neighbours[a].add(int(b))
    return neighbours


def backbone_dihedrals(atoms: Atoms) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Atom indices of phi (C'-N-CA-C) and psi (N-CA-C-N') of a capped dipeptide.

    Works from covalent bonds alone (no residue names): carbonyl carbons are three-fold
    bonded carbons with a terminal oxygen, amide nitrogens are bonded to one, and the
    alpha carbon is the four-fold bonded carbon between an amide N and a carbonyl C.

    Raises
    ------
    ValueError
        If the structure does not have exactly one such residue.
    """
    symbols = atoms.get_chemical_symbols()
    bonds = _bonds(atoms)
    carbonyl = {
        a
        for a, s in enumerate(symbols)
        if s == "C"
        and len(bonds[a]) == 3
        and any(symbols[o] == "O" and len(bonds[o]) == 1 for o in bonds[a])
    }
    amide = {a for a, s in enumerate(symbols) if s == "N" and bonds[a] & carbonyl}
    alphas = [
        a
        for a, s in enumerate(symbols)
        if s == "C" and len(bonds[a]) == 4 and bonds[a] & amide and bonds[a] & carbonyl
    ]
    if len(alphas) != 1:
        raise ValueError(
            f"expected one amino-acid residue between two amide groups (a capped "
            f"dipeptide), found {len(alphas)} alpha carbons; pass phi/psi atom indices "
            "explicitly for other molecules"
        )
    alpha = alphas[0]
    (nitrogen,) = bonds[alpha] & amide
    (carbon,) = bonds[alpha] & carbonyl
    previous = next(iter((bonds[nitrogen] & carbonyl) - {carbon}))
    following = next(iter(bonds[carbon] & amide - {nitrogen}))
    return (previous, nitrogen, alpha, carbon), (nitrogen, alpha, carbon, following)


def dihedral_angles(positions: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    """Dihedral angles in degrees, in (-180, 180], for positions of shape (T, n, 3)."""
    p = np.asarray(positions)[..., list(indices), :]
    b0, b1, b2 = (
        p[..., 0, :] - p[..., 1, :],
        p[..., 2, :] - p[..., 1, :],
        p[..., 3, :] - p[..., 2, :],
    )
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    x = (v * w).sum(-1)
    y = (np.cross(b1, v) * w).sum(-1)
    return np.degrees(np.arctan2(y, x))
