r"""A learned many-body energy of the current geometry, conditioned on cached features.

Each atom ``i`` gets an energy :math:`\epsilon_i` from its neighbours' current positions:

.. math::

    A_{i,c,lm} = \frac{1}{\nu} \sum_{e = i \to j} R_{e,c}(r_e)\, Y_{lm}(\hat r_e),
    \qquad
    \epsilon_i = \mathrm{MLP}\Big(A_{i,c,00},\ \textstyle\sum_m A_{i,c,1m}^2,\
                 \sum_m A_{i,c,2m}^2;\ h_i\Big)

``R_{e,c}`` are radial functions whose weights come from the reference node features
``h`` of both atoms of the edge, ``Y_lm`` real spherical harmonics up to ``l = 2`` and
``nu`` a typical neighbour count. The sums over ``m`` are rotation invariant, so
:math:`\epsilon_i` depends on bond angles (three-body terms) as well as on distances; the
two-hop latent strains of :mod:`boostmd.forcefields.surrogate` see angles only through distances.

Everything that depends on ``h`` (radial weights per edge, a context vector per atom) is
computed once per reference frame by :meth:`ManyBodyTerm.prepare`; a step costs one
scatter over the edges and a small per-atom network. The output is bounded, because the
radial functions, the harmonics and so every input of the network are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ManyBodyTerm", "real_spherical_harmonics"]


def real_spherical_harmonics(unit: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics ``l = 0, 1, 2`` of unit vectors, shape ``(n, 3) -> (n, 9)``.

    Each ``l`` block transforms under rotations by an orthogonal matrix (all nine have the
    same normalisation, ``Y_00 = 1``), so ``sum_m Y_lm(u) Y_lm(v) = P_l(u . v)``.
    """
    x, y, z = unit[:, 0], unit[:, 1], unit[:, 2]
    sqrt3 = math.sqrt(3.0)  # a local: TorchScript compiles this (surrogate_step)
    return torch.stack(
        [
            torch.ones_like(x),
            x,
            y,
            z,
            sqrt3 * x * y,
            sqrt3 * y * z,
            (3 * z * z - 1) / 2,
            sqrt3 * x * z,
            sqrt3 / 2 * (x * x - y * y),
        ],
        dim=-1,
    )


class ManyBodyTerm(nn.Module):
    """Per-atom energies from the current local geometry and the reference node features.

    Parameters
    ----------
    hidden_dim
        Width of the node features it reads (the surrogate's hidden node features) and
        of its own networks.
    channels
        Radial channels per edge.
    num_radial
        Radial basis functions the caller evaluates.
    neighbours
        Typical number of neighbours ``nu``; the sums are divided by it.
    """

    def __init__(self, hidden_dim: int, channels: int, num_radial: int, neighbours: float) -> None:
        super().__init__()
        self.channels, self.num_radial, self.neighbours = channels, num_radial, neighbours
        self.edge_sender = nn.Linear(hidden_dim, hidden_dim)
        self.edge_receiver = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.radial_weights = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, num_radial * channels))
        self.context = nn.Linear(hidden_dim, hidden_dim)
        self.invariants_in = nn.Linear(3 * channels, hidden_dim, bias=False)
        self.readout = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 1)
        )
        # Start switched off: an added term leaves a trained surrogate unchanged.
        nn.init.zeros_(self.readout[-1].weight)
        nn.init.zeros_(self.readout[-1].bias)

    def prepare(
        self, hidden: torch.Tensor, edge_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial weights per edge ``(n_edges, num_radial, channels)``, context per atom."""
        src, dst = edge_index
        edge_hidden = self.edge_sender(hidden)[src] + self.edge_receiver(hidden)[dst]
        weights = self.radial_weights(edge_hidden).reshape(-1, self.num_radial, self.channels)
        return weights, self.context(hidden)

    def energies(
        self,
        radial_weights: torch.Tensor,
        context: torch.Tensor,
        radial_basis: torch.Tensor,
        vectors: torch.Tensor,
        lengths: torch.Tensor,
        centres: torch.Tensor,
    ) -> torch.Tensor:
        """Energy of each atom, shape ``(n,)``.

        Parameters
        ----------
        radial_weights, context
            From :meth:`prepare`.
        radial_basis
            The radial basis at the current edge lengths, ``(n_edges, num_radial)``.
        vectors, lengths
            Current edge vectors ``(n_edges, 3)`` and their lengths ``(n_edges,)``.
        centres
            The atom each edge belongs to (its sender), ``(n_edges,)``.
        """
        radial = torch.einsum("en,enc->ec", radial_basis, radial_weights)
        harmonics = real_spherical_harmonics(vectors / lengths[:, None])
        per_edge = radial[:, :, None] * harmonics[:, None, :] / self.neighbours
        density = per_edge.new_zeros((len(context), *per_edge.shape[1:]))
        density = density.index_add(0, centres, per_edge)
        invariants = torch.cat(
            [
                density[..., 0],
                density[..., 1:4].pow(2).sum(-1),
                density[..., 4:9].pow(2).sum(-1),
            ],
            dim=-1,
        )
        return self.readout(self.invariants_in(invariants) + context).squeeze(-1)
