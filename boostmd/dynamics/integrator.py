"""BoostLangevin: Langevin dynamics whose BoostMD windows are checked and rerun when wrong."""

from __future__ import annotations

import copy
import logging
import math
import numbers
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from ase import Atoms, units

from boostmd.dynamics.adaptive import DEFAULT_TAU_FS, AdaptiveLangevin, check_rng
from boostmd.dynamics.barostat import DEFAULT_EVERY, MAX_VOLUME_STEP, MonteCarloBarostat
from boostmd.dynamics.calculator import BoostMDCalculator, WindowState
from boostmd.dynamics.device_window import LangevinCoefficients
from boostmd.dynamics.periodic import WRAP_ROUNDING, minimum_image
from boostmd.dynamics.summary import RunSummary

__all__ = ["TOLERANCE_ATOMS", "BoostLangevin", "size_factor"]

logger = logging.getLogger(__name__)

# The default tolerance holds up to this many atoms (the dipeptides it was chosen and
# validated on have 22-31); a larger system's windows sum the errors of its parts
# (size_factor).
TOLERANCE_ATOMS = 32

# With energy_consistent=True, an accepted refresh never leaves less than this fraction of
# the kinetic energy.
_MIN_KINETIC_FRACTION = 0.05

# The surrogate does not fit the system (warn_misfit) when, over the last FIT_WINDOWS
# windows, more than FIT_RERUN_FRACTION of them were rerun or ended by a force-guard
# fallback, or their refresh errors averaged more than FIT_MEAN_ERROR_KT kB T: the shipped
# surrogate's unseen dipeptides that pass the validation average 0.6-2.3 kB T and rerun
# 0-3% of windows; TRP, which samples its bonds too wide, 8 kB T and 29%.
FIT_WINDOWS, FIT_RERUN_FRACTION, FIT_MEAN_ERROR_KT = 50, 0.10, 4.0
FIT_COMMAND = (
    "python -m boostmd.fit --reference MODEL --structure YOUR_STRUCTURE --out DIR "
    "(MODEL: dipeptides, the shipped reference, or your reference's weights file)"
)


@dataclass(frozen=True)
class _StepState:
    """Everything the dynamics carries from one step to the next."""

    positions: np.ndarray
    momenta: np.ndarray
    xi: np.ndarray
    rng_state: Any
    calc_state: WindowState


def size_factor(atoms: int) -> float:
    """Return how the default window tolerance grows with the system size.

    ``max(1, sqrt(atoms / TOLERANCE_ATOMS))``, ``TOLERANCE_ATOMS = 32``.

    A window's refresh energy error sums over the system; for independent parts the
    random errors add in quadrature, so a fixed tolerance reruns more windows the larger
    the system (27 alanine dipeptides, 594 atoms: one window in seven over 10 kB T, each
    rerun N reference calls).
    """
    return max(1.0, math.sqrt(atoms / TOLERANCE_ATOMS))


def _rng_state(rng: Any) -> Any:
    if isinstance(rng, np.random.Generator):
        return copy.deepcopy(rng.bit_generator.state)
    return rng.get_state()


def _set_rng_state(rng: Any, state: Any) -> None:
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
    else:
        rng.set_state(state)


def _moved(state: _StepState, moved: np.ndarray) -> _StepState:
    """``state`` with its atoms moved by ``moved`` (whole cell vectors: a wrap)."""
    calc_state = state.calc_state
    atoms = None if calc_state.atoms is None else calc_state.atoms.copy()
    if atoms is not None:
        atoms.positions += moved
    previous = calc_state.previous_positions
    calc_state = replace(
        calc_state, atoms=atoms, previous_positions=None if previous is None else previous + moved
    )
    return replace(state, positions=state.positions + moved, calc_state=calc_state)


def _same(a: Any, b: Any) -> bool:
    """Equality of nested dicts, tuples and arrays (random generator states)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return (
            isinstance(b, (tuple, list))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


class BoostLangevin(AdaptiveLangevin):
    """Langevin dynamics with checked BoostMD windows and a per-atom adaptive friction.

    The step is ASE's :class:`~ase.md.langevin.Langevin` step (Vanden-Eijnden and
    Ciccotti, Eq. 23), driven by a :class:`~boostmd.dynamics.calculator.BoostMDCalculator`. A
    **window** runs from one reference call to the next (the calculator's schedule
    decides where it ends). The reference call that ends it measures the window's refresh
    energy error ``dE``; when ``|dE| > tolerance`` (or ``dE`` is not finite) the window
    is undone and run again with the reference on every step and the same random
    numbers, so the accepted trajectory of that window is exactly the reference's.

    Each step of Langevin dynamics (per atom, ASE's ``Langevin.step``)::

        v' = v_n + c1 F(x_n) / m - c2 v_n + c3 xi - c4 eta
        x_{n+1} = x_n + dt v' + c5 eta
        v_{n+1} = v' + c1 F(x_{n+1}) / m - c2 v' + c3 xi - c4 eta

        sigma = sqrt(2 kB T gamma / m)
        c1 = dt / 2 - dt^2 gamma / 8          c2 = dt gamma / 2 - dt^2 gamma^2 / 8
        c3 = sqrt(dt) sigma / 2 - dt^1.5 gamma sigma / 8
        c5 = dt^1.5 sigma / (2 sqrt(3))      c4 = gamma c5 / 2

    A window of ``N`` steps starting at step ``n0`` ends at the first reference call::

        dE = E_ref(x_{n0+N}) - E_sur(x_{n0+N}; frame of x_{n0})
        |dE| <= tol:  accept the N steps
        otherwise:    restore (x, p, rng, calculator) at n0, redo the N steps with
                      F = F_ref on every step; rollbacks += 1

    With ``energy_consistent=True``, each accepted refresh removes the jump in total
    energy. Within a window the step conserves ``E_sur + K`` (no drift, ``O(dt^2)``
    wobble); the next window starts from ``E_ref(x_N) + K(p_N)``, where ``p_N`` had its
    last half kick from ``F_ref(x_N)`` instead of ``F_sur(x_N)`` (``x_N``, ``p_N``: the
    state at the refresh, step ``n0 + N``)::

        dF = F_ref(x_N) - F_sur(x_N)
        p_sur = p_N - c1 dF                            the ending window's own momenta
        p_N <- p_sur + a dF,  K(p_sur + a dF) = K(p_sur) - dE,  root a nearest c1
        if no root: a = argmin K(p_sur + a dF), and the rest of dE by p_N <- s p_N

    so that ``E_ref + K`` just after the refresh equals ``E_sur + K_sur``, the energy
    the ending window conserved, and in NVE (``friction=0``) the reference's total energy
    at refresh points stays at its start up to the integrator's own ``O(dt^2)`` error.

    Why along ``dF``: a surrogate whose curvature along a vibration is a fraction ``eps``
    too soft makes each window's map expand phase space along it by about
    ``eps (1 - cos(omega N dt))`` (the surrogate's forces depend on the window's start),
    so that vibration heats exponentially; at friction 1/ps, ``eps`` of a few per mil is
    enough. The energy a window gains sits in the vibrations whose forces it got wrong, so
    it is taken back from them (``dF`` sums to zero, so momentum is kept), not from all
    atoms: rescaling every momentum instead cools the rest of the molecule while the
    pumped vibration keeps its energy. ``s`` is limited so that at least a fraction ``f``
    of ``K`` is kept (with a warning).
    ``F_sur(x_N)`` is the calculator's ``results["frame_switch_surrogate_forces"]``,
    evaluated with the ending window's frame for the refresh errors anyway. With constraints, or
    for a window ended by a force-guard fallback (the surrogate's forces there are
    wrong), ``dF = 0`` and only the rescaling is used.

    With a calculator whose frames are centred (``BoostMDCalculator(frame="centred")``),
    the window is checked with the refresh error at the new frame (the predicted centre
    of the next window, where the reference ran), and the energy-consistent refresh
    removes the jump of the surrogate potential at the current positions instead, along
    ``F_sur,new(x_N) - F_sur,ending(x_N)``: the energy a trajectory conserves then
    carries on across windows. Both cases are the calculator's ``frame_switch_energy``
    and ``frame_switch_surrogate_forces``.

    ===========  ==============================  ==============================================
    symbol       variable                        meaning
    ===========  ==============================  ==============================================
    x, p, v      ``atoms.positions``, momenta    positions (Å), momenta, velocities p / m
    F            ``atoms.get_forces(md=True)``   forces (eV/Å) of the step's model
    m            ``self.masses``                 atomic masses (amu)
    dt           ``self.dt``                     timestep (ASE time units)
    gamma        ``self.fr``                     friction (1 / ASE time units)
    kB T         ``self.temp``                   bath temperature (eV)
    xi, eta      ``self.rng.standard_normal``    two (natoms, 3) normal draws per step
    c1 ... c5    ``self.c1`` ... ``self.c5``     step coefficients
    N            window length                   steps to the calculator's next reference call
    dE           ``refresh_energy_error``        refresh energy error of the window (eV)
    tol          ``self.tolerance``              largest accepted ``|dE|`` (eV)
    K, K_sur     ``atoms.get_kinetic_energy()``  kinetic energy; the ending window's own (eV)
    dF, a, s     force error, its step, scale   the refresh's momentum correction
    f            ``_MIN_KINETIC_FRACTION``       least kept fraction of ``K`` at a refresh
    ===========  ==============================  ==============================================

    Observers, loggers and trajectory writers attached with :meth:`attach` see only
    accepted steps, one per step: at the first step of a window the whole window is
    integrated ahead (and rerun if rejected), and each :meth:`step` then installs the
    next accepted state (positions, momenta, the generator's state after that step and
    the calculator's window state with its results for those positions), so property
    reads by observers cost no model call. A run that ends inside a window leaves the
    rest of the window for the next :meth:`run`; between steps, positions, momenta and
    the generator's state are those of the step shown, so a run resumed from them is
    deterministic. Changing positions, momenta, the generator's state or the calculator
    between steps drops the integrated-ahead steps, and integration goes on from what
    was set.

    Differences from ASE's ``Langevin`` with the same calculator and seed: none, bit
    for bit, as long as no window is rolled back and ``energy_consistent`` is off (with
    ``device_windows`` too, on a CPU; on a GPU their kernels can round differently). A
    rolled-back window follows the reference's forces instead of the surrogate's (same
    random numbers), so the trajectory differs from that window on; ``energy_consistent``
    rescales the momenta at every accepted refresh. The calculator runs ahead of the
    observers: at a given step its ``stats`` and ``refresh_errors`` already count the
    rest of the window, and they count rejected windows too (their surrogate and
    reference calls in ``stats``, their ``dE`` in ``refresh_errors``).

    Parameters
    ----------
    atoms
        The system; ``atoms.calc`` must be a :class:`~boostmd.BoostMDCalculator`.
    timestep
        Timestep in ASE time units (``1 * ase.units.fs``).
    temperature_K
        Bath temperature in K.
    friction
        Friction in inverse ASE time units (``0.01 / ase.units.fs`` is 10 ps⁻¹); ``0``
        gives NVE dynamics with checked windows.
    tolerance
        Largest accepted ``|dE|`` in eV; ``None`` means ``10 kB T`` at ``temperature_K``
        with the adaptive friction (which absorbs what moderately wrong windows pump, so
        reruns are kept for windows far off: on unseen THR with the shipped surrogate, 13%
        of windows exceed 3 kB T and rerunning them costs 3x the reference calls) and
        ``3 kB T`` without it (``tau=None``), times :func:`size_factor` of the atom count
        (1 up to 32 atoms, the molecules these were chosen on; beyond, the square root of
        the atoms over 32, as the errors of independent parts add up);
        ``temperature_K`` must then be positive.
        ``math.inf`` accepts every finite ``dE``. Fixed at construction
        (``set_temperature`` does not change it).
    energy_consistent
        Remove each accepted ``dE`` from the kinetic energy (see above); on by default,
        as in the validation. ``False`` leaves the momenta as the window ended them.
    fixcm
        As in ASE's ``Langevin`` (deprecated there; prefer ``ase.constraints.FixCom``).
    rng
        A :class:`numpy.random.Generator`, a ``RandomState``, a seed, or ``None`` for a
        fresh ``numpy.random.default_rng()`` (not ASE's global ``numpy.random``). Its
        state is saved and restored to rerun windows.
    device_windows
        Integrate the surrogate steps a window's schedule announces
        (:meth:`~boostmd.dynamics.calculator.BoostMDCalculator.scheduled_surrogate_steps`: a
        ``Periodic`` schedule) all at once on the models' device
        (:func:`boostmd.dynamics.device_window.integrate_window`: the positions stay there, a CUDA
        graph replays each step, one copy back per window) instead of one ASE step at a
        time. The same steps with the same random numbers: on a CPU the trajectory is
        the same bit for bit (tested). Not used with constraints or ``fixcm``; a step
        where the force guard trips is left to the ASE step.
    pressure
        ``None`` (default): constant volume. Else the bath's pressure in ASE units (eV/Å³,
        ``1 * ase.units.GPa`` is 1 GPa): every ``barostat_every`` steps, at the start of
        the next window, a Monte Carlo volume move scales the cell and the molecules'
        centres (:class:`~boostmd.dynamics.barostat.MonteCarloBarostat`), judged with the
        window's surrogate energy and the frame's stress offset (two surrogate
        evaluations, no reference call). Needs a cell periodic along all three vectors
        and ``temperature_K > 0``.
    barostat_every
        Steps between volume moves (default 25, OpenMM's).
    **kwargs
        Passed to :class:`ase.md.md.MolecularDynamics` (``trajectory``, ``logfile``,
        ``loginterval``).

    Attributes
    ----------
    windows
        Finished windows that held surrogate steps (each was checked).
    rollbacks
        Windows rejected and rerun with the reference.
    barostat
        The :class:`~boostmd.dynamics.barostat.MonteCarloBarostat` (``None`` at constant
        volume): ``attempts``, ``accepted``, ``volume_step``.
    warn_misfit
        Log a warning, once, when the last 50 windows show that the surrogate does not fit
        the system (over 10% rerun, or a mean refresh error over 4 kB T), with the figures
        and the command that fits a surrogate to it (``python -m boostmd.fit``); set it
        to False to silence it.

    Examples
    --------
    >>> atoms.calc = BoostMDCalculator.pretrained("dipeptides")  # doctest: +SKIP
    >>> dyn = BoostLangevin(atoms, 1 * units.fs, 300, 0.001 / units.fs, rng=0)  # doctest: +SKIP
    >>> dyn.run(1000)  # doctest: +SKIP
    >>> dyn.rollbacks / dyn.windows  # doctest: +SKIP
    """

    def __init__(
        self,
        atoms: Atoms,
        timestep: float,
        temperature_K: float,
        friction: float,
        *,
        tolerance: float | None = None,
        energy_consistent: bool = True,
        tau: float | None = DEFAULT_TAU_FS * units.fs,
        fixcm: bool = False,
        rng: Any = None,
        device_windows: bool = True,
        pressure: float | None = None,
        barostat_every: int = DEFAULT_EVERY,
        **kwargs: Any,
    ) -> None:
        self._check_calculator(atoms)
        if not (isinstance(temperature_K, numbers.Real) and temperature_K >= 0):
            raise ValueError(f"temperature_K must be a number >= 0, got {temperature_K!r}")
        if not (isinstance(friction, numbers.Real) and friction >= 0):
            raise ValueError(f"friction must be a number >= 0, got {friction!r}")
        if tolerance is None:
            if temperature_K == 0:
                raise ValueError(
                    "tolerance=None means a multiple of kB T, which is 0 at temperature_K=0 "
                    "(every window would be rerun); give the tolerance in eV"
                )
            kT = units.kB * temperature_K
            tolerance = (3 if tau is None else 10) * kT * size_factor(len(atoms))
        if isinstance(tolerance, bool) or not (
            isinstance(tolerance, numbers.Real) and tolerance >= 0
        ):
            raise ValueError(f"tolerance must be a number of eV >= 0, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.energy_consistent = bool(energy_consistent)
        self.device_windows = bool(device_windows)
        self.barostat = (
            None
            if pressure is None
            else MonteCarloBarostat(atoms, pressure, temperature_K, every=barostat_every)
        )
        self.windows = 0
        self.rollbacks = 0
        self.warn_misfit = True
        # (rerun or fallback, dE) of the last windows, for warn_misfit
        self._recent_windows: deque[tuple[bool, float]] = deque(maxlen=FIT_WINDOWS)
        self._pending: deque[_StepState] = deque()
        self._shown: _StepState | None = None
        self._shown_results: dict[str, Any] | None = None
        super().__init__(
            atoms,
            timestep,
            temperature_K,
            friction,
            tau=tau,
            fixcm=fixcm,
            rng=check_rng(rng),
            **kwargs,
        )

    def todict(self) -> dict[str, Any]:
        """ASE's Langevin description plus the window check's settings."""
        return {
            **super().todict(),
            "tolerance": self.tolerance,
            "energy_consistent": self.energy_consistent,
            "device_windows": self.device_windows,
            "pressure": None if self.barostat is None else self.barostat.pressure,
        }

    def updatevars(self) -> None:
        """Recompute the step coefficients and drop steps integrated with the old ones."""
        super().updatevars()
        self._pending = deque()

    def step(self, forces: np.ndarray | None = None) -> np.ndarray:
        """Advance one accepted step; integrate (and check) the next window when needed.

        Parameters
        ----------
        forces
            Not supported (the forces come from the calculator); must be ``None``.

        Returns
        -------
        numpy.ndarray
            The forces at the new positions.
        """
        if forces is not None:
            raise ValueError("BoostLangevin.step() computes its own forces; do not pass forces")
        calc = self._check_calculator(self.atoms)
        if not (self._pending and self._unchanged(calc)):
            self._pending = deque(self._integrate_window(calc))
        state = self._pending.popleft()
        self._install(state, calc)
        self._shown = state
        self._shown_results = calc.results
        if self.atoms.constraints:
            return self.atoms.get_forces(md=True)
        return calc.results["forces"].copy()

    # ----------------------------------------------------------------- internals
    @staticmethod
    def _check_calculator(atoms: Atoms) -> BoostMDCalculator:
        calc = atoms.calc
        if not isinstance(calc, BoostMDCalculator):
            raise TypeError(
                "BoostLangevin needs atoms.calc to be a BoostMDCalculator (it checks and "
                f"reruns its windows), got {type(calc).__name__}; use ase.md.langevin.Langevin "
                "for other calculators"
            )
        return calc

    def _snapshot(self, calc: BoostMDCalculator) -> _StepState:
        return _StepState(
            positions=self.atoms.get_positions(),
            momenta=self.atoms.get_momenta(),
            xi=self.xi.copy(),
            rng_state=_rng_state(self.rng),
            calc_state=calc.window_state(),
        )

    def _install(self, state: _StepState, calc: BoostMDCalculator) -> None:
        self.atoms.set_positions(state.positions, apply_constraint=False)
        self.atoms.set_momenta(state.momenta, apply_constraint=False)
        self.xi = state.xi.copy()
        _set_rng_state(self.rng, state.rng_state)
        calc.restore_window_state(state.calc_state)

    def _unchanged(self, calc: BoostMDCalculator) -> bool:
        """Whether the system is still as the last step left it (else drop the look-ahead).

        Atoms wrapped into the cell since count as unchanged (:meth:`_follow_wrap`).
        """
        shown = self._shown
        if shown is None or calc.results is not self._shown_results:
            return False  # the calculator ran or was reset since
        atoms, before = self.atoms, shown.calc_state.atoms
        same = (
            np.array_equal(atoms.get_momenta(), shown.momenta)
            and np.array_equal(self.xi, shown.xi)
            and np.array_equal(atoms.numbers, before.numbers)
            and np.array_equal(atoms.cell.array, before.cell.array)
            and np.array_equal(atoms.pbc, before.pbc)
            and _same(_rng_state(self.rng), shown.rng_state)
        )
        if not same:
            return False
        return np.array_equal(atoms.positions, shown.positions) or self._follow_wrap(shown)

    def _follow_wrap(self, shown: _StepState) -> bool:
        """Move the look-ahead into the images atoms were wrapped to since ``shown``.

        Returns False (drop the look-ahead) unless the positions moved by whole cell
        vectors only (``atoms.wrap()``, to rounding); then every pending state, its
        calculator snapshot included, moves with them, so the window goes on with no new
        reference call and the atoms stay in the images they were put in.
        """
        atoms = self.atoms
        moved = atoms.positions - shown.positions
        if not atoms.pbc.any():
            return False
        if np.abs(minimum_image(moved, atoms.cell.array, atoms.pbc)).max() > WRAP_ROUNDING:
            return False
        self._pending = deque(_moved(state, moved) for state in self._pending)
        return True

    def _integrate_window(self, calc: BoostMDCalculator) -> list[_StepState]:
        """Integrate to the calculator's next reference call; rerun the window if rejected."""
        self.atoms.get_forces(md=True)  # the start's results (cached unless just changed)
        if self.barostat is not None and self.barostat.due(self.nsteps):
            self._volume_move(calc)
        start = self._snapshot(calc)
        fallbacks = calc.fallbacks
        states = self._device_steps(calc)
        while True:
            super().step()
            states.append(self._snapshot(calc))
            if calc.results["boostmd_source"] == "reference":
                break
        error = calc.results.get("refresh_energy_error")
        if error is None:  # no surrogate step in this window: nothing to check
            return states
        self.windows += 1
        rejected = not abs(error) <= self.tolerance
        self._watch_fit(rejected or calc.fallbacks > fallbacks, error, calc)
        if rejected:
            self.rollbacks += 1
            logger.debug(
                "window of %d steps rejected (dE = %.3g eV, tolerance %.3g eV); rerunning "
                "it with the reference (rollback %d of %d windows)",
                len(states),
                error,
                self.tolerance,
                self.rollbacks,
                self.windows,
            )
            self._install(start, calc)
            rerun = []
            with calc.reference_only():
                for _ in states:
                    super().step()
                    rerun.append(self._snapshot(calc))
            return rerun
        if self.energy_consistent:
            jump = calc.results["frame_switch_energy"]  # dE itself with start frames
            self._remove_from_kinetic_energy(jump, calc, calc.fallbacks == fallbacks)
            states[-1] = self._snapshot(calc)
        return states

    def _volume_move(self, calc: BoostMDCalculator) -> None:
        """Try one Monte Carlo volume move (:mod:`boostmd.dynamics.barostat`).

        Both energies are the window's (:meth:`BoostMDCalculator.relocate`); a rejected
        move restores the atoms and the calculator as they were. A window whose frame
        cannot follow the largest move (a window longer than ``barostat_every`` that
        already holds one) leaves the move to the next window.
        """
        atoms, barostat = self.atoms, self.barostat
        positions, cell = atoms.get_positions(), atoms.cell.array.copy()
        extremes = ((1 + sign * MAX_VOLUME_STEP) ** (1 / 3) for sign in (1, -1))
        if not all(calc.follows(cell * factor) for factor in extremes):
            return
        before = calc.window_state()
        trial_positions, trial_cell, volume_change = barostat.propose(atoms, self.rng)
        energy = calc.relocate(positions, cell)
        trial_energy = calc.relocate(trial_positions, trial_cell)
        volume = abs(np.linalg.det(cell))
        if barostat.accept(trial_energy - energy, volume, volume_change, self.rng, self.nsteps):
            atoms.set_cell(trial_cell, scale_atoms=False)
            atoms.set_positions(trial_positions, apply_constraint=False)
        else:
            calc.restore_window_state(before)

    @property
    def barostat_state(self) -> np.ndarray:
        """The Monte Carlo barostat's state, to checkpoint (empty without a barostat)."""
        return np.zeros(0) if self.barostat is None else self.barostat.state

    @barostat_state.setter
    def barostat_state(self, value: np.ndarray) -> None:
        if self.barostat is None:
            raise ValueError("this BoostLangevin has no barostat (pass pressure=...)")
        self.barostat.state = value

    def summary(self) -> RunSummary:
        """Summarise the run's calls, reruns, refresh errors and implied speedup so far.

        Returns
        -------
        RunSummary
            ``print(dyn.summary())`` for one line; ``.as_dict()`` for JSON.
        """
        calc = self._check_calculator(self.atoms)
        return RunSummary.of(calc, self.nsteps, windows_rerun=self.rollbacks)

    def _watch_fit(self, bad: bool, error: float, calc: BoostMDCalculator) -> None:
        """Warn once when the last windows show that the surrogate does not fit the system.

        Over the last :data:`FIT_WINDOWS` windows: more than :data:`FIT_RERUN_FRACTION`
        rerun (or ended by a force-guard fallback), or a mean refresh error above
        :data:`FIT_MEAN_ERROR_KT` kB T. Such a run pays little (each rerun costs a window of
        reference calls) or samples wrong (a surrogate off on this system can keep every
        kinetic temperature right and still spread the bonds too wide).
        """
        if not self.warn_misfit:
            return
        self._recent_windows.append((bad, error if math.isfinite(error) else math.nan))
        if len(self._recent_windows) < FIT_WINDOWS:
            return
        flags, errors = np.array(self._recent_windows, dtype=float).T
        rerun, mean = flags.mean(), float(np.nanmean(errors)) if np.isfinite(errors).any() else 0
        kT = float(np.max(self.temp))
        if not (rerun > FIT_RERUN_FRACTION or (kT > 0 and abs(mean) > FIT_MEAN_ERROR_KT * kT)):
            return
        self.warn_misfit = False  # once
        summary = RunSummary.of(calc, calc.stats.total_steps, windows_rerun=self.rollbacks)
        logger.warning(
            "the surrogate does not fit this system: over the last %d windows %.0f%% were "
            "rerun with the reference or ended by a force-guard fallback, and the refresh "
            "energy error dE averaged %+.0f meV (%.1f kB T; RMS %.0f meV over the run). "
            "So far %.2f reference calls per step, an implied %.1fx speedup. Such a run pays "
            "little or samples wrong (bonds too wide with right temperatures). Fit a "
            "surrogate to it: %s, then pass DIR/surrogate.pt. dyn.summary() gives these "
            "figures",
            len(flags),
            100 * rerun,
            1000 * mean,
            mean / kT if kT > 0 else math.nan,
            summary.refresh_error_rms_meV,
            summary.reference_calls_per_step,
            summary.implied_speedup,
            FIT_COMMAND,
        )

    def _device_steps(self, calc: BoostMDCalculator) -> list[_StepState]:
        """Integrate the window's announced surrogate steps on the models' device."""
        count = calc.scheduled_surrogate_steps() if self.device_windows else 0
        atoms = self.atoms
        if count < 1 or atoms.constraints or self.fix_com:
            return []
        shape = (len(atoms), 3)
        before = _rng_state(self.rng)
        noise = np.empty((count, 2, *shape))
        after = []  # the generator's state after each step's draws
        for k in range(count):  # ASE's draws, in ASE's order: xi, then eta, per step
            noise[k, 0] = self.rng.standard_normal(size=shape)
            noise[k, 1] = self.rng.standard_normal(size=shape)
            after.append(_rng_state(self.rng))
        _set_rng_state(self.rng, before)
        positions, momenta, xi = atoms.get_positions(), atoms.get_momenta(), self.xi
        started = time.perf_counter()
        path = calc.surrogate_window(LangevinCoefficients.of(self), positions, momenta, xi, noise)
        seconds = (time.perf_counter() - started) / count
        states: list[_StepState] = []
        for k in range(count):
            atoms.set_positions(path.positions[k], apply_constraint=False)
            atoms.set_momenta(path.momenta[k], apply_constraint=False)
            energy, forces = float(path.energies[k, 0]), path.forces[k]
            if not calc.record_surrogate_step(atoms, energy, forces, seconds):
                # not a surrogate step after all (the force guard): ASE's step takes it
                atoms.set_positions(positions, apply_constraint=False)
                atoms.set_momenta(momenta, apply_constraint=False)
                self.xi = xi
                break
            positions, momenta, xi = path.positions[k], path.momenta[k], path.xi[k]
            self.xi = xi
            _set_rng_state(self.rng, after[k])
            states.append(self._snapshot(calc))
        return states

    def _surrogate_momenta(
        self, calc: BoostMDCalculator, scheduled: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``p_sur`` (the ending window's own momenta) and the force error at the refresh.

        The force error ``F_ref(x_N) - F_sur(x_N)`` (``F_sur`` as the calculator evaluated
        it at the refresh) is zero (and ``p_sur = p_N``) with constraints or when the
        window ended by a force-guard fallback (``scheduled`` False).
        """
        atoms = self.atoms
        momenta = atoms.get_momenta()
        if not scheduled or atoms.constraints:
            return momenta, np.zeros_like(momenta)
        error = calc.results["forces"] - calc.results["frame_switch_surrogate_forces"]
        if not np.isfinite(error).all():
            return momenta, np.zeros_like(momenta)
        return momenta - self.c1 * error, error

    def _remove_from_kinetic_energy(
        self, error: float, calc: BoostMDCalculator, scheduled: bool
    ) -> None:
        """Set the momenta so that ``E_ref + K`` equals the ending window's energy.

        First along the force error (``p = p_sur + a dF``, the root ``a`` nearest the
        step's own ``c1``), then, for what that direction cannot take, by rescaling.
        """
        masses = self.masses
        momenta, force_error = self._surrogate_momenta(calc, scheduled)
        half_norm = 0.5 * float((force_error**2 / masses).sum())
        overlap = float((momenta * force_error / masses).sum())
        remaining = error
        if half_norm > 0:
            discriminant = overlap * overlap - 4 * half_norm * error
            if discriminant >= 0:
                roots = [
                    (-overlap + sign * math.sqrt(discriminant)) / (2 * half_norm)
                    for sign in (1, -1)
                ]
                step = min(roots, key=lambda root: abs(root - self.c1))
                remaining = 0.0
            else:  # take the most this direction can give: -overlap^2 / (4 half_norm)
                step = -overlap / (2 * half_norm)
                remaining = error - overlap * overlap / (4 * half_norm)
            momenta = momenta + step * force_error
        kinetic = 0.5 * float((momenta**2 / masses).sum())
        if remaining and kinetic > 0:
            target = kinetic - remaining
            if target < _MIN_KINETIC_FRACTION * kinetic:
                logger.warning(
                    "removing the refresh energy error %.3g eV would leave less than %.0f%% of "
                    "the kinetic energy %.3g eV; keeping %.0f%% (energy is not conserved at "
                    "this refresh)",
                    error,
                    100 * _MIN_KINETIC_FRACTION,
                    kinetic,
                    100 * _MIN_KINETIC_FRACTION,
                )
                target = _MIN_KINETIC_FRACTION * kinetic
            momenta = momenta * math.sqrt(target / kinetic)
        elif remaining:
            logger.warning("no kinetic energy to take the refresh energy error %.3g eV from", error)
        self.atoms.set_momenta(momenta, apply_constraint=False)
