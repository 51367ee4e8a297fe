"""MD runs of a validation: Langevin sampling and NVE drift, checkpointed and resumable.

A :class:`Job` is one run (a system, a role such as ``reference`` or ``boostmd`` and a
replica). Its state is written to ``CHECKPOINTS/<job>.npz`` every ``checkpoint_every``
steps (positions, momenta, the random generator's state and the observables so far), so an
interrupted validation resumes where it stopped and gives the same result as an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.units import fs
from tqdm import tqdm

from boostmd.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.dihedrals import dihedral_angles
from boostmd.md import langevin
from boostmd.stability import BondTopology, first_collapse

__all__ = ["Job", "MDSettings", "run_job"]

logger = logging.getLogger(__name__)

SAMPLING_ROLES = ("reference", "reference-2", "boostmd")
NVE_ROLES = ("nve-reference", "nve-boostmd")


@dataclass(frozen=True)
class MDSettings:
    """How every run of a validation is integrated."""

    temperature_K: float
    timestep_fs: float
    friction_per_ps: float
    steps: int
    equilibration_steps: int
    nve_steps: int
    interval: int
    checkpoint_every: int
    seed: int


@dataclass(frozen=True)
class Job:
    """One run: ``role`` in :data:`SAMPLING_ROLES` or :data:`NVE_ROLES`, on ``system``."""

    system: str
    role: str
    replica: int

    @property
    def name(self) -> str:
        """File-safe name, e.g. ``ALA-boostmd-0``."""
        return f"{self.system}-{self.role}-{self.replica}"

    @property
    def uses_boostmd(self) -> bool:
        """Whether the run is driven by BoostMD (else by the reference alone)."""
        return self.role.endswith("boostmd")

    def seed(self, settings: MDSettings, purpose: str) -> int:
        """Return the seed for ``purpose`` ``"momenta"`` or ``"noise"``.

        Momenta depend on the replica only (the same start for every role); the Langevin
        noise depends on the role too (independent runs).
        """
        key = f"{settings.seed}-{self.system}-{self.replica}"
        if purpose == "noise":
            key += f"-{self.role}"
        return zlib.crc32(key.encode())


def _calculator(job: Job, reference, surrogate, settings: MDSettings) -> Calculator:
    if job.uses_boostmd:
        return BoostMDCalculator(reference, surrogate, interval=settings.interval)
    return ReferenceCalculator(reference)


class _Recorder:
    """Observables of a run, kept as growing lists and saved in its checkpoint."""

    KEYS = ("phi", "psi", "temperature", "energy", "is_reference")

    def __init__(self, saved: dict | None = None) -> None:
        self.values = {key: list(saved[key]) if saved else [] for key in self.KEYS}

    def observe(self, atoms: Atoms, dihedrals) -> None:
        positions = atoms.positions[None]
        source = atoms.calc.results.get("boostmd_source", "reference")
        self.values["phi"].append(float(dihedral_angles(positions, dihedrals[0])[0]))
        self.values["psi"].append(float(dihedral_angles(positions, dihedrals[1])[0]))
        self.values["temperature"].append(atoms.get_temperature())
        self.values["energy"].append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        self.values["is_reference"].append(source == "reference")

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(value) for key, value in self.values.items()}


def _load(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def _save(path: Path, state: dict) -> None:
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **state)
    partial.replace(path)


def run_job(
    job: Job,
    atoms: Atoms,
    dihedrals,
    reference,
    surrogate,
    settings: MDSettings,
    checkpoints: Path,
) -> dict:
    """Run (or resume, or just load) one job; returns its observables and counters.

    Sampling jobs run ``equilibration_steps + steps`` Langevin steps; NVE jobs run
    ``nve_steps`` velocity-Verlet steps from Maxwell-Boltzmann momenta. A run stops at its
    first collapsed frame (:func:`~boostmd.stability.first_collapse`).
    """
    path = checkpoints / f"{job.name}.npz"
    saved = _load(path)
    nve = job.role.startswith("nve")
    total = settings.nve_steps if nve else settings.equilibration_steps + settings.steps
    if saved is not None and bool(saved["finished"]):
        return _result(job, saved)
    atoms = atoms.copy()
    calculator = _calculator(job, reference, surrogate, settings)
    atoms.calc = calculator
    rng = np.random.default_rng(job.seed(settings, "noise"))
    if saved is None:
        MaxwellBoltzmannDistribution(
            atoms,
            temperature_K=settings.temperature_K,
            rng=np.random.default_rng(job.seed(settings, "momenta")),
        )
        state = {"step": 0, "seconds": 0.0, "reference_calls": 0, "surrogate_calls": 0}
    else:
        atoms.positions = saved["positions"]
        atoms.set_momenta(saved["momenta"])
        rng.bit_generator.state = json.loads(str(saved["rng_state"]))
        state = {key: saved[key].item() for key in ("step", "seconds")}
        state.update({key: int(saved[key]) for key in ("reference_calls", "surrogate_calls")})
    if nve:
        dynamics = VelocityVerlet(atoms, settings.timestep_fs * fs)
    else:
        dynamics = langevin(
            atoms, settings.temperature_K, settings.timestep_fs, settings.friction_per_ps, rng
        )
    recorder = _Recorder(saved)
    topology = BondTopology.of(atoms)
    segment_positions: list[np.ndarray] = []

    def observe() -> None:
        recorder.observe(atoms, dihedrals)
        segment_positions.append(atoms.positions.copy())

    dynamics.attach(observe, interval=1)  # ASE observes the first frame of a fresh run
    dynamics.nsteps = int(state["step"])  # and not again on resume
    collapse = None
    progress = tqdm(total=total, initial=int(state["step"]), desc=job.name, leave=False)
    while state["step"] < total and collapse is None:
        segment = min(settings.checkpoint_every, total - int(state["step"]))
        segment_positions.clear()
        start = time.perf_counter()
        dynamics.run(segment)
        state["seconds"] += time.perf_counter() - start
        state["step"] += segment
        if isinstance(calculator, BoostMDCalculator):
            state["reference_calls"] += calculator.stats.full_steps
            state["surrogate_calls"] += calculator.stats.reuse_steps
            calculator.stats = type(calculator.stats)()
        else:
            state["reference_calls"] += segment
        collapse = first_collapse(np.asarray(segment_positions), topology)
        if collapse is not None:
            frame = len(recorder.values["phi"]) - len(segment_positions) + collapse[0]
            collapse = (frame, collapse[1])
            logger.warning("%s collapsed at frame %d: %s", job.name, *collapse)
        progress.update(segment)
        finished = state["step"] >= total or collapse is not None
        _save(
            path,
            {
                **recorder.arrays(),
                **state,
                "positions": atoms.positions,
                "momenta": atoms.get_momenta(),
                "rng_state": json.dumps(rng.bit_generator.state),
                "finished": finished,
                "collapse_frame": -1 if collapse is None else collapse[0],
                "collapse_reason": "" if collapse is None else collapse[1],
            },
        )
    progress.close()
    return _result(job, _load(path))


def _result(job: Job, saved: dict) -> dict:
    """Observables up to (not including) the first collapsed frame, and the counters."""
    frame = int(saved["collapse_frame"])
    end = None if frame < 0 else frame  # frames after a collapse are not samples
    return {
        "job": job,
        **{key: saved[key][:end] for key in _Recorder.KEYS},
        "seconds": float(saved["seconds"]),
        "steps": int(saved["step"]),
        "reference_calls": int(saved["reference_calls"]),
        "surrogate_calls": int(saved["surrogate_calls"]),
        "collapse": None if frame < 0 else (frame, str(saved["collapse_reason"])),
    }
