"""BoostMDCalculator: an ASE calculator that alternates a reference MACE and a surrogate."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from boostmd.dynamics.calibration import CurvatureCalibration
from boostmd.dynamics.device_window import LangevinCoefficients, WindowPath
from boostmd.dynamics.model_calls import ModelCalls, SurrogateResult
from boostmd.dynamics.periodic import (
    MAX_FRAME_STRAIN,
    WRAP_ROUNDING,
    cell_strain,
    minimum_image,
    voigt_stress,
)
from boostmd.dynamics.summary import RunSummary
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate
from integrators import CacheStats, Periodic
from integrators.schedules import consult

__all__ = ["FRAMES", "BoostMDCalculator", "ReferenceCalculator", "WindowState", "check_compatible"]

logger = logging.getLogger(__name__)

# Changes after which the cached reference frame no longer describes the system.
_NEW_SYSTEM = {"numbers", "pbc"}  # and a cell strained beyond MAX_FRAME_STRAIN

# The last refreshes whose mean refresh energy error decides whether windows pump energy
# (warn_pumping), and how many must have ended before it is judged.
PUMPING_WINDOWS, PUMPING_MIN_WINDOWS = 50, 10

# Where a window's reference frame sits: at the window's first step, or at its time centre.
FRAMES = ("start", "centred")

# The window length the shipped surrogate was validated at (README, "Does BoostMD sample
# right?"); a fitted surrogate carries its own (Surrogate.recommended_interval). N = 20
# passes the standard validation and runs 12-14x faster than the reference, but shifts
# ALA's backbone population over 20 ps runs (docs/validation.md, "Longer windows shift
# ALA's torsions"), so it is an opt-in.
DEFAULT_INTERVAL = 10


def check_compatible(reference: MACEReference, surrogate: Surrogate) -> None:
    """Raise ``ValueError`` unless ``surrogate`` was made for ``reference``."""
    config = surrogate.config
    if config.reference_fingerprint != reference.fingerprint:
        raise ValueError(
            f"the surrogate was trained for reference model {config.reference_fingerprint}, "
            f"but this reference is {reference.fingerprint}; fit a surrogate for it "
            "(python -m boostmd.fit --reference REFERENCE --structure YOUR_STRUCTURE --out DIR) "
            "or load the reference it was made for"
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
    """The reference alone as an ASE calculator: energy, forces, stress in a bulk cell.

    The stress is computed for a cell periodic along all three vectors.
    ``results["node_features"]`` holds the invariant node features of the same pass.

    Parameters
    ----------
    reference
        The reference force field.
    calls
        How the model calls are made: one at a time (default), or gathered with other
        replicas' by a :class:`~boostmd.dynamics.replicas.ReplicaBatch`
        (:meth:`~boostmd.dynamics.replicas.ReplicaBatch.reference_calculator`).
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(self, reference: MACEReference, calls: ModelCalls | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reference = reference
        self._calls = calls if calls is not None else ModelCalls(reference)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Run one reference forward pass."""
        super().calculate(atoms, properties, system_changes)
        result = self._calls.reference(self.atoms)
        energy = float(result.energy)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": result.forces.cpu().numpy().astype(np.float64),
            "node_features": result.node_features.cpu().numpy(),
        }
        if result.stress is not None:
            self.results["stress"] = voigt_stress(result.stress)


@dataclass(frozen=True)
class FrameCell:
    """The cell of a window's frame in a bulk (three-way periodic) system.

    ``cell``: the cell the reference ran in; ``shifts_cell``: the cell the frame's image
    shifts are expressed in now (the current one, under a barostat); ``reference_stress``:
    the reference's stress at the frame (eV/Å³, (3, 3)); ``offset``: that minus the
    surrogate's own stress there, once a stress was asked for (``None`` before).
    """

    cell: np.ndarray
    shifts_cell: np.ndarray
    reference_stress: np.ndarray | None
    offset: np.ndarray | None = None


@dataclass(frozen=True)
class WindowState:
    """A snapshot of a :class:`BoostMDCalculator`'s window (see its ``window_state``).

    Everything that decides the calculator's next results: the cached reference frame,
    the step counters, a deep copy of the schedule, and ASE's cache (the atoms of the last
    calculation and its results). Counters of work done (``stats``, ``fallbacks``,
    ``refresh_errors``) are not part of it: they count what happened, rerun or not.
    """

    frame: ReferenceFrame | None
    previous_positions: np.ndarray | None
    step: int
    steps_since_reference: int
    reference_force_max: float
    schedule: Any
    atoms: Atoms | None
    results: dict[str, Any]
    frame_cell: FrameCell | None = None


def _check_frame(frame: str, timestep_fs, schedule, calibration) -> None:
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    if frame == "start":
        return
    if timestep_fs is not None:
        _check_timestep(timestep_fs)
    if not isinstance(schedule, Periodic):
        raise ValueError(
            "frame='centred' (the default) needs a fixed window length to find its centre: "
            f"use interval=N (a Periodic schedule), not {schedule!r}, or pass frame='start'"
        )
    if calibration:
        raise ValueError(
            "calibration fits windows framed at their start: pass frame='start' with it"
        )


def _check_timestep(timestep_fs) -> float:
    if not (
        isinstance(timestep_fs, (int, float)) and math.isfinite(timestep_fs) and timestep_fs > 0
    ):
        raise ValueError(
            "frame='centred' predicts each window's centre with the MD timestep: pass "
            f"timestep_fs (fs, > 0), got {timestep_fs!r}"
        )
    return float(timestep_fs)


def _copy_results(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in results.items()}


class BoostMDCalculator(Calculator):
    """Reference MACE on full steps, a feature-reusing surrogate in between.

    A *step* is a call with new positions; repeated property requests at the same
    positions (loggers, trajectory writers) do not advance it. The schedule decides at
    each step whether the reference runs. Its indicator is the largest atomic
    displacement (Å) since the previous step, so a
    :class:`~integrators.schedules.Threshold` accumulates an upper bound of the largest
    displacement since the reference frame. A change of atoms, cell or periodicity, or
    :meth:`reset`, forces a reference call.

    A **window** is a reference call and the surrogate steps that reuse its frame. The
    reference call that ends a window (the schedule's next full step, or a force-guard
    fallback) also reports the window's **refresh energy error** at its positions ``x``::

        dE = E_ref(x) - E_surrogate(x; frame of the ending window)

    and its **refresh force error**, the root mean square over all components of
    ``F_ref(x) - F_surrogate(x; frame of the ending window)`` (eV/Å): the surrogate's
    force error ``N`` steps from its frame on its own trajectory. They cost one extra
    surrogate evaluation (none for a fallback, whose surrogate result is already known).
    They go into ``results["refresh_energy_error"]`` and
    ``results["refresh_force_error"]`` on that call only (the keys are absent on every
    other call) and are appended to :attr:`refresh_errors` and
    :attr:`refresh_force_errors`. Reference calls forced by a change of system, by
    :meth:`reset` or inside :meth:`reference_only` end no window and report nothing.

    With ASE's own integrators this is a plain calculator; :class:`boostmd.BoostLangevin`
    uses ``refresh_energy_error`` to check each window and, with :meth:`window_state`,
    :meth:`restore_window_state` and :meth:`reference_only`, to rerun rejected windows
    with the reference.

    Parameters
    ----------
    reference
        The reference force field.
    surrogate
        A surrogate made for ``reference`` (its fingerprint is checked).
    interval
        Run the reference every ``interval`` steps (ignored when ``schedule`` is given).
        ``None`` (default): the interval stored with a surrogate made by
        ``python -m boostmd.fit`` (the longest at which its fit sampled right), else 10,
        the interval the shipped surrogate was validated at.
    force_guard
        A surrogate step whose largest force exceeds ``force_guard`` times the largest
        force of its reference frame (at least 10 eV/Å), or is not finite, is replaced by
        a reference call and counted in ``fallbacks``; the first fallback logs a warning
        with what to do, later ones a summary line at the 10th, 100th, ... only.
    schedule
        Any :mod:`integrators` schedule, e.g. ``Threshold(tol=0.3, max_reuse=19)`` for a
        reference call once some atom may have moved 0.3 Å, or
        ``ErrorControlled(tol=0.013, min_interval=2, max_interval=20)`` for the interval
        whose refresh energy error is 13 meV RMS on this system (the calculator reports
        every window's refresh energy error to a schedule that has ``report_error``).
    calibration
        ``True`` fits the scale of the surrogate's learned curvature term to the refresh
        energy errors as the run goes (:class:`~boostmd.dynamics.calibration.CurvatureCalibration`:
        fewer rerun windows and a refresh error with mean near zero on an unseen
        molecule, but one scale cannot correct errors that differ from bond to bond, and
        the validations of THR, ILE and GLN got worse with it); pass a saved one to
        continue its fit. Default ``False``: the surrogate as trained.
        ``curvature_scale`` is the scale in use.
    frame
        ``"centred"`` (default, the validated setting): the reference runs at the point
        the trajectory is predicted to reach at the window's time centre,
        ``interval // 2`` steps on (the middle of the window's steps and its refresh),
        and the whole window, its first step included,
        uses the surrogate expanded about that point. ``"start"``: the reference runs at
        the window's first step and the surrogate expands about it (needed for a schedule
        other than a fixed ``interval``, and for ``calibration``). A frame at the start
        makes each window's map expand phase space along every vibration the surrogate
        gets too soft (and contract along the too-stiff ones) at a rate proportional to
        the curvature error, which at low friction can break equipartition
        (``benchmarks/window_pumping.py``); a centred frame cancels that first-order term
        by symmetry. The prediction is velocity Verlet with the ending window's surrogate
        from the positions and momenta of the atoms (``interval // 2 + 2`` surrogate
        evaluations per window, the refresh errors' included, counted in the reference
        step's time). Needs
        a fixed ``interval`` and the timestep; the first window of a run (or after
        :meth:`reset` or a change of system) and force-guard fallbacks frame at the
        current positions.
    timestep_fs
        The MD timestep in fs, for ``frame="centred"``'s prediction. ``None``: set by
        :class:`~boostmd.BoostLangevin` or :class:`~boostmd.AdaptiveLangevin` from their
        own timestep; with another integrator pass it (the first centred window raises
        an error naming this if it is unknown).
    calls
        How the model calls are made: one at a time (default), or gathered with other
        replicas' into batched calls by a :class:`~boostmd.dynamics.replicas.ReplicaBatch`
        (:meth:`~boostmd.dynamics.replicas.ReplicaBatch.boostmd_calculator`); it must hold the
        same reference and surrogate.
    warn_pumping
        Log a warning, once, when the refresh energy errors of the last 50 windows (10
        at least) average significantly above zero (over 3 standard errors and 1 meV):
        the windows pump energy into the system, which ASE's own integrators keep (it
        heats, and can break bonds). An
        :class:`~boostmd.AdaptiveLangevin` (and so :class:`~boostmd.BoostLangevin`)
        with an adaptive friction absorbs it and turns the warning off.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Notes
    -----
    ``results`` holds ``energy``, ``free_energy`` and ``forces`` (eV, eV/Å), plus
    ``boostmd_source`` (``"reference"`` or ``"surrogate"``), ``boostmd_scheduled``
    (whether the schedule asked for the reference at this step; also inside
    :meth:`reference_only`, where it runs anyway), ``steps_since_reference``,
    ``curvature_scale`` (of the window the call belongs to; on a refresh, of the window it
    ends), on reference calls the reference's ``node_features`` (as in
    :class:`ReferenceCalculator`) and, on calls that end a window,
    ``refresh_energy_error`` (eV), ``refresh_force_error`` (eV/Å),
    ``frame_switch_energy`` (eV: this step's energy minus the ending window's surrogate
    energy at the same positions, the jump of the potential the trajectory feels; with
    start frames it equals the refresh energy error) and
    ``frame_switch_surrogate_forces`` (the ending window's surrogate forces at these
    positions, eV/Å), which :class:`~boostmd.BoostLangevin`'s energy-consistent refresh
    uses. ``stats`` counts
    every reference (full) and surrogate (reuse) call, reruns included, and the time
    spent in each (a full step's time includes its refresh-error evaluation).
    ``refresh_errors`` lists the refresh energy error (eV) of every window ended so far,
    in order, including windows an integrator later rejected; ``refresh_force_errors``
    their refresh force errors (eV/Å).

    With ``frame="centred"`` a scheduled reference call returns the surrogate's energy and
    forces at the current positions (expanded about the new, predicted frame): the
    reference's own energy at the frame is ``results["boostmd_reference_energy"]``, and
    the refresh errors are those of the ending window's surrogate at the new frame's
    positions (``refresh_frame_positions``), the reference's values there being known;
    ``frame_switch_energy`` is then the difference of the two surrogates at the current
    positions.

    Examples
    --------
    >>> reference = MACEReference.from_file("reference.model")  # doctest: +SKIP
    >>> surrogate = Surrogate.load("surrogate.pt")  # doctest: +SKIP
    >>> atoms.calc = BoostMDCalculator(reference, surrogate, interval=10)  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(
        self,
        reference: MACEReference,
        surrogate: Surrogate,
        interval: int | None = None,
        schedule=None,
        force_guard: float = 3.0,
        calibration: CurvatureCalibration | bool = False,
        frame: str = "centred",
        timestep_fs: float | None = None,
        calls: ModelCalls | None = None,
        warn_pumping: bool = True,
        **kwargs,
    ) -> None:
        check_compatible(reference, surrogate)
        if not force_guard > 1:
            raise ValueError(f"force_guard must be > 1, got {force_guard!r}")
        if schedule is None:
            interval = interval or surrogate.recommended_interval or DEFAULT_INTERVAL
            schedule = Periodic(interval)
        _check_frame(frame, timestep_fs, schedule, calibration)
        self.frame = frame
        self.timestep_fs = None if timestep_fs is None else float(timestep_fs)
        self._given_timestep_fs = self.timestep_fs
        self.force_guard = float(force_guard)
        self.fallbacks = 0
        super().__init__(**kwargs)
        self.reference = reference
        self.surrogate = surrogate.to(dtype=reference.dtype, device=reference.device).eval()
        if calls is None:
            calls = ModelCalls(reference, self.surrogate)
        elif calls.reference_model is not reference or calls.surrogate_model is not self.surrogate:
            raise ValueError(
                "calls must hold this calculator's reference and surrogate: build the "
                "calculator with ReplicaBatch.boostmd_calculator()"
            )
        self._calls = calls
        self.schedule = schedule
        self.stats = CacheStats()
        self.refresh_errors: list[float] = []
        self.refresh_force_errors: list[float] = []
        self._frame: ReferenceFrame | None = None
        self._previous_positions: np.ndarray | None = None
        self._last_results: dict[str, Any] | None = None  # the last step's, for a wrap
        self._frame_cell: FrameCell | None = None
        self._step = 0
        self._steps_since_reference = 0
        self._reference_force_max = 0.0
        self._reference_only = False
        if calibration is True:
            calibration = CurvatureCalibration()
        self.calibration: CurvatureCalibration | None = calibration or None
        self._clipped_scale_logged = False
        self.warn_pumping = bool(warn_pumping)
        # (refresh energy error, window length) of the last windows, for warn_pumping
        self._recent_errors: deque[tuple[float, int]] = deque(maxlen=PUMPING_WINDOWS)

    @property
    def curvature_scale(self) -> float:
        """The scale of the surrogate's learned curvature term used for the next window."""
        return 1.0 if self.calibration is None else self.calibration.scale

    @classmethod
    def pretrained(
        cls,
        name: str = "dipeptides",
        interval: int | None = None,
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
        >>> from boostmd.forcefields.peptides import capped_dipeptide  # doctest: +SKIP
        >>> atoms = capped_dipeptide("ALA")  # doctest: +SKIP
        >>> atoms.calc = BoostMDCalculator.pretrained("dipeptides")  # doctest: +SKIP
        """
        from boostmd.forcefields.pretrained import load_pretrained

        reference, surrogate = load_pretrained(name, device=device, dtype=dtype)
        return cls(reference, surrogate, interval=interval, schedule=schedule, **kwargs)

    def summary(self, steps: int | None = None) -> RunSummary:
        """Summarise the calls, fallbacks, refresh errors and implied speedup so far.

        Parameters
        ----------
        steps
            MD steps taken; default: every call with new positions (right for ASE's own
            integrators; :meth:`boostmd.BoostLangevin.summary` also counts its reruns).
        """
        return RunSummary.of(self, self.stats.total_steps if steps is None else steps)

    def adopt_timestep(self, timestep_fs: float) -> None:
        """Take the integrator's timestep (fs) for the centred frames' prediction.

        Called by :class:`~boostmd.AdaptiveLangevin` (and so :class:`~boostmd.BoostLangevin`).

        Raises
        ------
        ValueError
            If the calculator was built with another ``timestep_fs``.
        """
        timestep_fs = _check_timestep(timestep_fs)
        given = self._given_timestep_fs
        if given is not None and not math.isclose(given, timestep_fs):
            raise ValueError(
                f"the calculator predicts window centres with timestep_fs={given:g} "
                f"but the dynamics step {timestep_fs:g} fs: pass the same timestep to both"
            )
        self.timestep_fs = timestep_fs

    def reset(self) -> None:
        """Clear results and the cached reference frame: the next call runs the reference."""
        super().reset()
        self._frame = None
        self._last_results = None

    def window_state(self) -> WindowState:
        """Snapshot the window: restoring it makes the next calls give the same results.

        Returns
        -------
        WindowState
            Independent of the calculator (the schedule, atoms and results are copied;
            the reference frame is never modified in place, so it is shared).
        """
        return WindowState(
            frame=self._frame,
            previous_positions=(
                None if self._previous_positions is None else self._previous_positions.copy()
            ),
            step=self._step,
            steps_since_reference=self._steps_since_reference,
            reference_force_max=self._reference_force_max,
            schedule=copy.deepcopy(self.schedule),
            atoms=None if self.atoms is None else self.atoms.copy(),
            results=_copy_results(self.results),
            frame_cell=self._frame_cell,
        )

    def restore_window_state(self, state: WindowState) -> None:
        """Return to a :meth:`window_state` snapshot (which stays usable for another restore).

        ``schedule`` becomes a fresh copy of the snapshot's schedule. ``stats``,
        ``fallbacks`` and ``refresh_errors`` are left as they are.

        Parameters
        ----------
        state
            A snapshot taken from this calculator.
        """
        if not isinstance(state, WindowState):
            raise TypeError(f"expected a WindowState from window_state(), got {type(state)}")
        self._frame = state.frame
        self._previous_positions = (
            None if state.previous_positions is None else state.previous_positions.copy()
        )
        self._step = state.step
        self._steps_since_reference = state.steps_since_reference
        self._reference_force_max = state.reference_force_max
        self._frame_cell = state.frame_cell
        self.schedule = copy.deepcopy(state.schedule)
        self.atoms = None if state.atoms is None else state.atoms.copy()
        self.results = self._last_results = _copy_results(state.results)

    @contextmanager
    def reference_only(self) -> Iterator[None]:
        """Run the reference on every step inside the ``with`` block.

        The schedule is still consulted and told of each forced full step, so the step
        count goes on (a ``Periodic`` window after the block ends where it would have) and
        stateful schedules restart their count. The reference calls made here end no
        window and report no refresh energy error; they count in ``stats``.

        Examples
        --------
        >>> with calc.reference_only():  # doctest: +SKIP
        ...     dynamics.run(10)
        """
        previous = self._reference_only
        self._reference_only = True
        try:
            yield
        finally:
            self._reference_only = previous

    def scheduled_surrogate_steps(self) -> int:
        """Return how many of the next steps the schedule leaves to the surrogate.

        Known in advance only for a :class:`~integrators.Periodic` schedule inside a
        window (0 otherwise, and inside :meth:`reference_only`); the force guard can still
        end the window earlier. :class:`~boostmd.BoostLangevin` integrates that many steps
        at once on the models' device (:mod:`boostmd.dynamics.device_window`).
        """
        if self._frame is None or self._reference_only or not isinstance(self.schedule, Periodic):
            return 0
        every = self.schedule.every
        return every - 1 - self._step % every

    def surrogate_window(
        self,
        coefficients: LangevinCoefficients,
        positions: np.ndarray,
        momenta: np.ndarray,
        xi: np.ndarray,
        noise: np.ndarray,
    ) -> WindowPath:
        """Integrate Langevin steps with this window's surrogate on the models' device.

        From ``positions``, ``momenta`` and the per-atom adaptive friction ``xi`` (zeros
        without one), where the last call's forces apply, one step
        per ``(xi, eta)`` of ``noise`` (:func:`boostmd.dynamics.device_window.integrate_window`;
        through a :class:`~boostmd.dynamics.replicas.ReplicaBatch`, batched with the other
        replicas' windows). Changes nothing here: :meth:`record_surrogate_step` takes the
        steps. Atoms wrapped since the last step are integrated from where the surrogate
        expects them and returned in the images they were given in.
        """
        continued = self._continued(positions)
        path = self._calls.window(
            self._frame,
            self.curvature_scale,
            coefficients,
            continued,
            momenta,
            self.results["forces"],
            xi,
            noise,
        )
        offset = positions - continued  # whole cell vectors
        return replace(path, positions=path.positions + offset) if offset.any() else path

    def record_surrogate_step(
        self, atoms: Atoms, energy: float, forces: np.ndarray, seconds: float
    ) -> bool:
        """Take a surrogate step computed elsewhere as if :meth:`calculate` had made it.

        For the steps :meth:`scheduled_surrogate_steps` announced, computed by
        :meth:`surrogate_window`:
        the counters, the schedule's step and the results are then those of a
        ``calculate`` at ``atoms``. Returns False, and changes nothing, if the step is not
        a surrogate step there (the force guard trips, or the schedule wants the
        reference); ``calculate`` then decides that step.
        """
        limit_exceeded = self._force_beyond_guard(forces) is not None
        if limit_exceeded or self.scheduled_surrogate_steps() < 1:
            return False
        Calculator.calculate(self, atoms)  # ASE's cache: these atoms
        self._advance_step(self.atoms.positions, ("positions",))
        self._steps_since_reference += 1
        self.stats.record("reuse", seconds)
        self.results = self._last_results = self._step_results(energy, forces, "surrogate", False)
        return True

    def _advance_step(
        self, positions: np.ndarray, system_changes
    ) -> tuple[bool, float | None, np.ndarray]:
        """Count the step.

        Returns whether it is a new system, the largest displacement and the positions
        continued from the last step's (:meth:`_continued`).
        """
        if not np.isfinite(positions).all():
            bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
            raise ValueError(
                f"atoms {bad.tolist()} have NaN or infinite positions; the dynamics diverged "
                "or the structure is broken (check the timestep and the last frames)"
            )
        changes = set(system_changes)
        new_system = self._frame is None or bool(_NEW_SYSTEM & changes)
        new_system = new_system or ("cell" in changes and not self._follow_cell())
        if new_system:
            self.schedule.reset()
            self._step = 0
        elif "positions" in system_changes:
            self._step += 1
        indicator = None
        if not new_system:
            positions = self._continued(positions)
            moved = positions - self._previous_positions
            indicator = float(np.sqrt((moved**2).sum(axis=1).max()))
        self._previous_positions = positions.copy()
        return new_system, indicator, positions

    def _only_wrapped(self, system_changes) -> bool:
        """Whether the atoms were only wrapped into the cell since the last step."""
        if self._last_results is None or set(system_changes) - {"positions"}:
            return False
        if self._previous_positions is None or not self.atoms.pbc.any():
            return False
        moved = self._continued(self.atoms.positions) - self._previous_positions
        return bool(np.abs(moved).max() <= WRAP_ROUNDING)

    def _continued(self, positions: np.ndarray) -> np.ndarray:
        """``positions`` in the images the last step's atoms were in.

        In a periodic cell an atom wrapped back into the cell (``atoms.wrap()``, an
        integrator that wraps) jumps by a cell vector; the window's surrogate measures
        every displacement from its frame, so each atom is moved back by the whole cell
        vectors between it and its place at the last step (:func:`minimum_image`): the
        surrogate steps go on with the same forces, and no reference call is made.
        """
        if self._previous_positions is None or not self.atoms.pbc.any():
            return positions
        moved = positions - self._previous_positions
        return self._previous_positions + minimum_image(moved, self.atoms.cell, self.atoms.pbc)

    def _step_results(self, energy, forces, source: str, scheduled: bool) -> dict[str, Any]:
        return {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "boostmd_source": source,
            "boostmd_scheduled": scheduled,
            "steps_since_reference": self._steps_since_reference,
            "curvature_scale": self.curvature_scale,
        }

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Compute energy and forces by the reference or the surrogate."""
        super().calculate(atoms, properties, system_changes)
        if not system_changes and self._last_results is not None:
            self.results = self._last_results  # a property of this step asked for later
            self._add_stress(properties)
            return
        if self._only_wrapped(system_changes):
            self.results = self._last_results  # the same step: same energy and forces
            return
        new_system, indicator, positions = self._advance_step(self.atoms.positions, system_changes)
        start = time.perf_counter()
        scale = self.curvature_scale
        strain = self._strain_energy()  # the ending window's, part of its surrogate energy
        window_length = self._steps_since_reference + 1  # steps from the frame to here
        force = new_system or self._reference_only
        full, scheduled = consult(self.schedule, self._step, indicator, force=force)
        refresh = None  # (surrogate energy, surrogate forces, reference energy, forces)
        reference_energy = features = curvature = centre = switch = None
        source = "full"
        if full and self.frame == "centred" and not force:
            centre, ending, at_centre = self._predict_centre(positions, scale)
            ending = (ending[0] + strain, ending[1])
            at_centre = (at_centre[0] + strain, *at_centre[1:])
            refresh, curvature, features = self._centred_refresh(centre, at_centre)
            reference_energy = refresh[2]
            energy, forces = self._evaluate_surrogate(positions, scale)
            if self._guard_trips(forces):
                reference_energy = None
                energy, forces, features = self._reference_step()
            switch = (energy - ending[0], ending[1])
        elif full:
            surrogate = None
            if not force and self._steps_since_reference > 0:
                surrogate = self._surrogate_refresh(positions, scale)
                surrogate = (surrogate[0] + strain, *surrogate[1:])
                curvature = surrogate[2]
            energy, forces, features = self._reference_step()
            if surrogate is not None:
                refresh = (surrogate[0], surrogate[1], energy, forces)
                switch = (energy - surrogate[0], surrogate[1])
        else:
            energy, forces = self._surrogate_step(positions, scale)
            if self._guard_trips(forces):
                surrogate_energy, surrogate_forces = energy + strain, forces
                energy, forces, features = self._reference_step()
                refresh = (surrogate_energy, surrogate_forces, energy, forces)
                switch = (energy - surrogate_energy, surrogate_forces)
            else:
                source = "reuse"
        self.stats.record(source, time.perf_counter() - start)
        self.results = self._last_results = self._step_results(
            energy + self._strain_energy(),
            forces,
            "reference" if source == "full" else "surrogate",
            scheduled,
        )
        if features is not None:
            self.results["node_features"] = features
        if reference_energy is not None:
            self.results["boostmd_reference_energy"] = reference_energy
        if centre is not None:
            self.results["refresh_frame_positions"] = centre
        if switch is not None:
            self.results["frame_switch_energy"] = switch[0]
            self.results["frame_switch_surrogate_forces"] = switch[1]
        if refresh is not None:
            self._report_refresh(refresh, window_length, curvature, scale)
        self._add_stress(properties)

    # ------------------------------------------------------------ bulk cells, stress
    def _follow_cell(self) -> bool:
        """Take the frame into a strained cell; False if it is not bulk or strained too far.

        The frame's image shifts are whole cell vectors, so they are re-expressed in the
        new cell: within :data:`MAX_FRAME_STRAIN` of the frame's own cell the window goes
        on (a barostat's steps), else the reference frames it anew.
        """
        frame_cell, cell = self._frame_cell, self.atoms.cell.array
        if frame_cell is None:
            return False
        if np.abs(cell_strain(frame_cell.cell, cell)).max() > MAX_FRAME_STRAIN:
            return False
        self._frame = self._frame_in(cell)
        self._frame_cell = replace(frame_cell, shifts_cell=cell.copy())
        return True

    def _frame_in(self, cell: np.ndarray) -> ReferenceFrame:
        """Return the window's frame with its image shifts taken in ``cell``."""
        frame = self._frame
        change = np.linalg.solve(self._frame_cell.shifts_cell, cell)
        return replace(frame, shifts=frame.shifts @ torch.as_tensor(change).to(frame.shifts))

    def _strain_energy(self, cell: np.ndarray | None = None) -> float:
        """Return the energy of the frame's stress offset under the strain since the frame.

        ``cell``: the cell to strain to (default: the atoms').
        """
        frame_cell = self._frame_cell
        if frame_cell is None or frame_cell.offset is None:
            return 0.0
        cell = self.atoms.cell.array if cell is None else cell
        strain = cell_strain(frame_cell.cell, cell)
        return float(abs(np.linalg.det(frame_cell.cell)) * (frame_cell.offset * strain).sum())

    def _add_stress(self, properties) -> None:
        """Add this step's stress to the results if it was asked for.

        The surrogate's own stress (:meth:`Surrogate.stress`) plus a constant per window,
        the reference's stress minus the surrogate's at the frame: the pair forces that
        expand the surrogate about its frame reproduce the reference's forces there, not
        its virial. That constant's energy term (:meth:`_strain_energy`) is in the energy
        of every step after the first stress is asked for, so the stress stays the strain
        derivative of the energy.
        """
        if "stress" not in properties:
            return
        if self._frame_cell is None:
            raise PropertyNotImplementedError(
                "BoostMDCalculator gives the stress only for a cell periodic along all three "
                "vectors (atoms.pbc = True, a cell of nonzero volume)"
            )
        if self._frame_cell.offset is None:
            self._set_stress_offset()
            self.results["energy"] = self.results["free_energy"] = (
                self.results["energy"] + self._strain_energy()
            )
        frame_cell, cell = self._frame_cell, self.atoms.cell.array
        positions = self._previous_positions  # this step's, continued
        own = self.surrogate.stress(self._frame, positions, cell, self.curvature_scale)
        scale = abs(np.linalg.det(frame_cell.cell) / np.linalg.det(cell))
        self.results["stress"] = voigt_stress(own.cpu().numpy() + scale * frame_cell.offset)

    def follows(self, cell: np.ndarray) -> bool:
        """Whether this window's frame would follow the atoms into ``cell``.

        True for a bulk frame within ``MAX_FRAME_STRAIN`` of ``cell``; False with no
        frame, outside a bulk cell, or beyond that strain (the next call frames anew).
        """
        frame_cell = self._frame_cell
        if self._frame is None or frame_cell is None:
            return False
        return bool(np.abs(cell_strain(frame_cell.cell, cell)).max() <= MAX_FRAME_STRAIN)

    def relocate(self, positions: np.ndarray, cell: np.ndarray) -> float:
        """Move the atoms within this window, as a barostat's move does; return the energy.

        The window's surrogate is evaluated at ``positions`` in ``cell`` (its frame's image
        shifts taken into ``cell``), and the energy includes the frame's stress offset
        times the strain (:meth:`_strain_energy`), so its strain derivative is the
        reference's at the frame. The result becomes the calculator's current step, its
        results those of these positions, without counting a step: the schedule's window
        goes on where it was. The evaluation counts in ``stats`` as a surrogate call.
        Undo with :meth:`restore_window_state`.

        Parameters
        ----------
        positions
            New positions (Å), shape ``(n, 3)``.
        cell
            New cell (rows of cell vectors, Å), within ``MAX_FRAME_STRAIN`` of the
            frame's.

        Returns
        -------
        float
            The potential energy there (eV).

        Raises
        ------
        ValueError
            If no window is open (no reference call yet), the cell is not periodic along
            all three vectors, or ``cell`` is strained too far from the frame's.
        """
        if self._frame is None or self._frame_cell is None or self.atoms is None:
            raise ValueError(
                "relocate() moves atoms within a window of a bulk cell: call the calculator "
                "first, with a cell periodic along all three vectors"
            )
        if not self.follows(cell):
            raise ValueError(
                f"the cell is strained more than {MAX_FRAME_STRAIN} from the window's frame; "
                "take smaller volume moves"
            )
        start = time.perf_counter()
        if self._frame_cell.offset is None:
            self._set_stress_offset()
        atoms = self.atoms.copy()
        atoms.set_cell(cell, scale_atoms=False)
        atoms.positions = positions
        self._frame = self._frame_in(atoms.cell.array)
        self._frame_cell = replace(self._frame_cell, shifts_cell=atoms.cell.array.copy())
        continued = self._continued(atoms.positions)
        self.atoms = atoms
        energy, forces, _ = self._calls.surrogate(self._frame, continued, self.curvature_scale)
        self._previous_positions = continued
        energy += self._strain_energy()
        self.results = self._last_results = self._step_results(energy, forces, "surrogate", False)
        self.stats.record("reuse", time.perf_counter() - start)
        return energy

    def _set_stress_offset(self) -> None:
        frame_cell = self._frame_cell
        at_frame = self.surrogate.stress(
            self._frame_in(frame_cell.cell),
            self._frame.positions,
            frame_cell.cell,
            self.curvature_scale,
        )
        offset = frame_cell.reference_stress - at_frame.cpu().numpy()
        self._frame_cell = replace(frame_cell, offset=offset)

    def _report_refresh(
        self,
        refresh: tuple[float, np.ndarray, float, np.ndarray],
        window_length: int,
        curvature: float | None,
        scale: float,
    ) -> None:
        """Record a window's refresh errors from its surrogate and the reference there."""
        surrogate_energy, surrogate_forces, reference_energy, reference_forces = refresh
        error = reference_energy - surrogate_energy
        force_error = float(np.sqrt(np.mean((reference_forces - surrogate_forces) ** 2)))
        self.results["refresh_energy_error"] = error
        self.results["refresh_force_error"] = force_error
        self.refresh_errors.append(error)
        self.refresh_force_errors.append(force_error)
        self._watch_pumping(error, window_length)
        report_error = getattr(self.schedule, "report_error", None)
        if report_error is not None:
            report_error(error, window_length)
        if curvature is not None and self.calibration is not None:
            self._calibrate(error, curvature, scale)

    def _watch_pumping(self, error: float, window_length: int) -> None:
        """Warn once when the refresh energy errors say the windows heat the system.

        A surrogate too soft along its own trajectory shows a positive mean ``dE``; with
        start frames each ``dE`` is the jump of the potential that ASE's integrators keep
        in the total energy, and with centred frames it heats as well (README, "Which
        integrators sample right"). A mean over the last :data:`PUMPING_WINDOWS` windows
        (at least :data:`PUMPING_MIN_WINDOWS`) over 3 standard errors and 1 meV above zero
        is reported.
        """
        if not self.warn_pumping or not math.isfinite(error):
            return
        self._recent_errors.append((error, window_length))
        if len(self._recent_errors) < PUMPING_MIN_WINDOWS:
            return
        errors, lengths = np.array(self._recent_errors).T
        mean, standard_error = errors.mean(), errors.std(ddof=1) / math.sqrt(len(errors))
        if not (mean > 3 * standard_error and mean > 1e-3):
            return
        self.warn_pumping = False  # once
        steps = lengths.mean()
        heating = mean / steps / (1.5 * len(self.atoms) * units.kB)  # K per step
        per_ps = heating * 1000 / self.timestep_fs if self.timestep_fs else None
        logger.warning(
            "BoostMD's windows are pumping energy: the refresh energy error averaged %+.1f meV "
            "over the last %d refreshes (%.1f standard errors above zero; the surrogate is too "
            "soft along this trajectory), %s of heating that ASE's integrators keep. Use "
            "boostmd.BoostLangevin (checked windows and a per-atom adaptive friction that "
            "absorbs it) or boostmd.AdaptiveLangevin "
            "with this calculator; see the README, 'Which integrators sample right'",
            1000 * mean,
            len(errors),
            mean / standard_error if standard_error > 0 else math.inf,
            f"about {per_ps:.0f} K/ps" if per_ps else f"about {heating:.2f} K per step",
        )

    def _centred_refresh(
        self, centre: np.ndarray, at_centre: SurrogateResult
    ) -> tuple[tuple[float, np.ndarray, float, np.ndarray], float, np.ndarray]:
        """Frame the next window at ``centre``; the ending window's errors there.

        ``at_centre``: the ending window's surrogate result at ``centre``.
        """
        surrogate_energy, surrogate_forces, curvature = at_centre
        atoms = self.atoms.copy()
        atoms.positions = centre
        energy, forces, features = self._reference_step(atoms)
        return (surrogate_energy, surrogate_forces, energy, forces), curvature, features

    def _predict_centre(
        self, positions: np.ndarray, scale: float
    ) -> tuple[np.ndarray, SurrogateResult, SurrogateResult]:
        """Predict the next window's centre with the ending window's surrogate.

        The centre is where velocity Verlet with the current frame puts the atoms
        ``interval // 2`` steps on (the middle of the window's ``interval + 1`` surrogate
        evaluations, its refresh included). Returns it, the current frame's result here
        and its result at the centre (the last step's evaluation: ``interval // 2 + 1``
        evaluations in all).
        """
        if self.timestep_fs is None:
            raise ValueError(
                "frame='centred' (the default) predicts each window's centre with the MD "
                "timestep, which this calculator was not given: pass "
                "BoostMDCalculator(..., timestep_fs=...), run it under boostmd.BoostLangevin "
                "(which sets it), or pass frame='start'"
            )
        masses = self.atoms.get_masses()[:, None]
        velocities = self.atoms.get_momenta() / masses
        timestep = self.timestep_fs * units.fs
        x = positions.copy()
        here = latest = self._calls.surrogate(self._frame, x, scale)
        for _ in range(self.schedule.every // 2):
            velocities = velocities + 0.5 * timestep * latest[1] / masses
            x = x + timestep * velocities
            latest = self._calls.surrogate(self._frame, x, scale)
            velocities = velocities + 0.5 * timestep * latest[1] / masses
        return x, (here[0], here[1]), latest

    def _calibrate(self, error: float, curvature: float, scale: float) -> None:
        self.calibration.update(error, curvature, scale)
        fitted = self.calibration.unclipped_scale
        if fitted != self.calibration.scale and not self._clipped_scale_logged:
            self._clipped_scale_logged = True
            logger.warning(
                "the fitted curvature scale %.3g is outside %s and was clipped: the surrogate "
                "is far off on this system (train it on similar molecules)",
                fitted,
                self.calibration.bounds,
            )

    def _reference_step(self, atoms: Atoms | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        """Run the reference at ``atoms`` (default: the current ones) and frame there."""
        atoms = self.atoms if atoms is None else atoms
        result = self._calls.reference(atoms)
        self._frame = self._calls.frame(atoms, result)
        self._frame_cell = None
        if result.stress is not None:
            cell = atoms.cell.array.copy()
            self._frame_cell = FrameCell(cell, cell, result.stress.cpu().numpy())
        self._steps_since_reference = 0
        forces = result.forces.cpu().numpy().astype(np.float64)
        self._reference_force_max = float(np.abs(forces).max())
        return float(result.energy), forces, result.node_features.cpu().numpy()

    def _force_beyond_guard(self, forces: np.ndarray) -> tuple[float, float] | None:
        """Return the largest force and the guard's limit if it exceeds it, else None."""
        limit = max(self.force_guard * self._reference_force_max, 10.0)
        largest = float(np.abs(forces).max()) if np.isfinite(forces).all() else np.inf
        return None if largest <= limit else (largest, limit)

    def _guard_trips(self, forces: np.ndarray) -> bool:
        beyond = self._force_beyond_guard(forces)
        if beyond is None:
            return False
        largest, limit = beyond
        self.fallbacks += 1
        if self.fallbacks == 1:
            logger.warning(
                "surrogate force %.3g eV/Å exceeds %.3g eV/Å at step %d after the reference "
                "frame; running the reference instead (a force-guard fallback, one reference "
                "call each). Many fallbacks mean the surrogate is far off here: a run that "
                "heats (use boostmd.BoostLangevin) or a molecule unlike its training data. "
                "Further fallbacks are summarised at the 10th, 100th, ...; calc.fallbacks "
                "counts them",
                largest,
                limit,
                self._steps_since_reference,
            )
        elif math.log10(self.fallbacks).is_integer():
            logger.warning(
                "%d force-guard fallbacks so far (the latest: %.3g eV/Å against %.3g eV/Å, at "
                "step %d after the frame)",
                self.fallbacks,
                largest,
                limit,
                self._steps_since_reference,
            )
        return True

    def _surrogate_refresh(
        self, positions: np.ndarray, scale: float
    ) -> tuple[float, np.ndarray, float]:
        """Energy, forces and unscaled curvature term with the ending window's frame."""
        return self._calls.surrogate(self._frame, positions, scale)

    def _evaluate_surrogate(self, positions: np.ndarray, scale: float) -> tuple[float, np.ndarray]:
        energy, forces, _ = self._calls.surrogate(self._frame, positions, scale)
        return energy, forces

    def _surrogate_step(self, positions: np.ndarray, scale: float) -> tuple[float, np.ndarray]:
        self._steps_since_reference += 1
        return self._evaluate_surrogate(positions, scale)
