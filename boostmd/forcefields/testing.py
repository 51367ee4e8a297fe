"""Helpers for tests and benchmarks: small random-weight MACE models built in-process.

A random MACE is a real MACE (same code path, same cost per width) whose weights were not
trained; it is what the tests and the cost benchmark run against, so they need no files.
"""

from __future__ import annotations

import numpy as np
import torch

from boostmd.forcefields.mace_import import import_mace

__all__ = ["build_mace"]

# H, C, N, O, S: the elements of capped dipeptides.
PEPTIDE_ELEMENTS = (1, 6, 7, 8, 16)


def build_mace(
    hidden_irreps: str = "16x0e+16x1o",
    num_interactions: int = 2,
    r_max: float = 5.0,
    correlation: int = 3,
    max_ell: int = 3,
    atomic_numbers: tuple[int, ...] = PEPTIDE_ELEMENTS,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> torch.nn.Module:
    """Build a ``ScaleShiftMACE`` with random weights.

    Parameters
    ----------
    hidden_irreps
        Hidden features, e.g. ``"96x0e+96x1o"`` for a MACE-OFF-medium-like width.
    num_interactions
        Number of interaction layers.
    r_max
        Cutoff radius in Å.
    correlation
        Body order of the product basis.
    max_ell
        Highest spherical harmonic of the edge attributes.
    atomic_numbers
        Elements the model knows.
    dtype
        Parameter dtype.
    seed
        Seed of the weight initialisation.

    Returns
    -------
    torch.nn.Module
        The model, in eval mode.
    """
    mace = import_mace()
    from e3nn import o3

    modules = mace.modules
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = modules.ScaleShiftMACE(
            r_max=r_max,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=max_ell,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=num_interactions,
            num_elements=len(atomic_numbers),
            hidden_irreps=o3.Irreps(hidden_irreps),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.linspace(-10.0, -2.0, len(atomic_numbers)),
            avg_num_neighbors=12.0,
            atomic_numbers=list(atomic_numbers),
            correlation=correlation,
            gate=torch.nn.functional.silu,
            atomic_inter_scale=1.0,
            atomic_inter_shift=0.0,
        )
    return model.to(dtype).eval()
