"""The model calls of BoostMD's calculators, for one system or for several at once.

A :class:`~boostmd.dynamics.calculator.BoostMDCalculator` needs three things from its models:

- ``reference(atoms)``: one reference forward pass (energy, forces, node features);
- ``frame(atoms, result)``: the surrogate's reference frame prepared from that result;
- ``surrogate(frame, positions, scale)``: the surrogate's energy, forces and curvature term.

:class:`ModelCalls` makes them one system at a time. The ``*_many`` functions here make
each for several systems in one batched call (:meth:`MACEReference.compute_many
<boostmd.forcefields.reference.MACEReference.compute_many>`, :meth:`Surrogate.prepare_many
<boostmd.forcefields.surrogate.Surrogate.prepare_many>`, one surrogate pass over
:meth:`ReferenceFrame.join <boostmd.forcefields.surrogate.ReferenceFrame.join>`); with one
system each is exactly the single call. :class:`~boostmd.ReplicaBatch` gathers the calls
of many replicas into them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from boostmd.dynamics.device_window import LangevinCoefficients, WindowPath, integrate_window
from boostmd.forcefields.graph import radius_graph
from boostmd.forcefields.reference import MACEReference, ReferenceResult
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate

__all__ = [
    "ModelCalls",
    "SurrogateResult",
    "frames_many",
    "reference_many",
    "surrogate_many",
    "windows_many",
]

# energy (eV), forces (eV/Å, float64), unscaled curvature term (eV)
SurrogateResult = tuple[float, np.ndarray, float]


def reference_many(reference: MACEReference, systems: Sequence[Atoms]) -> list[ReferenceResult]:
    """Run the reference on ``systems``: one forward pass over all of them."""
    if len(systems) == 1:
        return [reference(systems[0])]
    return reference.compute_many(systems)


def _periodic_edges(surrogate: Surrogate, atoms: Atoms):
    """Edges and image shifts of a periodic system (``None, None`` for a molecule)."""
    if not atoms.pbc.any():
        return None, None
    weight = surrogate.feature_in.weight
    edge_index, image_shifts = radius_graph(
        atoms.positions, surrogate.config.cutoff, atoms.cell.array, atoms.pbc
    )
    return (
        torch.as_tensor(edge_index, device=weight.device),
        torch.as_tensor(image_shifts, dtype=weight.dtype, device=weight.device),
    )


def _frame(surrogate: Surrogate, atoms: Atoms, result: ReferenceResult) -> ReferenceFrame:
    edge_index, shifts = _periodic_edges(surrogate, atoms)
    return surrogate.prepare(
        atoms.numbers,
        result.node_features,
        atoms.positions,
        result.energy,
        result.forces,
        edge_index=edge_index,
        shifts=shifts,
    )


def frames_many(
    surrogate: Surrogate, systems: Sequence[Atoms], results: Sequence[ReferenceResult]
) -> list[ReferenceFrame]:
    """Prepare the frames of ``systems``: molecules as one batch, periodic ones alone.

    One pair-force solve serves the whole batch
    (:class:`~boostmd.forcefields.graph.PairForceSolver`); its tolerance is relative to the
    batch's forces, so a frame can differ from one prepared alone within that tolerance.
    """
    with torch.no_grad():
        if len(systems) == 1:
            return [_frame(surrogate, systems[0], results[0])]
        frames: list[ReferenceFrame | None] = [None] * len(systems)
        molecules = []
        for i, atoms in enumerate(systems):
            if atoms.pbc.any():
                frames[i] = _frame(surrogate, atoms, results[i])
            else:
                molecules.append(i)
        if molecules:
            joined = surrogate.prepare_many(
                [systems[i] for i in molecules], [results[i] for i in molecules]
            )
            for i, frame in zip(molecules, joined.split()):
                frames[i] = frame
        return frames


def surrogate_many(
    surrogate: Surrogate,
    frames: Sequence[ReferenceFrame],
    positions: Sequence[np.ndarray],
    scales: Sequence[float],
    join: Callable[[Sequence[ReferenceFrame]], ReferenceFrame] = ReferenceFrame.join,
) -> list[SurrogateResult]:
    """Evaluate the surrogate at ``positions[i]`` with ``frames[i]``, all in one pass.

    Parameters
    ----------
    join
        Makes the batch of the frames (:meth:`ReferenceFrame.join`; a
        :class:`~boostmd.dynamics.replicas.ReplicaBatch` passes one that reuses its last batch).
    """
    x = np.asarray(positions[0]) if len(frames) == 1 else np.concatenate(positions)
    frame = join(frames)
    energy, forces, curvature = surrogate.evaluate(frame, x, _graph_scales(surrogate, scales))
    sizes = [len(p) for p in positions]
    forces = forces.cpu().numpy().astype(np.float64)
    energies, curvatures = energy.tolist(), curvature.tolist()
    return list(zip(energies, np.split(forces, np.cumsum(sizes)[:-1]), curvatures))


def _graph_scales(surrogate: Surrogate, scales: Sequence[float]) -> float | torch.Tensor:
    """One curvature scale per graph as the surrogate takes them (a number for one graph)."""
    if len(scales) == 1:
        return scales[0]
    weight = surrogate.feature_in.weight
    return torch.as_tensor(scales, dtype=weight.dtype, device=weight.device)


def windows_many(
    surrogate: Surrogate,
    calls: Sequence[tuple],
    join: Callable[[Sequence[ReferenceFrame]], ReferenceFrame] = ReferenceFrame.join,
) -> list[WindowPath]:
    """Integrate several systems' windows (:meth:`ModelCalls.window` arguments) together.

    Systems with the same number of steps, timestep and friction form one batch over
    their joined frames (``join``, as for :func:`surrogate_many`); each batch is one
    :func:`~boostmd.dynamics.device_window.integrate_window`.
    """
    groups: dict[tuple, list[int]] = {}
    for index, (_, _, coefficients, *_, noise) in enumerate(calls):
        groups.setdefault((len(noise), *coefficients.step_key), []).append(index)
    paths: list[WindowPath | None] = [None] * len(calls)
    for members in groups.values():
        frames, scales, coefficients, positions, momenta, forces, xi, noise = zip(
            *(calls[i] for i in members)
        )
        path = integrate_window(
            surrogate,
            join(frames),
            _graph_scales(surrogate, scales),
            LangevinCoefficients.concatenate(list(coefficients)),
            np.concatenate(positions),
            np.concatenate(momenta),
            np.concatenate(forces),
            np.concatenate(xi),
            np.concatenate(noise, axis=2),
        )
        ends = np.cumsum([len(x) for x in positions])
        for graph, (i, start, end) in enumerate(zip(members, [0, *ends[:-1]], ends)):
            paths[i] = WindowPath(
                path.positions[:, start:end],
                path.momenta[:, start:end],
                path.energies[:, graph : graph + 1],
                path.forces[:, start:end],
                path.xi[:, start:end],
            )
    return paths


class ModelCalls:
    """A calculator's model calls, made one system at a time.

    Each call is :meth:`many` with one system; :class:`~boostmd.dynamics.replicas.ReplicaBatch`
    gathers many replicas' calls and makes them with :meth:`many` too.

    Parameters
    ----------
    reference
        The reference force field.
    surrogate
        Its surrogate (``None`` for a calculator that only runs the reference).
    """

    def __init__(self, reference: MACEReference, surrogate: Surrogate | None = None) -> None:
        self.reference_model = reference
        self.surrogate_model = surrogate

    def reference(self, atoms: Atoms) -> ReferenceResult:
        """Run the reference on ``atoms``."""
        return self._call("reference", (atoms,))

    def frame(self, atoms: Atoms, result: ReferenceResult) -> ReferenceFrame:
        """Prepare the surrogate's frame at ``atoms`` from the reference's ``result``."""
        return self._call("frame", (atoms, result))

    def surrogate(self, frame: ReferenceFrame, positions: np.ndarray, scale: float):
        """Energy, forces and unscaled curvature term of the surrogate at ``positions``."""
        return self._call("surrogate", (frame, positions, scale))

    def window(
        self,
        frame: ReferenceFrame,
        scale: float,
        coefficients: LangevinCoefficients,
        positions: np.ndarray,
        momenta: np.ndarray,
        forces: np.ndarray,
        xi: np.ndarray,
        noise: np.ndarray,
    ) -> WindowPath:
        """Integrate a window's surrogate steps on the models' device.

        See :func:`boostmd.dynamics.device_window.integrate_window`.
        """
        args = (frame, scale, coefficients, positions, momenta, forces, xi, noise)
        return self._call("window", args)

    def many(self, kind: str, calls: Sequence[tuple]) -> list:
        """Make several calls of one kind as one batched call.

        ``kind`` is ``reference``, ``frame``, ``surrogate`` or ``window``; each call is the
        tuple of that method's arguments.
        """
        if kind == "reference":
            return reference_many(self.reference_model, [atoms for (atoms,) in calls])
        if kind == "frame":
            systems, results = zip(*calls)
            return frames_many(self.surrogate_model, systems, results)
        if kind == "surrogate":
            frames, positions, scales = zip(*calls)
            return surrogate_many(self.surrogate_model, frames, positions, scales, self._join)
        return windows_many(self.surrogate_model, calls, self._join)

    def _call(self, kind: str, args: tuple):
        return self.many(kind, [args])[0]

    def _join(self, frames: Sequence[ReferenceFrame]) -> ReferenceFrame:
        return ReferenceFrame.join(frames)
