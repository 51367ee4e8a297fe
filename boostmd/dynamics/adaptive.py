"""Langevin dynamics with a per-atom adaptive friction (adaptive Langevin, per atom).

On top of ASE's Langevin friction ``gamma`` each atom ``i`` carries a Nosé-Hoover-like
friction ``xi_i`` that may be positive or negative and adapts to the atom's kinetic
energy (Jones and Leimkuhler 2011; Leimkuhler and Shang 2016)::

    dp_i  = F_i dt - gamma p_i dt - xi_i p_i dt + sqrt(2 gamma m_i kB T) dW_i
    dxi_i = (|p_i|^2 / m_i - 3 kB T) dt / mu,          mu = 3 kB T tau^2

With exact forces the extended density ``exp(-(H + sum_i mu xi_i^2 / 2) / kB T)`` is
invariant, so the positions still follow ``exp(-U / kB T)``. Where the forces are
slightly wrong in a way that pumps energy into (or drains it from) some atoms, as
BoostMD's windows do with a surrogate whose curvature is a little off, those atoms'
``xi`` settle at whatever friction cancels it: every atom's kinetic energy averages
``3/2 kB T`` without the energy being taken from other atoms. ``tau`` is the time over
which ``xi`` responds (its oscillation period with a constant drive is about ``2 pi tau``).

The step is a symmetric splitting around ASE's Langevin step ``L`` (Vanden-Eijnden and
Ciccotti, :class:`ase.md.langevin.Langevin`), with ``h = dt / 2``::

    xi_i += h (|p_i|^2 / m_i - 3 kB T) / mu        (D: the friction, half a step)
    p_i  *= exp(-xi_i h)
    (x, p) <- L(x, p)                                 (ASE's Langevin step)
    p_i  *= exp(-xi_i h)
    xi_i += h (|p_i|^2 / m_i - 3 kB T) / mu

With ``tau=None`` the step is ASE's Langevin step, bit for bit. ASE's full-step
momenta are the ones whose kinetic energy that step gets right (for a harmonic
vibration its full-step velocity distribution is exact at any stable timestep), so the
friction reads them there.

===========  ==================  ================================================
symbol       variable            meaning
===========  ==================  ================================================
xi           ``self.xi``         per-atom adaptive friction (1 / ASE time units)
tau          ``self.tau``        response time of ``xi`` (ASE time units)
mu           ``1 / inverse_mu``  the friction's "mass", ``3 kB T tau^2``
3 kB T       ``kinetic_target``  each atom's mean ``|p_i|^2 / m_i`` (eV)
===========  ==================  ================================================
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin

__all__ = [
    "DEFAULT_TAU_FS",
    "AdaptiveFriction",
    "AdaptiveLangevin",
    "check_rng",
    "friction_half_step",
]

# The response time the validation passes with (README, "Sampling at 1/ps").
DEFAULT_TAU_FS = 100.0


def friction_half_step(momenta, xi, masses, kinetic_target, inverse_mu, half_dt, exp, first):
    """Take the adaptive friction's half step ``D``, on numpy arrays or torch tensors alike.

    ``momenta`` ``(n, 3)``; ``xi``, ``masses``, ``kinetic_target`` and ``inverse_mu``
    ``(n, 1)``; ``exp`` is ``numpy.exp`` or ``torch.exp``. ``first``: update ``xi`` and
    then scale the momenta (the half step before ASE's step), else the reverse. Returns
    the new ``(momenta, xi)``. One function for the host and the device paths, so both
    do the same operations in the same order.
    """

    def drive(p):
        kinetic = p[:, 0:1] * p[:, 0:1] + p[:, 1:2] * p[:, 1:2] + p[:, 2:3] * p[:, 2:3]
        return half_dt * ((kinetic / masses - kinetic_target) * inverse_mu)

    if first:
        xi = xi + drive(momenta)
        return momenta * exp(-half_dt * xi), xi
    momenta = momenta * exp(-half_dt * xi)
    return momenta, xi + drive(momenta)


def _exp(x: np.ndarray) -> np.ndarray:
    """Return ``exp(x)`` by torch's kernel, the one the device windows use.

    numpy's and torch's vectorised exp differ in the last bit for a few percent of inputs
    on CPUs with AVX-512; with one kernel, host steps and device windows on a CPU agree
    bit for bit (torch's result does not depend on an element's place in the array).
    """
    return torch.exp(torch.from_numpy(x)).numpy()


def check_rng(rng: Any) -> Any:
    """Return a generator of random forces: a seed or ``None`` becomes a numpy ``Generator``.

    A ``Generator``, a ``RandomState`` or the ``numpy.random`` module is returned as it is.

    Raises
    ------
    TypeError
        For anything else, naming what is accepted.
    """
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    if all(hasattr(rng, name) for name in ("standard_normal", "get_state", "set_state")):
        return rng  # np.random.RandomState or the np.random module
    raise TypeError(
        "rng must be a numpy Generator, a RandomState, an integer seed or None, got "
        f"{type(rng).__name__}"
    )


def check_tau(tau: Any, temperature_K: float) -> float | None:
    """Validate a response time ``tau`` (ASE time units, or ``None`` for no friction)."""
    if tau is None:
        return None
    if isinstance(tau, bool) or not (isinstance(tau, numbers.Real) and 0 < tau < math.inf):
        raise ValueError(
            f"tau must be a positive time in ASE units (e.g. 100 * ase.units.fs) or None "
            f"(no adaptive friction), got {tau!r}"
        )
    if not temperature_K > 0:
        raise ValueError(
            "the adaptive friction drives each atom to 3/2 kB T, which needs temperature_K > 0 "
            f"(got {temperature_K!r}); pass tau=None for plain Langevin dynamics"
        )
    return float(tau)


class AdaptiveFriction:
    """The adaptive friction's half step ``D`` for an ASE integrator that wraps its step in it.

    The integrator holds ``xi`` ``(n,)``, ``kinetic_target`` and ``inverse_mu`` ``(n, 1)``
    and ASE's ``atoms`` and ``dt``.
    """

    def _friction_half_step(self, first: bool) -> None:
        momenta, xi = friction_half_step(
            self.atoms.get_momenta(),
            self.xi[:, None],
            self.atoms.get_masses()[:, None],
            self.kinetic_target,
            self.inverse_mu,
            self.dt / 2,
            _exp,
            first,
        )
        self.xi = xi[:, 0]
        self.atoms.set_momenta(momenta)


class AdaptiveLangevin(AdaptiveFriction, Langevin):
    """ASE's Langevin dynamics with a per-atom adaptive friction ``xi`` (see the module).

    Any ASE calculator. With ``tau=None`` it is :class:`ase.md.langevin.Langevin`.

    Parameters
    ----------
    atoms
        The system, with a calculator.
    timestep
        Timestep in ASE time units.
    temperature_K
        Bath temperature in K (> 0 with an adaptive friction).
    friction
        Langevin friction ``gamma`` in inverse ASE time units (``0.001 / units.fs`` is
        1/ps); ``0`` leaves only the adaptive friction (Nosé-Hoover per atom).
    tau
        Response time of the adaptive friction in ASE time units; ``None`` turns it off.
    fixcm
        Must be False with an adaptive friction (per-atom scaling moves the centre of
        mass): use :class:`ase.constraints.FixCom`.
    rng
        Generator of the random forces: a numpy ``Generator``, a ``RandomState`` or an
        integer seed; ``None`` is ASE's default (the ``numpy.random`` module).
    **kwargs
        Passed to :class:`ase.md.md.MolecularDynamics`.

    Attributes
    ----------
    xi
        The per-atom adaptive friction, shape ``(natoms,)``, in inverse ASE time units
        (``xi * 1000 * units.fs`` in 1/ps). Set it to resume a run.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from ase.calculators.emt import EMT
    >>> atoms = molecule("H2O"); atoms.calc = EMT()
    >>> dyn = AdaptiveLangevin(atoms, units.fs, 300, 0.001 / units.fs, tau=100 * units.fs)
    >>> dyn.run(5)
    True
    >>> dyn.xi.shape
    (3,)
    """

    def __init__(
        self,
        atoms: Atoms,
        timestep: float,
        temperature_K: float,
        friction: float,
        *,
        tau: float | None = DEFAULT_TAU_FS * units.fs,
        fixcm: bool = False,
        rng: Any = None,
        **kwargs: Any,
    ) -> None:
        self.tau = check_tau(tau, temperature_K)
        if self.tau is not None and fixcm:
            raise ValueError(
                "fixcm=True does not combine with the adaptive friction (it scales each atom's "
                "momentum); use fixcm=False and ase.constraints.FixCom, or tau=None"
            )
        self.xi = np.zeros(len(atoms))
        if hasattr(atoms.calc, "adopt_timestep"):  # a BoostMDCalculator
            atoms.calc.adopt_timestep(timestep / units.fs)
            if self.tau is not None:
                atoms.calc.warn_pumping = False  # this friction absorbs it
        super().__init__(
            atoms,
            timestep,
            temperature_K=temperature_K,
            friction=friction,
            fixcm=fixcm,
            rng=None if rng is None else check_rng(rng),
            **kwargs,
        )

    def todict(self) -> dict[str, Any]:
        """ASE's Langevin description plus ``tau``."""
        return {**super().todict(), "tau": self.tau}

    def updatevars(self) -> None:
        """ASE's step coefficients, and the adaptive friction's ``mu`` at this temperature."""
        super().updatevars()
        shape = (len(self.atoms), 1)
        self.kinetic_target = np.broadcast_to(3 * np.reshape(self.temp, (-1, 1)), shape).copy()
        if self.tau is None:
            self.inverse_mu = np.zeros(shape)
        else:
            self.inverse_mu = 1 / (self.kinetic_target * self.tau**2)

    def step(self, forces: np.ndarray | None = None) -> np.ndarray:
        """One step: half the friction update, ASE's Langevin step, the other half."""
        if self.tau is None:
            return super().step(forces)
        self._friction_half_step(first=True)
        forces = super().step(forces)
        self._friction_half_step(first=False)
        return forces
