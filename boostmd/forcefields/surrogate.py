r"""The surrogate: the energy change since the reference frame, from cached MACE features.

The energy at positions ``R`` within a boost window is

.. math::

    E(R) = E_\mathrm{ref} + \sum_e (g_e - u_e) \delta_e
           + \sum_{i,c} \left( a_{ic} z_{ic}^2 + b_{ic} z_{ic}^3 + c_{ic} z_{ic}^4
                              + s_{ic} \frac{z_{ic}^2}{1 + z_{ic}^2} \right)
           + U(R) - U(R_\mathrm{ref}),

    z_i = \sum_{e = i \to j} W_e \delta_e
          + \sum_{e = i \to j} V_e \sum_{e' = j \to k} W_{e'} \delta_{e'}

===================  ===============================================================
symbol               meaning
===================  ===============================================================
``delta_e``          change of the length of edge ``e`` since the reference frame (Å)
``g_e``              central pair force of edge ``e``: the reference forces decomposed
                     along the edges, so the first-order term reproduces them exactly
``W_e, V_e``         per-edge channel weights, from the reference node features of both
                     atoms, the reference edge length and the pair force
``a, b, c``          per-atom, per-channel coefficients from the node features with
                     ``a, c >= 0`` and ``|b| < 2 sqrt(a c)`` (squares and a tanh of the
                     network's outputs): the polynomial is never
                     negative and grows as ``z^4``, whatever the training data
``s``                a signed, saturating correction (``|s z^2/(1+z^2)| < |s|``): the
                     curvature at the frame, ``2 (a + s)``, may be soft or negative (torsions),
                     but the energy it can remove is bounded
``z_i``              per-atom latent strain: one- and two-hop sums of edge-length changes
``U``                a learned many-body energy of the current positions (angles
                     included), conditioned on the node features
                     (:class:`~boostmd.forcefields.many_body.ManyBodyTerm`); bounded
``u_e``              the central pair decomposition of ``U``'s forces at the reference
                     positions, which makes ``U``'s first-order term vanish there
===================  ===============================================================

Why this shape: a free cubic (the first version had ``a``, ``b`` unconstrained) makes
wells in the learned energy a few tenths of an Å away from the frame; BoostMD's dynamics
find them, and a bond stretched 0.1-0.3 Å released energies of 0.4-8 eV at the next
refresh and broke. Here each channel's polynomial is bounded below by 0 and the only
term that can lower the energy is bounded by ``|s|``, so no window can run into a hole.
The many-body term (format version 3) adds what one- and two-hop sums of length changes
miss, the bending of angles and the coupled motions of neighbours; it is bounded too (its
inputs are), and version-2 files load with it switched off.

Everything except ``delta_e`` depends only on the reference frame and is computed once per
reference call (:meth:`Surrogate.prepare`); a surrogate step evaluates the polynomial
above and its gradient, a few dozen small tensor operations.

Properties by construction: at the reference positions the energy and forces equal the
reference's (``delta = 0`` and the learned terms are at least quadratic); the energy
depends on positions only through interatomic distances, so it is invariant to
translations, rotations and consistent permutations and the forces sum to zero; it is a
smooth function of the positions (edges are fixed at the reference frame).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from boostmd.forcefields.elements import element_indices
from boostmd.forcefields.files import read_payload, write_payload
from boostmd.forcefields.graph import NonCentralForces, PairForceSolver, radius_graph_per_graph
from boostmd.forcefields.many_body import ManyBodyTerm
from boostmd.forcefields.surrogate_step import surrogate_step

__all__ = ["ReferenceFrame", "Surrogate", "SurrogateConfig"]

FORMAT = "boostmd-surrogate"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
TYPICAL_NEIGHBOURS = 16.0


@dataclass(frozen=True)
class SurrogateConfig:
    """Hyperparameters of a surrogate and what it was made for.

    Parameters
    ----------
    atomic_numbers
        Elements the reference knows (same order as the reference).
    feature_dim
        Number of invariant node features the reference returns per atom.
    reference_fingerprint
        Fingerprint of the reference model the surrogate was made for.
    cutoff
        Edge radius in Å at the reference frame.
    num_channels
        Latent strain channels per atom.
    hidden_dim
        Width of the per-atom and per-edge networks.
    num_radial
        Bessel functions encoding the reference edge length.
    length_scale
        Typical edge-length change (Å); edge-length changes are divided by it.
    energy_scale
        Typical energy change (eV); the learned terms are multiplied by it.
    body_channels
        Radial channels of the many-body term.
    """

    atomic_numbers: tuple[int, ...]
    feature_dim: int
    reference_fingerprint: str
    cutoff: float = 5.0
    num_channels: int = 16
    hidden_dim: int = 64
    num_radial: int = 8
    length_scale: float = 0.1
    energy_scale: float = 1.0
    body_channels: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "atomic_numbers", tuple(int(z) for z in self.atomic_numbers))
        for name in ("feature_dim", "num_channels", "hidden_dim", "num_radial", "body_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"SurrogateConfig({name}=...) must be an integer >= 1, got {value!r}"
                )
        for name in ("cutoff", "length_scale", "energy_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SurrogateConfig({name}=...) must be a number > 0, got {value!r}")
        if not self.atomic_numbers:
            raise ValueError("SurrogateConfig(atomic_numbers=...) must name at least one element")

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SurrogateConfig:
        """Parse a JSON string written by :meth:`to_json`."""
        return cls(**json.loads(text))


@dataclass
class ReferenceFrame:
    """What a surrogate keeps from one reference call (one or several graphs).

    Built by :meth:`Surrogate.prepare`; everything here is constant within a boost window.
    """

    positions: torch.Tensor
    energy: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    edge_index: torch.Tensor
    shifts: torch.Tensor
    lengths: torch.Tensor
    pair_force: torch.Tensor
    edge_weights: torch.Tensor
    hop_weights: torch.Tensor
    coefficients: torch.Tensor
    body_weights: torch.Tensor
    body_context: torch.Tensor
    body_energy: torch.Tensor
    edge_graph: torch.Tensor = field(repr=False)

    def tile(self, copies: int) -> ReferenceFrame:
        """Repeat the frames ``copies`` times over, as one batch of ``copies * num_graphs``.

        Copy ``j`` holds graphs ``j * num_graphs ... (j + 1) * num_graphs - 1`` and atoms
        ``j * n ... (j + 1) * n - 1``. Training uses it to evaluate one prepared frame at
        every ``k`` of its window without preparing it again; gradients flow through.
        """
        return ReferenceFrame.join([self] * copies)

    @classmethod
    def join(cls, frames: Sequence[ReferenceFrame]) -> ReferenceFrame:
        """One batch of the graphs of ``frames``, in order (replicas stepped together).

        A single frame is returned as it is. :meth:`split` undoes it.
        """
        if not frames:
            raise ValueError("join needs at least one frame")
        if len(frames) == 1:
            return frames[0]
        atoms = torch.tensor([0] + [len(f.positions) for f in frames[:-1]]).cumsum(0).tolist()
        graphs = torch.tensor([0] + [f.num_graphs for f in frames[:-1]]).cumsum(0).tolist()
        joined = {
            name: torch.cat([getattr(f, name) for f in frames])
            for name in _GRAPH_FIELDS + _ATOM_FIELDS + _EDGE_FIELDS
        }
        return ReferenceFrame(
            **joined,
            batch=torch.cat([f.batch + g for f, g in zip(frames, graphs)]),
            num_graphs=sum(f.num_graphs for f in frames),
            edge_index=torch.cat([f.edge_index + a for f, a in zip(frames, atoms)], dim=1),
            coefficients=torch.cat([f.coefficients for f in frames], dim=1),
            edge_graph=torch.cat([f.edge_graph + g for f, g in zip(frames, graphs)]),
        )

    def split(self) -> list[ReferenceFrame]:
        """One frame per graph, each as :meth:`Surrogate.prepare` makes it for one graph."""
        if self.num_graphs == 1:
            return [self]
        frames = []
        for graph in range(self.num_graphs):
            atoms = self.batch == graph
            edges = self.edge_graph == graph
            renumber = torch.cumsum(atoms, 0) - 1
            zeros = torch.zeros(int(atoms.sum()), dtype=self.batch.dtype, device=atoms.device)
            frames.append(
                ReferenceFrame(
                    **{name: getattr(self, name)[graph : graph + 1] for name in _GRAPH_FIELDS},
                    **{name: getattr(self, name)[atoms] for name in _ATOM_FIELDS},
                    **{name: getattr(self, name)[edges] for name in _EDGE_FIELDS},
                    batch=zeros,
                    num_graphs=1,
                    edge_index=renumber[self.edge_index[:, edges]],
                    coefficients=self.coefficients[:, atoms],
                    edge_graph=torch.zeros_like(self.edge_graph[edges]),
                )
            )
        return frames


# How join and split treat the frame's per-graph, per-atom and per-edge tensors (first
# dimension); batch, edge_index, coefficients and edge_graph need their own handling.
_GRAPH_FIELDS = ("energy", "body_energy")
_ATOM_FIELDS = ("positions", "body_context")
_EDGE_FIELDS = (
    "shifts",
    "lengths",
    "pair_force",
    "edge_weights",
    "hop_weights",
    "body_weights",
)


class BesselBasis(nn.Module):
    """``sqrt(2/rc) sin(n pi r / rc) / r`` times a smooth polynomial envelope."""

    def __init__(self, num: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("frequencies", torch.arange(1, num + 1) * math.pi / cutoff)

    def envelope(self, r: torch.Tensor) -> torch.Tensor:
        """Smooth cutoff: 1 at ``r = 0``, 0 with two vanishing derivatives at the cutoff."""
        x = (r / self.cutoff).clamp(max=1.0)
        return 1 - 21 * x**5 + 35 * x**6 - 15 * x**7

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Encode lengths ``r`` (Å), shape ``(n,)`` -> ``(n, num)``."""
        basis = torch.sin(self.frequencies * r[:, None]) / r[:, None]
        return math.sqrt(2 / self.cutoff) * basis * self.envelope(r)[:, None]


def _polynomial_coefficients(raw: torch.Tensor) -> torch.Tensor:
    """Map raw head outputs ``(..., 4 C)`` to ``(a, b, c, s)``, shape ``(4, ..., C)``.

    With ``a = alpha^2``, ``c = gamma^2`` and ``b = 2 alpha gamma tanh(beta)``,
    ``a z^2 + b z^3 + c z^4 = z^2 (alpha^2 + 2 alpha gamma t z + gamma^2 z^2) >= 0`` for
    all ``z`` (the bracket's discriminant is ``4 alpha^2 gamma^2 (t^2 - 1) < 0``); ``s`` is
    free. Squares rather than softplus: small raw values mean small coefficients that
    grow at the optimiser's pace (a softplus started far negative takes thousands of steps
    to wake up), and every map is smooth.
    """
    alpha, beta, gamma, s = raw.chunk(4, dim=-1)
    a, c = alpha * alpha, gamma * gamma
    b = 2 * alpha * gamma * torch.tanh(beta)
    return torch.stack([a, b, c, s], dim=0)


def _index_add(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add(0, index, values)


class Surrogate(nn.Module):
    """Predicts the energy change since a reference frame from its cached node features.

    Parameters
    ----------
    config
        Hyperparameters and the reference it was made for; build it with
        :meth:`for_reference`.

    Examples
    --------
    >>> surrogate = Surrogate.for_reference(reference, num_channels=16)  # doctest: +SKIP
    >>> result = reference(atoms)  # doctest: +SKIP
    >>> frame = surrogate.prepare(atoms.numbers, result.node_features,  # doctest: +SKIP
    ...                           atoms.positions, result.energy, result.forces)
    >>> energy, forces = surrogate.energy_and_forces(frame, new_positions)  # doctest: +SKIP
    """

    def __init__(self, config: SurrogateConfig) -> None:
        super().__init__()
        self.config = config
        # How it was made and the settings it was checked at (JSON-ready, saved with it);
        # ``interval``, when present, is the longest window its fit found to sample right.
        self.recipe: dict = {}
        # reference forces at frames that are not central pair forces, reported once
        self.noncentral_forces = NonCentralForces()
        hidden, channels = config.hidden_dim, config.num_channels
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.species_embedding = nn.Embedding(len(config.atomic_numbers), hidden)
        self.feature_in = nn.Linear(config.feature_dim, hidden)
        self.node_mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.coefficient_head = nn.Linear(hidden, 4 * channels)
        self.radial = BesselBasis(config.num_radial, config.cutoff)
        self.edge_sender = nn.Linear(hidden, hidden)
        self.edge_receiver = nn.Linear(hidden, hidden, bias=False)
        self.edge_geometry = nn.Linear(config.num_radial + 2, hidden, bias=False)
        self.edge_head = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * channels))
        self.body = ManyBodyTerm(
            hidden, config.body_channels, config.num_radial, TYPICAL_NEIGHBOURS
        )
        # Start at the first-order expansion (a = c = 1e-4, b = s = 0), so an untrained
        # surrogate is already sensible and training does not begin with huge energies.
        nn.init.zeros_(self.coefficient_head.weight)
        with torch.no_grad():
            self.coefficient_head.bias.copy_(
                torch.tensor([1e-2, 0.0, 1e-2, 0.0]).repeat_interleave(channels)
            )

    @classmethod
    def for_reference(cls, reference, **hyperparameters) -> Surrogate:
        """Build an untrained surrogate matching ``reference`` (a :class:`MACEReference`).

        Parameters
        ----------
        reference
            The reference the surrogate will run with.
        **hyperparameters
            Any :class:`SurrogateConfig` field except the reference-derived ones.
        """
        config = SurrogateConfig(
            atomic_numbers=reference.atomic_numbers,
            feature_dim=reference.feature_dim,
            reference_fingerprint=reference.fingerprint,
            **{"cutoff": reference.cutoff, **hyperparameters},
        )
        return cls(config).to(dtype=reference.dtype, device=reference.device)

    # ------------------------------------------------------------------ reference frame
    def species_index(self, numbers: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Map atomic numbers to this surrogate's element indices, naming unknown ones."""
        index = element_indices(numbers, self.config.atomic_numbers, "the surrogate")
        return torch.as_tensor(index, device=self.feature_in.weight.device)

    def prepare_many(self, systems: Sequence, results: Sequence) -> ReferenceFrame:
        """Prepare one frame for several systems (replicas), one graph each.

        Parameters
        ----------
        systems
            :class:`ase.Atoms` objects.
        results
            Their reference results, in the same order
            (:meth:`~boostmd.forcefields.reference.MACEReference.compute_many`).
        """
        if len(systems) != len(results) or not len(systems):
            raise ValueError(
                f"prepare_many needs one reference result per system, got {len(systems)} "
                f"systems and {len(results)} results"
            )
        sizes = torch.tensor([len(atoms) for atoms in systems])
        return self.prepare(
            np.concatenate([atoms.numbers for atoms in systems]),
            torch.cat([result.node_features for result in results]),
            np.concatenate([atoms.positions for atoms in systems]),
            torch.stack([torch.as_tensor(result.energy) for result in results]),
            torch.cat([result.forces for result in results]),
            batch=torch.repeat_interleave(torch.arange(len(systems)), sizes).to(
                self.feature_in.weight.device
            ),
        )

    def prepare(
        self,
        numbers: torch.Tensor | np.ndarray,
        node_features: torch.Tensor,
        positions: torch.Tensor | np.ndarray,
        energy: torch.Tensor | float,
        forces: torch.Tensor,
        *,
        batch: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        shifts: torch.Tensor | None = None,
        pair_force: torch.Tensor | None = None,
    ) -> ReferenceFrame:
        """Compute everything that depends only on the reference frame.

        Parameters
        ----------
        numbers
            Atomic numbers, shape ``(n,)``.
        node_features
            The reference's invariant node features, shape ``(n, feature_dim)``.
        positions
            Reference positions in Å, shape ``(n, 3)``.
        energy
            Reference energy per graph in eV, shape ``(num_graphs,)`` or a scalar.
        forces
            Reference forces in eV/Å, shape ``(n, 3)``.
        batch
            Graph index of each atom for several graphs (default: one graph).
        edge_index, shifts
            Edges and image shifts (default: all pairs within the cutoff, each graph of
            the batch on its own, as molecules).
        pair_force
            Precomputed :func:`~boostmd.forcefields.graph.pair_forces` (default: computed here).
        """
        dtype, device = self.feature_in.weight.dtype, self.feature_in.weight.device
        as_float = {"dtype": dtype, "device": device}
        positions = torch.as_tensor(positions, **as_float).detach()
        forces = forces.detach().to(**as_float)
        node_features = node_features.detach().to(**as_float)
        n = len(positions)
        if node_features.shape != (n, self.config.feature_dim):
            raise ValueError(
                f"node_features must have shape ({n}, {self.config.feature_dim}), "
                f"got {tuple(node_features.shape)}: is this the surrogate's reference?"
            )
        if forces.shape != (n, 3):
            raise ValueError(f"forces must have shape ({n}, 3), got {tuple(forces.shape)}")
        species = self.species_index(numbers)
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=device)
        num_graphs = int(batch.max()) + 1 if n else 0
        energy = torch.as_tensor(energy, **as_float).detach().reshape(num_graphs)
        if edge_index is None:
            edges, image_shifts = radius_graph_per_graph(
                positions.cpu().numpy(), self.config.cutoff, batch.cpu().numpy()
            )
            edge_index = torch.as_tensor(edges, device=device)
            shifts = torch.as_tensor(image_shifts, **as_float)
        shifts = torch.zeros(edge_index.shape[1], 3, **as_float) if shifts is None else shifts
        # One solver serves both decompositions on this graph (forces, many-body term).
        solver = PairForceSolver(positions, edge_index, shifts, numbers)
        if pair_force is None:
            solution = solver.solve(forces)
            self.noncentral_forces.check(solution)
            pair_force = solution.pair_force.to(forces.dtype)
        src, dst = edge_index
        lengths = (positions[dst] - positions[src] + shifts).norm(dim=1)

        features = (node_features - self.feature_mean) / self.feature_std
        hidden = self.node_mlp(self.feature_in(features) + self.species_embedding(species))
        coefficients = _polynomial_coefficients(self.coefficient_head(hidden))
        force_along_edge = (
            (forces[dst] - forces[src]) * (positions[dst] - positions[src] + shifts)
        ).sum(-1) / lengths
        geometry = torch.cat(
            [
                self.radial(lengths),
                torch.asinh(pair_force)[:, None],
                torch.asinh(force_along_edge)[:, None],
            ],
            dim=-1,
        )
        edge_hidden = (
            self.edge_sender(hidden)[src]
            + self.edge_receiver(hidden)[dst]
            + self.edge_geometry(geometry)
        )
        envelope = self.radial.envelope(lengths)[:, None]
        edge_weights, hop_weights = (self.edge_head(edge_hidden) * envelope).chunk(2, dim=-1)
        body_weights, body_context = self.body.prepare(hidden, edge_index)
        graphs = (batch, num_graphs)
        body_energy, body_gradient = self._body_at_reference(
            positions, edge_index, shifts, body_weights, body_context, graphs
        )
        # The many-body term's own first-order term is cancelled along the edges.
        body_pair_force = solver.solve(-body_gradient).pair_force.to(body_gradient.dtype)
        return ReferenceFrame(
            positions=positions,
            energy=energy,
            batch=batch,
            num_graphs=num_graphs,
            edge_index=edge_index,
            shifts=shifts,
            lengths=lengths,
            pair_force=pair_force - body_pair_force,
            edge_weights=edge_weights / self.config.length_scale,
            hop_weights=hop_weights,
            coefficients=coefficients,
            body_weights=body_weights,
            body_context=body_context,
            body_energy=body_energy,
            edge_graph=batch[src],
        )

    def _body_energy(
        self,
        vectors: torch.Tensor,
        lengths: torch.Tensor,
        src: torch.Tensor,
        weights: torch.Tensor,
        context: torch.Tensor,
        graphs: tuple[torch.Tensor, int],
    ) -> torch.Tensor:
        """Return the many-body energy ``U`` of each graph, from the current edge vectors."""
        basis = self.radial(lengths)
        per_atom = self.body.energies(weights, context, basis, vectors, lengths, src)
        batch, num_graphs = graphs
        return self.config.energy_scale * _index_add(batch, per_atom, num_graphs)

    def _body_at_reference(self, positions, edge_index, shifts, weights, context, graphs):
        """Return ``U`` and its gradient at the reference positions.

        Both stay differentiable when gradients are enabled (training).
        """
        keep_graph = torch.is_grad_enabled()
        src, dst = edge_index
        with torch.enable_grad():
            reference = positions.detach().requires_grad_(True)
            vectors = reference[dst] - reference[src] + shifts
            energy = self._body_energy(vectors, vectors.norm(dim=1), src, weights, context, graphs)
            (gradient,) = torch.autograd.grad(energy.sum(), reference, create_graph=keep_graph)
        if not keep_graph:
            return energy.detach(), gradient.detach()
        return energy, gradient

    # ------------------------------------------------------------------ per step
    def energy(
        self, frame: ReferenceFrame, positions: torch.Tensor, curvature_scale: float = 1.0
    ) -> torch.Tensor:
        """Energy in eV of each graph at ``positions`` (shape ``(n, 3)``), differentiable.

        ``curvature_scale`` multiplies the learned curvature term (see :meth:`energy_parts`;
        :class:`~boostmd.dynamics.calibration.CurvatureCalibration` fits it during a run).
        """
        base, curvature = self.energy_parts(frame, positions)
        return base + curvature_scale * curvature

    def energy_parts(
        self, frame: ReferenceFrame, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the energy per graph split as ``(base, curvature)``, both differentiable.

        ``curvature`` is the learned polynomial in the latent strains: zero, with zero
        gradient, at the reference frame. ``base`` is the rest: the frame's energy, the
        exact first-order term and the many-body term.
        """
        src, dst = frame.edge_index
        vectors = positions[dst] - positions[src] + frame.shifts
        lengths = vectors.norm(dim=1)
        delta = lengths - frame.lengths
        n = len(positions)
        strain = _index_add(src, frame.edge_weights * delta[:, None], n)
        strain = strain + _index_add(src, frame.hop_weights * strain[dst], n)
        a, b, c, s = frame.coefficients
        squared = strain * strain
        per_atom = (squared * (a + b * strain + c * squared + s / (1 + squared))).sum(-1)
        learned = _index_add(frame.batch, per_atom, frame.num_graphs)
        first_order = _index_add(frame.edge_graph, frame.pair_force * delta, frame.num_graphs)
        body = self._body_energy(
            vectors,
            lengths,
            src,
            frame.body_weights,
            frame.body_context,
            (frame.batch, frame.num_graphs),
        )
        base = frame.energy + first_order + (body - frame.body_energy)
        return base, self.config.energy_scale * learned

    def energy_and_forces(
        self,
        frame: ReferenceFrame,
        positions: torch.Tensor | np.ndarray,
        training: bool = False,
        curvature_scale: float | torch.Tensor = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies per graph (eV) and forces (eV/Å) as the negative gradient.

        Parameters
        ----------
        frame
            From :meth:`prepare`.
        positions
            Current positions in Å, shape ``(n, 3)``.
        training
            Keep the graph for a loss on the forces (double backward).
        curvature_scale
            Multiplies the learned curvature term (:meth:`energy`): one number, or one
            per graph.
        """
        energy, forces, _ = self._differentiate(frame, positions, curvature_scale, training)
        return energy, forces

    def evaluate(
        self,
        frame: ReferenceFrame,
        positions: torch.Tensor | np.ndarray,
        curvature_scale: float | torch.Tensor = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energies per graph, forces and the unscaled curvature term per graph, for MD.

        :meth:`energy_and_forces` plus the curvature term of :meth:`energy_parts`, which
        :class:`~boostmd.dynamics.calibration.CurvatureCalibration` fits its scale to; nothing is
        kept for a backward pass.
        """
        return self._differentiate(frame, positions, curvature_scale, training=False)

    def stress(
        self,
        frame: ReferenceFrame,
        positions: torch.Tensor | np.ndarray,
        cell: torch.Tensor | np.ndarray,
        curvature_scale: float = 1.0,
    ) -> torch.Tensor:
        """Return the stress of the surrogate's own energy, ``(1 / V) dE / d(strain)`` (eV/Å³).

        A homogeneous strain moves the positions and the cell (so the frame's image
        shifts, whole cell vectors) together; the derivative is taken at zero strain by
        autograd. ASE's sign convention; shape ``(3, 3)``.

        Parameters
        ----------
        frame
            From :meth:`prepare`, one graph, periodic.
        positions
            Current positions in Å, shape ``(n, 3)``.
        cell
            The cell vectors (rows) in Å at ``positions``; the frame's image shifts are
            taken in it (they are whole multiples of the frame's cell vectors).
        curvature_scale
            As for :meth:`energy`.
        """
        if frame.num_graphs != 1:
            raise ValueError(f"stress needs a frame of one graph, got {frame.num_graphs}")
        weight = self.feature_in.weight
        as_float = {"dtype": weight.dtype, "device": weight.device}
        positions = torch.as_tensor(positions, **as_float)
        cell = torch.as_tensor(np.asarray(cell, dtype=np.float64), **as_float)
        volume = torch.linalg.det(cell).abs()
        if not volume > 0:
            raise ValueError("stress needs a cell of nonzero volume (a bulk, periodic system)")
        with torch.enable_grad():
            strain = torch.zeros(3, 3, requires_grad=True, **as_float)
            deformation = torch.eye(3, **as_float) + 0.5 * (strain + strain.T)
            strained = replace(frame, shifts=frame.shifts @ deformation.T)
            energy = self.energy(strained, positions @ deformation.T, curvature_scale).sum()
            (derivative,) = torch.autograd.grad(energy, strain)
        return derivative / volume

    def _differentiate(self, frame, positions, curvature_scale, training: bool):
        weight = self.feature_in.weight
        positions = torch.as_tensor(positions, dtype=weight.dtype, device=weight.device)
        if positions.shape != frame.positions.shape:
            raise ValueError(
                f"positions must have shape {tuple(frame.positions.shape)}, "
                f"got {tuple(positions.shape)}"
            )
        if not training:  # MD: one scripted pass, its gradient by hand
            with torch.no_grad():
                return self._step(frame, positions, curvature_scale)
        with torch.enable_grad():
            positions = positions.detach().requires_grad_(True)
            base, curvature = self.energy_parts(frame, positions)
            energy = base + curvature_scale * curvature
            (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
        return energy, -gradient, curvature

    def _step(self, frame, positions, curvature_scale):
        """Energy, forces and curvature term by :func:`~.surrogate_step.surrogate_step`."""
        scale = curvature_scale
        if isinstance(scale, torch.Tensor):
            scale = scale.to(positions.dtype)
            per_atom = scale[frame.batch] if scale.dim() else scale.expand(len(positions))
            atom_scale = per_atom[:, None]
        else:  # a fill, no copy from the host: capturable in a CUDA graph
            atom_scale = positions.new_full((len(positions), 1), float(scale))
        _, hidden, _, out = self.body.readout
        layers = [self.body.invariants_in.weight, hidden.weight, hidden.bias, out.weight, out.bias]
        base, curvature, forces = surrogate_step(
            positions,
            frame.energy,
            frame.body_energy,
            frame.edge_index,
            frame.shifts,
            frame.lengths,
            frame.pair_force,
            frame.edge_weights,
            frame.hop_weights,
            frame.coefficients,
            frame.body_weights,
            frame.body_context,
            frame.batch,
            frame.edge_graph,
            frame.num_graphs,
            self.radial.frequencies,
            float(self.radial.cutoff),
            layers,
            float(self.body.neighbours),
            float(self.config.energy_scale),
            atom_scale,
        )
        return base + scale * curvature, forces, curvature

    def forward(self, numbers, node_features, ref_positions, ref_energy, ref_forces, positions):
        """Energy at ``positions`` given one reference frame (prepare + energy)."""
        frame = self.prepare(numbers, node_features, ref_positions, ref_energy, ref_forces)
        return self.energy(frame, positions)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the surrogate to ``path`` (a state dict with its JSON config).

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        """
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return write_payload(
            path,
            FORMAT,
            {
                "version": FORMAT_VERSION,
                "config": self.config.to_json(),
                "recipe": json.dumps(self.recipe, sort_keys=True),
                "state_dict": state,
            },
            overwrite,
        )

    @property
    def recommended_interval(self) -> int | None:
        """The window length (steps) its fit found to sample right, if it was fitted."""
        interval = self.recipe.get("interval")
        return None if interval is None else int(interval)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> Surrogate:
        """Load a surrogate written by :meth:`save` (safe: ``weights_only=True``).

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        ValueError
            If the file is not a BoostMD surrogate or is corrupt.
        """
        how = "write one with Surrogate.save or python -m boostmd.train"
        payload = read_payload(path, FORMAT, "BoostMD surrogate", how)
        version = payload.get("version")
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"{path} is a version-{version} BoostMD surrogate; this boostmd reads "
                f"versions {READABLE_VERSIONS} (the learned terms changed shape): "
                "retrain it with python -m boostmd.train, or fine-tune from it with "
                "python -m boostmd.train --init FILE (version 1 is upgraded)"
            )
        try:
            saved_dtype = payload["state_dict"]["feature_in.weight"].dtype
            surrogate = cls(SurrogateConfig.from_json(payload["config"])).to(saved_dtype)
            # Version 2 had no many-body term: it loads switched off (zero read-out).
            missing, unexpected = surrogate.load_state_dict(payload["state_dict"], strict=False)
            absent = {key for key in missing if not (version == 2 and key.startswith("body."))}
            if absent or unexpected:
                raise KeyError(f"missing {sorted(absent)}, unexpected {sorted(unexpected)}")
            surrogate.recipe = json.loads(payload.get("recipe", "{}"))
        except Exception as error:
            raise ValueError(
                f"{path} is not a readable BoostMD surrogate file ({error}); {how}"
            ) from error
        return surrogate.to(device=device, dtype=dtype or saved_dtype)
