"""BoostMDCalculator: an ASE calculator that alternates a reference MACE and a surrogate."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from boostmd.graph import radius_graph
from boostmd.reference import MACEReference
from boostmd.surrogate import ReferenceFrame, Surrogate
from integrators import CacheStats, Periodic
from integrators.schedules import decide

__all__ = ["BoostMDCalculator", "ReferenceCalculator", "check_compatible"]

logger = logging.getLogger(__name__)

# Changes after which the cached reference frame no longer describes the system.
_NEW_SYSTEM = {"numbers", "cell", "pbc"}


def check_compatible(reference: MACEReference, surrogate: Surrogate) -> None:
    """Raise ``ValueError`` unless ``surrogate`` was made for ``reference``."""
    config = surrogate.config
    if config.reference_fingerprint != reference.fingerprint:
        raise ValueError(
            f"the surrogate was trained for reference model {config.reference_fingerprint}, "
            f"but this reference is {reference.fingerprint}; train a surrogate for it "
            "(python -m boostmd.train) or load the reference it was made for"
        )
    if (
        config.atomic_numbers != reference.atomic_numbers
        or config.feature_dim != reference.feature_dim
    ):
        raise ValueError(
            "the surrogate's elements or feature size do not match the reference's "
            f"({config.atomic_numbers}/{config.feature_dim} vs "
            f"{reference.atomic_numbers}/{reference.feature_dim})"
        )


class ReferenceCalculator(Calculator):
    """The reference alone as an ASE calculator (energy and forces, no stress).

    ``results["node_features"]`` holds the invariant node features of the same pass.

    Parameters
    ----------
    reference
        The reference force field.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces"]  # noqa: RUF012 (ASE API)

    def __init__(self, reference: MACEReference, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reference = reference

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Run one reference forward pass."""
        super().calculate(atoms, properties, system_changes)
        result = self.reference(self.atoms)
        energy = float(result.energy)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": result.forces.cpu().numpy().astype(np.float64),
            "node_features": result.node_features.cpu().numpy(),
        }


class BoostMDCalculator(Calculator):
    """Reference MACE on full steps, a feature-reusing surrogate in between.

    A *step* is a call with new positions; repeated property requests at the same
    positions (loggers, trajectory writers) do not advance it. The schedule decides at
    each step whether the reference runs. Its indicator is the largest atomic
    displacement (Å) since the previous step, so a
    :class:`~integrators.schedules.Threshold` accumulates an upper bound of the largest
    displacement since the reference frame. A change of atoms, cell or periodicity, or
    :meth:`reset`, forces a reference call.

    Parameters
    ----------
    reference
        The reference force field.
    surrogate
        A surrogate made for ``reference`` (its fingerprint is checked).
    interval
        Run the reference every ``interval`` steps (ignored when ``schedule`` is given).
    force_guard
        A surrogate step whose largest force exceeds ``force_guard`` times the largest
        force of its reference frame (at least 10 eV/Å), or is not finite, is replaced by
        a reference call and counted in ``fallbacks``, with a warning.
    schedule
        Any :mod:`integrators` schedule, e.g. ``Threshold(tol=0.3, max_reuse=19)`` for a
        reference call once some atom may have moved 0.3 Å (an adaptive interval).
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Notes
    -----
    ``results`` holds ``energy``, ``free_energy`` and ``forces`` (eV, eV/Å), plus
    ``boostmd_source`` (``"reference"`` or ``"surrogate"``) and
    ``steps_since_reference``. ``stats`` counts reference (full) and surrogate (reuse)
    calls and the time spent in each.

    Examples
    --------
    >>> reference = MACEReference.from_file("reference.model")  # doctest: +SKIP
    >>> surrogate = Surrogate.load("surrogate.pt")  # doctest: +SKIP
    >>> atoms.calc = BoostMDCalculator(reference, surrogate, interval=10)  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "forces"]  # noqa: RUF012 (ASE API)

    def __init__(
        self,
        reference: MACEReference,
        surrogate: Surrogate,
        interval: int = 10,
        schedule=None,
        force_guard: float = 3.0,
        **kwargs,
    ) -> None:
        check_compatible(reference, surrogate)
        if not force_guard > 1:
            raise ValueError(f"force_guard must be > 1, got {force_guard!r}")
        self.force_guard = float(force_guard)
        self.fallbacks = 0
        super().__init__(**kwargs)
        self.reference = reference
        self.surrogate = surrogate.to(dtype=reference.dtype, device=reference.device).eval()
        self.schedule = schedule if schedule is not None else Periodic(interval)
        self.stats = CacheStats()
        self._frame: ReferenceFrame | None = None
        self._previous_positions: np.ndarray | None = None
        self._step = 0
        self._steps_since_reference = 0

    @classmethod
    def pretrained(
        cls,
        name: str = "dipeptides",
        interval: int = 10,
        schedule=None,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        **kwargs,
    ) -> BoostMDCalculator:
        """Build a calculator from a shipped reference and surrogate.

        Parameters
        ----------
        name
            ``"dipeptides"``: a MACE (96x0e+96x1o, 2 layers, 5 Å) trained on GFN2-xTB
            data of capped dipeptides, and its surrogate.
        interval, schedule
            As in the constructor.
        device, dtype
            Where and in which precision to run.
        **kwargs
            Passed to the constructor.

        Examples
        --------
        >>> from boostmd.peptides import capped_dipeptide  # doctest: +SKIP
        >>> atoms = capped_dipeptide("ALA")  # doctest: +SKIP
        >>> atoms.calc = BoostMDCalculator.pretrained("dipeptides", interval=10)  # doctest: +SKIP
        """
        from boostmd.pretrained import load_pretrained

        reference, surrogate = load_pretrained(name, device=device, dtype=dtype)
        return cls(reference, surrogate, interval=interval, schedule=schedule, **kwargs)

    def reset(self) -> None:
        """Clear results and the cached reference frame: the next call runs the reference."""
        super().reset()
        self._frame = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Compute energy and forces by the reference or the surrogate."""
        super().calculate(atoms, properties, system_changes)
        positions = self.atoms.positions
        if not np.isfinite(positions).all():
            bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
            raise ValueError(
                f"atoms {bad.tolist()} have NaN or infinite positions; the dynamics diverged "
                "or the structure is broken (check the timestep and the last frames)"
            )
        new_system = self._frame is None or bool(_NEW_SYSTEM & set(system_changes))
        if new_system:
            self.schedule.reset()
            self._step = 0
        elif "positions" in system_changes:
            self._step += 1
        indicator = None
        if not new_system:
            moved = positions - self._previous_positions
            indicator = float(np.sqrt((moved**2).sum(axis=1).max()))
        self._previous_positions = positions.copy()
        start = time.perf_counter()
        source = "full"
        if decide(self.schedule, self._step, indicator, force=new_system):
            energy, forces = self._reference_step()
        else:
            energy, forces = self._surrogate_step(positions)
            if self._guard_trips(forces):
                energy, forces = self._reference_step()
            else:
                source = "reuse"
        self.stats.record(source, time.perf_counter() - start)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "boostmd_source": "reference" if source == "full" else "surrogate",
            "steps_since_reference": self._steps_since_reference,
        }

    def _reference_step(self) -> tuple[float, np.ndarray]:
        atoms = self.atoms
        result = self.reference(atoms)
        edges = shifts = None
        if atoms.pbc.any():
            edge_index, image_shifts = radius_graph(
                atoms.positions, self.surrogate.config.cutoff, atoms.cell.array, atoms.pbc
            )
            edges = torch.as_tensor(edge_index, device=self.reference.device)
            shifts = torch.as_tensor(
                image_shifts, dtype=self.reference.dtype, device=self.reference.device
            )
        with torch.no_grad():
            self._frame = self.surrogate.prepare(
                atoms.numbers,
                result.node_features,
                atoms.positions,
                result.energy,
                result.forces,
                edge_index=edges,
                shifts=shifts,
            )
        self._steps_since_reference = 0
        forces = result.forces.cpu().numpy().astype(np.float64)
        self._reference_force_max = float(np.abs(forces).max())
        return float(result.energy), forces

    def _guard_trips(self, forces: np.ndarray) -> bool:
        limit = max(self.force_guard * self._reference_force_max, 10.0)
        largest = float(np.abs(forces).max()) if np.isfinite(forces).all() else np.inf
        if largest <= limit:
            return False
        self.fallbacks += 1
        logger.warning(
            "surrogate force %.3g eV/Å exceeds %.3g eV/Å %d steps after the reference "
            "frame; running the reference instead (fallback %d)",
            largest,
            limit,
            self._steps_since_reference,
            self.fallbacks,
        )
        return True

    def _surrogate_step(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        energy, forces = self.surrogate.energy_and_forces(self._frame, positions)
        self._steps_since_reference += 1
        return float(energy[0]), forces.cpu().numpy().astype(np.float64)
