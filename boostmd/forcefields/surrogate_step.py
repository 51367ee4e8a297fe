r"""One surrogate MD step: energy and forces in a single TorchScript function.

A surrogate step is small (tens to thousands of atoms, a few hundred edges each), so its
cost on a CPU is the number of kernels it launches and the Python between them, not
arithmetic. :meth:`Surrogate.energy_parts <boostmd.forcefields.surrogate.Surrogate.energy_parts>`
with autograd records a graph of about 200 operations and walks it back; here the same
energy (the formula in :mod:`boostmd.forcefields.surrogate` and
:mod:`boostmd.forcefields.many_body`) is evaluated once and its gradient written out by
hand, in TorchScript, with nothing recorded (1.3 against 2.3 ms a step on alanine
dipeptide, one CPU thread). Training keeps the module and autograd (it needs gradients
with respect to the weights); ``tests/test_surrogate_form.py`` checks that both give the
same energies and forces to float64 rounding.

The gradient, edge by edge (``e = i -> j``, vector ``d_e``, length ``r_e``, unit
``u_e``; ``z`` the latent strains, ``s1`` their one-hop part)::

    dE/dz_i   = scale_i (2 a z + 3 b z^2 + 4 c z^3 + 2 s z / (1 + z^2)^2)
    dE/ds1_j  = dE/dz_j + sum_{e = i -> j} V_e dE/dz_i
    dE/dr_e   = g_e + W_e . dE/ds1_i + dU/dr_e         (radial part of U)
    dE/dd_e   = dE/dr_e u_e + (1 - u_e u_e^T) dU/du_e / r_e
    F_i       = sum_{e = i -> j} dE/dd_e - sum_{e = j -> i} dE/dd_e

and ``U``'s read-out network, invariants, densities, spherical harmonics and Bessel basis
are differentiated by the chain rule in the same order as they are evaluated.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings

import torch

from boostmd.forcefields.many_body import real_spherical_harmonics

__all__ = ["surrogate_step"]

logger = logging.getLogger(__name__)


def _scatter(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    shape = [size] + list(values.shape[1:])  # noqa: RUF005 (TorchScript: no unpacking)
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def _step(
    positions: torch.Tensor,
    energy: torch.Tensor,
    body_energy: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    lengths: torch.Tensor,
    pair_force: torch.Tensor,
    edge_weights: torch.Tensor,
    hop_weights: torch.Tensor,
    coefficients: torch.Tensor,
    body_weights: torch.Tensor,
    body_context: torch.Tensor,
    batch: torch.Tensor,
    edge_graph: torch.Tensor,
    num_graphs: int,
    frequencies: torch.Tensor,
    cutoff: float,
    readout: list[torch.Tensor],
    neighbours: float,
    energy_scale: float,
    atom_scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the base energy and curvature term per graph and the forces.

    The arguments are a :class:`~boostmd.forcefields.surrogate.ReferenceFrame`'s tensors
    and the surrogate's weights, as :meth:`Surrogate.evaluate
    <boostmd.forcefields.surrogate.Surrogate.evaluate>` passes them. ``readout``: the
    many-body term's ``invariants_in`` weight, then the weight and bias of its two
    read-out layers. ``atom_scale`` ``(n, 1)``: each atom's curvature scale
    (its graph's); the forces are those of ``base + scale * curvature``.
    """
    src, dst = edge_index[0], edge_index[1]
    n = positions.shape[0]
    sqrt3 = math.sqrt(3.0)
    vectors = positions[dst] - positions[src] + shifts
    r = torch.linalg.vector_norm(vectors, dim=1)
    delta = r - lengths
    one_hop = _scatter(src, edge_weights * delta[:, None], n)
    z = one_hop + _scatter(src, hop_weights * one_hop[dst], n)
    a, b, c, s = coefficients[0], coefficients[1], coefficients[2], coefficients[3]
    z2 = z * z
    saturating = s / (1 + z2)
    learned = _scatter(batch, (z2 * (a + b * z + c * z2 + saturating)).sum(-1), num_graphs)
    first_order = _scatter(edge_graph, pair_force * delta, num_graphs)
    # the many-body term U: Bessel basis, radial channels, harmonics, densities, read-out
    unit = vectors / r[:, None]
    x = (r / cutoff).clamp(max=1.0)
    envelope = 1 + x**5 * (-21 + x * (35 - 15 * x))
    phase = frequencies * r[:, None]
    inverse = 1 / r[:, None]
    sine = torch.sin(phase) * inverse
    norm = math.sqrt(2 / cutoff)
    basis = norm * sine * envelope[:, None]
    radial = torch.bmm(basis[:, None, :], body_weights).squeeze(1)
    ux, uy, uz = unit[:, 0], unit[:, 1], unit[:, 2]
    harmonics = real_spherical_harmonics(unit)
    per_edge = radial[:, :, None] * harmonics[:, None, :] / neighbours
    density = _scatter(src, per_edge, n)
    invariants = torch.cat(
        [density[..., 0], density[..., 1:4].pow(2).sum(-1), density[..., 4:9].pow(2).sum(-1)],
        dim=-1,
    )
    into, hidden_weight, hidden_bias, out_weight, out_bias = readout
    first = invariants @ into.t() + body_context
    gate_first = torch.sigmoid(first)
    second = (first * gate_first) @ hidden_weight.t() + hidden_bias
    gate_second = torch.sigmoid(second)
    per_atom = ((second * gate_second) @ out_weight.t() + out_bias).squeeze(-1)
    body = energy_scale * _scatter(batch, per_atom, num_graphs)
    base = energy + first_order + (body - body_energy)
    curvature = energy_scale * learned
    # the gradient, back through the same steps
    slope = z * (2 * a + z * (3 * b + 4 * c * z)) + 2 * saturating * z / (1 + z2)
    d_z = (energy_scale * atom_scale) * slope
    d_hop = d_z + _scatter(dst, hop_weights * d_z[src], n)
    d_length = (edge_weights * d_hop[src]).sum(-1) + pair_force
    d_second = energy_scale * out_weight * (gate_second * (1 + second * (1 - gate_second)))
    d_first = (d_second @ hidden_weight) * (gate_first * (1 + first * (1 - gate_first)))
    d_invariants = d_first @ into
    channels = density.shape[1]
    d_density = (
        torch.cat(
            [
                d_invariants[:, :channels, None],
                2 * density[..., 1:4] * d_invariants[:, channels : 2 * channels, None],
                2 * density[..., 4:9] * d_invariants[:, 2 * channels :, None],
            ],
            dim=-1,
        )[src]
        / neighbours
    )
    d_radial = (d_density * harmonics[:, None, :]).sum(-1)
    d_harmonics = (d_density * radial[:, :, None]).sum(1)
    d_basis = torch.bmm(body_weights, d_radial[:, :, None]).squeeze(-1)
    d_envelope = -105 * x**4 * (1 - x) ** 2 / cutoff  # zero from the cutoff on
    d_sine = (frequencies * torch.cos(phase) - sine) * inverse
    basis_slope = norm * (d_sine * envelope[:, None] + sine * d_envelope[:, None])
    d_length = d_length + (d_basis * basis_slope).sum(-1)
    g = d_harmonics
    d_unit = torch.stack(
        [
            g[:, 1] + sqrt3 * (uy * g[:, 4] + uz * g[:, 7] + ux * g[:, 8]),
            g[:, 2] + sqrt3 * (ux * g[:, 4] + uz * g[:, 5] - uy * g[:, 8]),
            g[:, 3] + sqrt3 * (uy * g[:, 5] + ux * g[:, 7]) + 3 * uz * g[:, 6],
        ],
        dim=-1,
    )
    tangential = d_unit - (d_unit * unit).sum(-1, keepdim=True) * unit
    d_vectors = d_length[:, None] * unit + tangential * inverse
    forces = _scatter(src, d_vectors, n).index_add_(0, dst, -d_vectors)
    return base, curvature, forces


@functools.cache
def _compiled():
    """:func:`_step` scripted by TorchScript, once per process; itself if that fails.

    torch 2.10+ marks ``torch.jit.script`` deprecated (MACE and e3nn still script their
    models with it); the note is taken here, once. Where TorchScript is gone or cannot
    compile the step, the same function runs eagerly (about 30% slower on a CPU).
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*torch\.jit\.script.*", DeprecationWarning)
            return torch.jit.script(_step)
    except Exception as error:  # an API that moved or a compiler that refuses: eager
        logger.warning("TorchScript could not compile the surrogate step (%s); eager", error)
        return _step


def surrogate_step(*args):
    """Return the base energy and curvature term per graph and the forces.

    :func:`_step` (its arguments), compiled by TorchScript once per process.
    """
    return _compiled()(*args)
