"""The fit's check of a surrogate on a system: its reruns, its bonds, its speed.

A **check run** is BoostMD exactly as a user runs it (:class:`~boostmd.BoostLangevin`:
centred frames, checked windows, the per-atom adaptive friction, the energy-consistent
refresh) from the last frame of the fit's own reference MD at the check temperature. It
gives the rerun fraction and the refresh errors, and, because the fit already has that
reference run for free, a configurational check no thermostat can set: the **spread** of
the X-H and heavy-atom bond lengths (each bond's standard deviation about its own mean,
pooled over the group) against the reference run's. A surrogate that reruns few windows
but is too soft along some bonds keeps every kinetic temperature right and shows here,
as a spread ratio above 1.

The noise floor is an **exact check run**: the reference alone, from the same start with
the same dynamics and length (:func:`exact_check_run`, made once per fit). The check
passes a group when ``|ratio - 1| <= max(5%, 1.5 |floor - 1|, 3 sigma)``, ``floor`` the
exact run's spread ratio to the reference MD and ``sigma`` the ratio's standard error
from 8 block averages of both runs. Short runs at 1/ps scatter far more than block errors
say (the reference alone read 1.34x on aspirin's heavy bonds in 2000 steps), so without
the exact run the check would call right samplers wrong; with it, it has little power
unless ``check_steps`` is long. On TRP with a surrogate fine-tuned on its 300/600 K MD the
heavy-bond spread came out 1.09-1.11x at N = 10 and 1.01x at N = 5 (2500-step runs), two
reference runs agreeing within 3%.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms

from boostmd.dynamics.adaptive import DEFAULT_TAU_FS
from boostmd.dynamics.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.dynamics.md import boost_langevin, langevin, thermal_momenta
from boostmd.dynamics.stability import BondTopology, first_collapse
from boostmd.dynamics.summary import RunSummary
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import Surrogate

__all__ = [
    "BondSpreads",
    "CheckResult",
    "bond_histograms",
    "bond_spreads",
    "check_run",
    "exact_check_run",
    "measure_speedup",
]

logger = logging.getLogger(__name__)

MIN_SPREAD_TOLERANCE = 0.05
SPREAD_SIGMAS = 3.0
BLOCKS = 8
FLOOR_FACTOR = 1.5


@dataclass(frozen=True)
class BondSpreads:
    """Pooled bond-length spreads (Å) of the X-H and heavy-atom bonds, with block errors."""

    xh: float
    xh_error: float
    heavy: float
    heavy_error: float


def _pooled_spread(lengths: np.ndarray) -> float:
    """Return the standard deviation of each bond about its own mean, pooled over the bonds."""
    if lengths.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((lengths - lengths.mean(axis=0)) ** 2)))


def _spread_and_error(lengths: np.ndarray) -> tuple[float, float]:
    spread = _pooled_spread(lengths)
    if lengths.shape[0] < 2 * BLOCKS or not lengths.shape[1]:
        return spread, math.nan
    blocks = [_pooled_spread(block) for block in np.array_split(lengths, BLOCKS)]
    return spread, float(np.std(blocks, ddof=1) / math.sqrt(BLOCKS))


def bond_spreads(positions: np.ndarray, topology: BondTopology, numbers: np.ndarray) -> BondSpreads:
    """Return the X-H and heavy-atom bond-length spreads of frames ``(T, n, 3)``."""
    pairs = topology.pairs
    lengths = np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)
    hydrogen = (numbers[pairs] == 1).any(axis=1)
    xh = _spread_and_error(lengths[:, hydrogen])
    heavy = _spread_and_error(lengths[:, ~hydrogen])
    return BondSpreads(xh[0], xh[1], heavy[0], heavy[1])


def bond_histograms(
    positions: np.ndarray,
    reference_positions: np.ndarray,
    topology: BondTopology,
    numbers,
    exact_positions: np.ndarray | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Histograms of each group's bond-length deviations from the reference's bond means.

    Returns
    -------
    dict
        ``{"xh": {"edges", "run", "reference"[, "exact"]}, "heavy": {...}}``: bin edges
        (Å) and the densities of the run, of the reference MD and of the exact check run.
    """
    pairs = topology.pairs
    hydrogen = (numbers[pairs] == 1).any(axis=1)

    def lengths(frames):
        return np.linalg.norm(frames[:, pairs[:, 0]] - frames[:, pairs[:, 1]], axis=-1)

    run, reference = lengths(positions), lengths(reference_positions)
    means = reference.mean(axis=0)
    histograms = {}
    for group, chosen in (("xh", hydrogen), ("heavy", ~hydrogen)):
        a, b = (run - means)[:, chosen].ravel(), (reference - means)[:, chosen].ravel()
        if not b.size:
            continue
        edges = np.linspace(-0.15, 0.15, 41) if group == "xh" else np.linspace(-0.2, 0.2, 41)
        histograms[group] = {
            "edges": edges.tolist(),
            "run": np.histogram(a, edges, density=True)[0].tolist(),
            "reference": np.histogram(b, edges, density=True)[0].tolist(),
        }
        if exact_positions is not None:
            c = (lengths(exact_positions) - means)[:, chosen].ravel()
            histograms[group]["exact"] = np.histogram(c, edges, density=True)[0].tolist()
    return histograms


def spread_verdict(
    run: BondSpreads, reference: BondSpreads, exact: BondSpreads | None = None
) -> dict[str, dict[str, float | bool]]:
    """Compare a run's bond spreads with the reference's, group by group.

    ``exact``: an exact-model run made as ``run`` was (same start, dynamics and length);
    its own distance from ``reference`` is the noise floor, times :data:`FLOOR_FACTOR`.

    Returns
    -------
    dict
        ``{"xh": {...}, "heavy": {...}}`` with ``ratio``, ``tolerance``, ``floor`` (the
        exact run's ratio), ``paired`` (the run's spread over the exact run's: both start
        alike and draw the same random forces, so their scatter is largely shared;
        reported, not judged) and ``passed`` (a group without bonds passes, ratio ``nan``).
    """
    verdict = {}
    for group in ("xh", "heavy"):
        a, b = getattr(run, group), getattr(reference, group)
        ea, eb = getattr(run, f"{group}_error"), getattr(reference, f"{group}_error")
        if not (math.isfinite(a) and math.isfinite(b) and b > 0):
            verdict[group] = {"ratio": math.nan, "tolerance": math.nan, "passed": True}
            continue
        ratio = a / b
        sigma = ratio * math.sqrt((ea / a) ** 2 + (eb / b) ** 2)
        floor = math.nan if exact is None else getattr(exact, group) / b
        tolerance = max(
            MIN_SPREAD_TOLERANCE,
            SPREAD_SIGMAS * sigma,
            FLOOR_FACTOR * abs(floor - 1) if math.isfinite(floor) else 0.0,
        )
        passed = bool(abs(ratio - 1) <= tolerance) if math.isfinite(tolerance) else False
        verdict[group] = {
            "ratio": ratio,
            "tolerance": tolerance,
            "floor": floor,
            "paired": ratio / floor if math.isfinite(floor) else math.nan,
            "passed": passed,
        }
    return verdict


def _started(start: Atoms, calc, temperature_K: float, rng: np.random.Generator) -> Atoms:
    """Return a copy of ``start`` with ``calc`` and Maxwell-Boltzmann momenta from ``rng``."""
    atoms = Atoms(start.numbers, start.positions, cell=start.cell, pbc=start.pbc)
    atoms.calc = calc
    thermal_momenta(atoms, temperature_K, rng)
    return atoms


def _recorded_run(dynamics, steps: int) -> np.ndarray:
    """Run ``steps`` of ``dynamics``; return the positions after each, ``(steps, n, 3)``."""
    frames = []
    dynamics.attach(lambda: frames.append(dynamics.atoms.get_positions()), interval=1)
    dynamics.run(steps)
    return np.stack(frames)


@dataclass(frozen=True)
class CheckResult:
    """What a check run of one structure at one interval showed."""

    structure: str
    interval: int
    steps: int
    summary: dict
    spreads: dict
    collapse: str | None
    histograms: dict

    @property
    def rerun_fraction(self) -> float:
        """Fraction of the run's windows rerun with the reference (or ended by a fallback)."""
        summary = self.summary
        windows = summary["windows"]
        bad = summary["windows_rerun"] + summary["fallbacks"]
        return min(1.0, bad / windows) if windows else 1.0

    @property
    def samples_right(self) -> bool:
        """Whether the bond spreads match the reference's and nothing collapsed."""
        return self.collapse is None and all(g["passed"] for g in self.spreads.values())

    def as_dict(self) -> dict:
        """Return the result as a JSON-ready dict."""
        return {**asdict(self), "rerun_fraction": self.rerun_fraction}


def check_run(
    reference: MACEReference,
    surrogate: Surrogate,
    name: str,
    start: Atoms,
    reference_positions: np.ndarray,
    *,
    exact_positions: np.ndarray | None = None,
    interval: int,
    steps: int,
    temperature_K: float,
    friction_per_ps: float = 1.0,
    timestep_fs: float = 1.0,
    seed: int = 0,
) -> CheckResult:
    """Run BoostMD's validated sampler on ``start`` and compare its bonds with the reference's.

    Parameters
    ----------
    reference, surrogate
        The models.
    name
        The structure's name (for the report).
    start
        The starting frame (the last frame of the reference MD at ``temperature_K``).
    reference_positions
        The reference MD's frames at ``temperature_K``, shape ``(T, n, 3)``.
    exact_positions
        The frames of :func:`exact_check_run` from the same start (the noise floor).
    interval
        BoostMD's window length.
    steps
        Steps of the check run.
    temperature_K, friction_per_ps, timestep_fs
        The Langevin dynamics, as the user will run them.
    seed
        Seed of the momenta and the random forces.
    """
    rng = np.random.default_rng(seed)
    atoms = _started(
        start, BoostMDCalculator(reference, surrogate, interval=interval), temperature_K, rng
    )
    dynamics = boost_langevin(atoms, temperature_K, timestep_fs, friction_per_ps, rng=rng)
    dynamics.warn_misfit = False  # the fit judges the run itself
    positions = _recorded_run(dynamics, steps)
    topology = BondTopology.of(start)
    collapse = first_collapse(positions, topology)
    exact = None
    if exact_positions is not None:
        exact = bond_spreads(exact_positions, topology, atoms.numbers)
    spreads = spread_verdict(
        bond_spreads(positions, topology, atoms.numbers),
        bond_spreads(reference_positions, topology, atoms.numbers),
        exact,
    )
    summary = dynamics.summary().as_dict()
    histograms = bond_histograms(
        positions, reference_positions, topology, atoms.numbers, exact_positions
    )
    return CheckResult(
        name,
        interval,
        steps,
        summary,
        spreads,
        None if collapse is None else collapse[1],
        histograms,
    )


def exact_check_run(
    reference: MACEReference,
    start: Atoms,
    *,
    steps: int,
    temperature_K: float,
    friction_per_ps: float = 1.0,
    timestep_fs: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Return the frames ``(steps, n, 3)`` of the reference alone, made as a check run is.

    The same start, momenta, adaptive Langevin dynamics (tau 100 fs) and length as
    :func:`check_run`: how far its bond spreads lie from the reference MD's is what an
    exact sampler scatters by in such a run (on aspirin, 2000 steps at 1/ps: 1.34x for
    the heavy-atom bonds under the adaptive friction, 1.12x under plain Langevin), which
    block errors of 2 ps runs at 1/ps underestimate (each mode's energy decorrelates
    over about 1 / friction).
    """
    rng = np.random.default_rng(seed)
    atoms = _started(start, ReferenceCalculator(reference), temperature_K, rng)
    dynamics = langevin(
        atoms, temperature_K, timestep_fs, friction_per_ps, rng, tau_fs=DEFAULT_TAU_FS
    )
    return _recorded_run(dynamics, steps)


def measure_speedup(
    reference: MACEReference,
    surrogate: Surrogate,
    start: Atoms,
    *,
    interval: int,
    temperature_K: float,
    steps: int = 200,
    segments: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Wall-clock speedup of BoostMD over the reference alone, every call counted.

    Both run Langevin dynamics at 1/ps from ``start`` in interleaved segments (reference,
    BoostMD, reference, ...) after a warm-up window of each, so that load on the machine
    hits both alike; the speedup is the ratio of the summed times.
    """
    runs = {}
    for boosted in (False, True):
        if boosted:
            calc = BoostMDCalculator(reference, surrogate, interval=interval)
        else:
            calc = ReferenceCalculator(reference)
        atoms = _started(start, calc, temperature_K, np.random.default_rng(seed))
        make = boost_langevin if boosted else langevin
        runs[boosted] = make(atoms, temperature_K, 1.0, 1.0, rng=seed + 1)
        if boosted:
            runs[boosted].warn_misfit = False
        runs[boosted].run(2 * interval)  # warm-up
    seconds = {False: 0.0, True: 0.0}
    for _ in range(segments):
        for boosted, run in runs.items():
            began = time.perf_counter()
            run.run(steps)
            seconds[boosted] += time.perf_counter() - began
    boosted = runs[True]
    summary = RunSummary.of(boosted.atoms.calc, boosted.nsteps, boosted.rollbacks)
    return {
        "reference_s_per_step": seconds[False] / (segments * steps),
        "boostmd_s_per_step": seconds[True] / (segments * steps),
        "speedup": seconds[False] / seconds[True],
        "reference_calls_per_step": summary.reference_calls_per_step,
        "steps_timed": segments * steps,
    }
