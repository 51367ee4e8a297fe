"""Langevin dynamics at constant pressure: ASE's ``LangevinBAOAB`` with its barostat.

:func:`langevin_npt` sets up ASE's :class:`~ase.md.langevinbaoab.LangevinBAOAB` (BAOAB
Langevin for the atoms, a Langevin-Hoover barostat for the volume, hydrostatic: the cell
keeps its shape) in lab units. It samples the isothermal-isobaric ensemble with any
calculator that gives the stress, :class:`~boostmd.BoostMDCalculator` included; with
``tau_fs`` it adds the per-atom adaptive friction BoostMD samples right with at 1/ps
(:mod:`boostmd.dynamics.adaptive`). :class:`LangevinNPT` adds the friction interface of
ASE's ``Langevin`` (``fr``, ``set_friction``), through which a validation equilibrates
at one friction and samples at another, and the barostat's state, which a checkpoint
keeps.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms, units
from ase.md.langevinbaoab import LangevinBAOAB

from boostmd.dynamics.adaptive import AdaptiveFriction, check_tau

__all__ = ["BAROSTAT_TIME_PS", "LangevinNPT", "langevin_npt"]

BAROSTAT_TIME_PS = 1.0  # the barostat's time scale: the cell's friction is its inverse


class LangevinNPT(AdaptiveFriction, LangevinBAOAB):
    """ASE's ``LangevinBAOAB``, optionally with the per-atom adaptive friction.

    With ``tau`` (ASE time units) each step is wrapped in the adaptive friction's half
    steps, as :class:`~boostmd.dynamics.adaptive.AdaptiveLangevin` wraps ASE's Langevin
    step: each atom's ``xi`` (``self.xi``, inverse ASE time) settles where it cancels
    what slightly wrong forces pump into that atom. ``tau=None``: ASE's step as it is.
    The friction of the atoms can change between runs (``fr``, ``set_friction``, as
    ASE's ``Langevin``), and the barostat's state is exposed for checkpoints.
    """

    def __init__(self, atoms: Atoms, timestep: float, *, tau: float | None = None, **kwargs):
        temperature_K = kwargs["temperature_K"]
        self.tau = check_tau(tau, temperature_K)
        self.xi = np.zeros(len(atoms))
        if hasattr(atoms.calc, "adopt_timestep"):  # a BoostMDCalculator
            atoms.calc.adopt_timestep(timestep / units.fs)
            if self.tau is not None:
                atoms.calc.warn_pumping = False  # this friction absorbs it
        super().__init__(atoms, timestep, **kwargs)
        self.kinetic_target = np.full((len(atoms), 1), 3 * units.kB * temperature_K)
        self.inverse_mu = (
            np.zeros_like(self.kinetic_target)
            if self.tau is None
            else 1 / (self.kinetic_target * self.tau**2)
        )

    def step(self) -> None:
        """One step: half the adaptive friction's update, ASE's step, the other half."""
        if self.tau is None:
            return super().step()
        self._friction_half_step(first=True)
        super().step()
        self._friction_half_step(first=False)
        return None

    @property
    def fr(self) -> float:
        """The atoms' friction (ASE units: 1 / ASE time), the inverse of ``T_tau``."""
        return 1.0 / self.T_tau

    def set_friction(self, friction: float) -> None:
        """Set the atoms' friction (ASE units), keeping the temperature and the barostat."""
        self.T_tau = 1.0 / friction
        self.set_temperature(self.temperature_K)

    @property
    def barostat_state(self) -> np.ndarray:
        """The hydrostatic barostat's momentum and force, to checkpoint.

        The force is the one of the last step's middle (its kinetic part from the
        velocities before the last half kick), which a new integrator's set-up would
        compute from the velocities after it: a resumed run restores both.
        """
        return np.array([self.p_eps, self.force_eps], dtype=float)

    @barostat_state.setter
    def barostat_state(self, value: np.ndarray) -> None:
        self.p_eps, self.force_eps = (float(x) for x in value)


def langevin_npt(
    atoms: Atoms,
    temperature_K: float,
    pressure_GPa: float,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    rng: np.random.Generator | int | None = None,
    barostat_time_ps: float = BAROSTAT_TIME_PS,
    tau_fs: float | None = None,
) -> LangevinNPT:
    """Langevin dynamics at ``temperature_K`` and ``pressure_GPa``, the cell's shape kept.

    Parameters
    ----------
    atoms
        A system in a cell periodic along all three vectors, with a calculator that gives
        the stress.
    temperature_K, pressure_GPa
        The bath's temperature and pressure.
    timestep_fs
        Timestep in femtoseconds.
    friction_per_ps
        The atoms' friction in inverse picoseconds (as :func:`~boostmd.dynamics.md.langevin`'s).
    rng
        Generator or seed of the random forces.
    barostat_time_ps
        The barostat's time scale: the cell's friction is its inverse, and its mass
        ASE's heuristic for it.
    tau_fs
        Response time (fs) of the per-atom adaptive friction; ``None`` for none.
    """
    if not atoms.pbc.all() or atoms.cell.rank != 3:
        raise ValueError(
            "constant pressure needs a cell periodic along all three vectors "
            f"(pbc={atoms.pbc.tolist()}); set atoms.cell and atoms.pbc = True"
        )
    if friction_per_ps <= 0:
        raise ValueError(f"the friction must be positive, got {friction_per_ps} per ps")
    with warnings.catch_warnings():  # the barostat's mass is ASE's heuristic, by choice
        warnings.filterwarnings("ignore", message="Using heuristic P_mass")
        return LangevinNPT(
            atoms,
            timestep_fs * units.fs,
            temperature_K=temperature_K,
            externalstress=-pressure_GPa * units.GPa,  # ASE's stress: negative in compression
            hydrostatic=True,
            T_tau=1000 * units.fs / friction_per_ps,
            P_tau=1000 * units.fs * barostat_time_ps,
            rng=np.random.default_rng(rng),
            tau=None if tau_fs is None else tau_fs * units.fs,
        )
