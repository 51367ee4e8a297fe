"""Langevin dynamics set up in lab units, one place for the unit conversions."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin

from boostmd.dynamics.adaptive import DEFAULT_TAU_FS, AdaptiveLangevin
from boostmd.dynamics.barostat import DEFAULT_EVERY
from boostmd.dynamics.integrator import BoostLangevin
from integrators.schedules import ErrorControlled, Periodic

__all__ = [
    "ase_units",
    "boost_langevin",
    "group_temperatures",
    "kinetic_temperatures",
    "langevin",
    "thermal_momenta",
    "window_schedule",
]


def thermal_momenta(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Draw Maxwell-Boltzmann momenta at ``temperature_K`` from ``rng`` (in place).

    ASE 3.29 renamed ``MaxwellBoltzmannDistribution`` to ``thermalize_momenta`` and warns
    on the old name; both draw the same numbers. Older ASE has only the old name.
    """
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    else:
        thermalize_momenta(atoms, temperature_K, rng=rng)


def kinetic_temperatures(atoms: Atoms, groups) -> tuple[float, ...]:
    """Kinetic temperature (K) of each group of atoms (boolean masks; ``nan`` if empty)."""
    kinetic = 0.5 * (atoms.get_momenta() ** 2).sum(axis=1) / atoms.get_masses()
    return tuple(
        float(kinetic[group].mean() / (1.5 * units.kB)) if group.any() else float("nan")
        for group in groups
    )


def group_temperatures(atoms: Atoms) -> tuple[float, float]:
    """Kinetic temperature (K) of the hydrogens and of the heavy atoms (``nan`` if none)."""
    hydrogen = atoms.numbers == 1
    return kinetic_temperatures(atoms, (hydrogen, ~hydrogen))


def window_schedule(interval: int, target_error_meV: float | None = None):
    """BoostMD's schedule: every ``interval`` steps, or error-controlled from ``interval``.

    With ``target_error_meV``, an :class:`~integrators.ErrorControlled` that starts at
    ``interval`` and keeps each window within 2-20 steps (or ``interval``, if outside) so
    that the refresh energy error is about that RMS.
    """
    if target_error_meV is None:
        return Periodic(interval)
    return ErrorControlled(
        tol=target_error_meV / 1000,
        initial=interval,
        min_interval=min(2, interval),
        max_interval=max(20, interval),
    )


def ase_units(timestep_fs: float, friction_per_ps: float) -> tuple[float, float]:
    """Timestep (fs) and friction (1/ps) in ASE's time units."""
    return timestep_fs * units.fs, friction_per_ps / (1000 * units.fs)


def langevin(
    atoms: Atoms,
    temperature_K: float,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    rng: np.random.Generator | int | None = None,
    tau_fs: float | None = None,
) -> Langevin:
    """ASE Langevin dynamics with the timestep in fs and the friction in 1/ps.

    With ``tau_fs``, :class:`~boostmd.dynamics.adaptive.AdaptiveLangevin` (the dynamics
    :func:`boost_langevin` integrates; with the reference alone, the exact-model
    counterpart of a BoostMD run).

    Parameters
    ----------
    atoms
        The system, with a calculator attached.
    temperature_K
        Bath temperature.
    timestep_fs
        Timestep in femtoseconds.
    friction_per_ps
        Friction coefficient in inverse picoseconds.
    rng
        Generator or seed of the random forces.
    tau_fs
        Response time (fs) of the per-atom adaptive friction; ``None`` for none.
    """
    timestep, friction = ase_units(timestep_fs, friction_per_ps)
    kwargs = {"fixcm": False, "rng": np.random.default_rng(rng)}
    if tau_fs is None:
        return Langevin(atoms, timestep, temperature_K=temperature_K, friction=friction, **kwargs)
    return AdaptiveLangevin(
        atoms, timestep, temperature_K, friction, tau=tau_fs * units.fs, **kwargs
    )


def boost_langevin(
    atoms: Atoms,
    temperature_K: float,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    rng: np.random.Generator | int | None = None,
    tolerance_eV: float | None = None,
    energy_consistent: bool = True,
    tau_fs: float | None = DEFAULT_TAU_FS,
    pressure_GPa: float | None = None,
    barostat_every: int = DEFAULT_EVERY,
) -> BoostLangevin:
    """:class:`~boostmd.BoostLangevin` with the timestep in fs and friction in 1/ps.

    Parameters
    ----------
    atoms
        The system, with a :class:`~boostmd.dynamics.calculator.BoostMDCalculator` attached.
    temperature_K
        Bath temperature.
    timestep_fs
        Timestep in femtoseconds.
    friction_per_ps
        Friction coefficient in inverse picoseconds (``0`` for NVE).
    rng
        Generator or seed of the random forces.
    tolerance_eV
        Largest accepted refresh energy error; ``None`` means 10 kB T with the adaptive
        friction, 3 kB T without.
    energy_consistent
        Remove each accepted refresh energy error from the kinetic energy.
    tau_fs
        Response time (fs) of the per-atom adaptive friction
        (:mod:`boostmd.dynamics.adaptive`); ``None`` for plain Langevin steps.
    pressure_GPa
        ``None``: constant volume; else the pressure of the Monte Carlo barostat (GPa).
    barostat_every
        Steps between its volume moves.
    """
    timestep, friction = ase_units(timestep_fs, friction_per_ps)
    return BoostLangevin(
        atoms,
        timestep,
        temperature_K,
        friction,
        tolerance=tolerance_eV,
        energy_consistent=energy_consistent,
        tau=None if tau_fs is None else tau_fs * units.fs,
        fixcm=False,
        rng=np.random.default_rng(rng),
        pressure=None if pressure_GPa is None else pressure_GPa * units.GPa,
        barostat_every=barostat_every,
    )
