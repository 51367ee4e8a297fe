"""A Monte Carlo barostat: volume moves that scale the molecules' centres.

Every ``every`` steps :class:`~boostmd.BoostLangevin` with a ``pressure`` tries one move
(Chow and Ferguson 1995; Åqvist et al. 2004, the barostat of OpenMM)::

    V' = V + dV,  dV uniform in [-dV_max, dV_max]
    s = (V' / V)^(1/3):  the cell times s, each molecule's centre of mass R times s
                         (its atoms all moved by (s - 1) R, so no bond changes)
    w = U(x') - U(x) + P (V' - V) - M kB T ln(V' / V)
    accept with probability min(1, exp(-w / kB T))

with ``M`` the number of molecules (covalently bonded components). The momenta are left
as they are. With this acceptance the moves keep the isothermal-isobaric distribution of
``U`` invariant, and the Langevin steps in between keep its canonical part, so together
they sample ``exp(-(U + P V) / kB T)``. ``dV_max`` starts at a hundredth of the volume and
is tuned every :data:`TUNE_EVERY` attempts to keep the acceptance between a quarter and
three quarters, as OpenMM's is; it stays below :data:`MAX_VOLUME_STEP` of the volume, so
that a move strains the cell by less than the window frame's own strain limit.

``U`` is the energy the dynamics feel: in BoostMD the window's surrogate, expanded about
its frame, plus the frame's stress offset times the strain
(:meth:`~boostmd.dynamics.calculator.BoostMDCalculator.relocate`), which makes the
energy's strain derivative the reference's at the frame. A move costs two surrogate
evaluations and no reference call.

===========  ========================  ===============================================
symbol       variable                  meaning
===========  ========================  ===============================================
P            ``pressure``              the bath's pressure (eV/Å³)
kB T         ``kT``                    the bath's temperature (eV)
dV_max       ``volume_step``           largest volume change of a move (Å³)
M            ``molecules.count``       molecules moved as rigid units
===========  ========================  ===============================================
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np
from ase import Atoms, units

from boostmd.dynamics.periodic import Molecules

__all__ = ["DEFAULT_EVERY", "MAX_VOLUME_STEP", "MonteCarloBarostat"]

logger = logging.getLogger(__name__)

DEFAULT_EVERY = 25  # steps between attempts (OpenMM's MonteCarloBarostat default)
INITIAL_VOLUME_STEP = 0.01  # the first dV_max, a fraction of the volume (OpenMM's)
# dV_max stays below this fraction of the volume: (1 + 0.025)^(1/3) - 1 = 0.0083, inside
# the strain a window's frame follows (MAX_FRAME_STRAIN)
MAX_VOLUME_STEP = 0.025
TUNE_EVERY = 10  # attempts between adjustments of dV_max
ACCEPTANCE_BOUNDS = (0.25, 0.75)
TUNE_FACTOR = 1.1
# pressures above this (eV/Å³, 16 GPa) are most likely GPa passed as ASE units: warned of
LIKELY_UNIT_MISTAKE = 0.1


class MonteCarloBarostat:
    """Isotropic Monte Carlo volume moves at ``pressure`` and ``temperature_K``.

    Parameters
    ----------
    atoms
        The system, in a cell periodic along all three vectors; its molecules are found
        here (:class:`Molecules`) and kept for the run.
    pressure
        The bath's pressure in ASE units (eV/Å³; ``1 * ase.units.GPa`` is 1 GPa).
    temperature_K
        The bath's temperature (> 0).
    every
        Steps between attempts (default 25).

    Attributes
    ----------
    attempts, accepted
        Moves tried and accepted so far.
    volume_step
        The current largest volume change ``dV_max`` (Å³).
    """

    def __init__(
        self, atoms: Atoms, pressure: float, temperature_K: float, every: int = DEFAULT_EVERY
    ) -> None:
        if not atoms.pbc.all() or atoms.cell.rank != 3:
            raise ValueError(
                "constant pressure needs a cell periodic along all three vectors "
                f"(pbc={atoms.pbc.tolist()}); set atoms.cell and atoms.pbc = True"
            )
        if not (isinstance(pressure, numbers.Real) and math.isfinite(pressure)):
            raise ValueError(f"pressure must be a finite number (eV/Å³), got {pressure!r}")
        if not (isinstance(temperature_K, numbers.Real) and temperature_K > 0):
            raise ValueError(f"a barostat needs a temperature above 0 K, got {temperature_K!r}")
        if isinstance(every, bool) or not (isinstance(every, numbers.Integral) and every >= 1):
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}")
        if abs(pressure) > LIKELY_UNIT_MISTAKE:
            logger.warning(
                "pressure %.3g eV/Å³ is %.0f GPa; the barostat takes ASE units: for %g GPa "
                "pass %g * ase.units.GPa",
                pressure,
                pressure / units.GPa,
                pressure,
                pressure,
            )
        self.pressure = float(pressure)
        self.kT = units.kB * float(temperature_K)
        self.every = int(every)
        self.molecules = Molecules.of(atoms)
        self.volume_step = INITIAL_VOLUME_STEP * atoms.get_volume()
        self.attempts = self.accepted = 0
        self.last_attempt = 0  # the step of the last attempt
        self._tuning = [0, 0]  # attempts and acceptances since dV_max was last tuned

    def due(self, step: int) -> bool:
        """Whether a move is due at ``step`` (``every`` steps after the last attempt)."""
        return step - self.last_attempt >= self.every

    def propose(self, atoms: Atoms, rng: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """Draw a move; return the new positions and cell and ``V' - V``."""
        volume = atoms.get_volume()
        change = min(self.volume_step, MAX_VOLUME_STEP * volume) * (2 * rng.random() - 1)
        positions, cell = self.molecules.scaled(atoms, ((volume + change) / volume) ** (1 / 3))
        return positions, cell, change

    def accept(
        self, energy_change: float, volume: float, volume_change: float, rng: Any, step: int
    ) -> bool:
        """Decide a move from its energy change (eV); count it and tune ``dV_max``."""
        ratio = (volume + volume_change) / volume
        work = (
            energy_change
            + self.pressure * volume_change
            - self.molecules.count * self.kT * math.log(ratio)
        )
        accepted = bool(work <= 0 or rng.random() < math.exp(-work / self.kT))
        self._count(accepted, step)
        return accepted

    def _count(self, accepted: bool, step: int) -> None:
        self.attempts += 1
        self.accepted += accepted
        self.last_attempt = step
        self._tuning[0] += 1
        self._tuning[1] += accepted
        if self._tuning[0] < TUNE_EVERY:
            return
        acceptance = self._tuning[1] / self._tuning[0]
        if acceptance < ACCEPTANCE_BOUNDS[0]:
            self.volume_step /= TUNE_FACTOR
        elif acceptance > ACCEPTANCE_BOUNDS[1]:
            self.volume_step *= TUNE_FACTOR
        self._tuning = [0, 0]

    @property
    def state(self) -> np.ndarray:
        """``dV_max``, the counters and the tuning's, to checkpoint a run."""
        return np.array(
            [self.volume_step, self.attempts, self.accepted, self.last_attempt, *self._tuning],
            dtype=float,
        )

    @state.setter
    def state(self, value: np.ndarray) -> None:
        step, attempts, accepted, last, tried, taken = (float(x) for x in value)
        self.volume_step = step
        self.attempts, self.accepted, self.last_attempt = int(attempts), int(accepted), int(last)
        self._tuning = [int(tried), int(taken)]
