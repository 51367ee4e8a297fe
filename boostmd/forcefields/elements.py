"""Mapping atomic numbers to a model's element indices, with errors that name elements."""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

__all__ = ["element_indices"]


def element_indices(numbers, atomic_numbers: tuple[int, ...], owner: str) -> np.ndarray:
    """Index of each atom's element in ``atomic_numbers``.

    Parameters
    ----------
    numbers
        Atomic numbers (array-like or tensor), shape ``(n,)``.
    atomic_numbers
        The elements a model knows, in its order.
    owner
        Who is asking, for the error message (``"the reference model"``).

    Raises
    ------
    ValueError
        Naming every element ``owner`` does not know and the ones it does.
    """
    numbers = np.asarray(numbers.cpu() if hasattr(numbers, "cpu") else numbers, dtype=np.int64)
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[list(atomic_numbers)] = np.arange(len(atomic_numbers))
    valid = (numbers > 0) & (numbers < 119)
    index = np.where(valid, lookup[np.clip(numbers, 0, 118)], -1)
    if (index < 0).any():
        unknown = sorted(
            {chemical_symbols[z] if 0 < z < 119 else str(z) for z in numbers[index < 0]}
        )
        known = ", ".join(chemical_symbols[z] for z in atomic_numbers)
        raise ValueError(
            f"{owner} does not know element(s) {', '.join(unknown)}; it was made for "
            f"{known}. Use a model trained on these elements"
        )
    return index
