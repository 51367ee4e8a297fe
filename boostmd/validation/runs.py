"""MD runs of a validation: Langevin sampling and NVE drift, checkpointed and resumable.

A :class:`Job` is one run (a system, a role and a replica). The roles:

- ``reference``, ``reference-2``: Langevin with the reference alone (two independent runs:
  the second gives the noise floor);
- ``reference-adaptive``: the reference alone under the dynamics ``boostmd-checked``
  integrates (:class:`~boostmd.dynamics.adaptive.AdaptiveLangevin`, the same ``tau``): an
  exact-model run whose short-run statistics share BoostMD's kinetics (which basins a
  run from the starting structure reaches first, and how fast), so it gives a second
  noise floor;
- ``boostmd``: ASE's Langevin driving :class:`~boostmd.dynamics.calculator.BoostMDCalculator`;
- ``boostmd-checked``: :class:`boostmd.dynamics.integrator.BoostLangevin` (checked windows: a window
  whose refresh energy error is too large is undone and rerun with the reference; with
  ``MDSettings.energy_consistent`` each accepted refresh also gives back its error);
  at constant pressure (``MDSettings.pressure_GPa``) with Monte Carlo volume moves
  (:mod:`boostmd.dynamics.barostat`), while the other sampling roles run ASE's
  ``LangevinBAOAB`` and its barostat (:mod:`boostmd.dynamics.npt`);
- ``nve-reference``, ``nve-boostmd`` (velocity Verlet), ``nve-boostmd-consistent``
  (``BoostLangevin`` without friction, ``energy_consistent=True``): energy drift.

A job's state is written to ``CHECKPOINTS/<job>.npz`` every ``checkpoint_every`` steps
(positions, momenta, the adaptive friction ``xi``, the random generator's state, the
curvature fit, the counters and the observables so far), so an interrupted validation
resumes where it stopped and gives the same result as an uninterrupted one (bit for bit
with one thread per process; with more, torch's CPU kernels can add up in a
load-dependent order).

Per frame the recorder keeps phi and psi (``nan`` for a system without dihedrals), the
kinetic temperature (all atoms, hydrogens,
heavy atoms), the total and potential energy, whether the reference produced the frame's
forces, the refresh energy error dE when the frame ends a surrogate window (``nan``
otherwise) and the lengths (float32) of the X-H and heavy-atom bonds of the starting
structure (:class:`~boostmd.dynamics.stability.BondTopology`), its bond angles, and every
:data:`~boostmd.validation.structure.PAIR_EVERY`-th frame a histogram of the distances
between heavy atoms of different molecules (:mod:`boostmd.validation.structure`).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.verlet import VelocityVerlet
from ase.units import fs
from tqdm import tqdm

from boostmd.dynamics.adaptive import DEFAULT_TAU_FS
from boostmd.dynamics.barostat import DEFAULT_EVERY
from boostmd.dynamics.calculator import BoostMDCalculator, ReferenceCalculator
from boostmd.dynamics.calibration import CurvatureCalibration
from boostmd.dynamics.md import (
    ase_units,
    group_temperatures,
    kinetic_temperatures,
    langevin,
    thermal_momenta,
    window_schedule,
)
from boostmd.dynamics.npt import langevin_npt
from boostmd.dynamics.replicas import ReplicaBatch
from boostmd.dynamics.stability import BondTopology, first_collapse, start_digest
from boostmd.forcefields.reference import MACEReference, ReferenceResult
from boostmd.forcefields.water import density
from boostmd.validation.dihedrals import dihedral_angles
from boostmd.validation.structure import (
    PAIR_EVERY,
    IntermolecularPairs,
    bond_angle_triples,
    bond_angles,
    histogram_rows,
)

__all__ = ["Dihedrals", "Job", "MDSettings", "job_result", "load_checkpoint", "roles", "run_job"]

logger = logging.getLogger(__name__)

# the atom indices of phi and psi, or None for a system without dihedrals
Dihedrals = tuple[tuple[int, ...], tuple[int, ...]] | None

REFERENCE_ROLES = ("reference", "reference-2")
ADAPTIVE_REFERENCE = "reference-adaptive"
BOOSTMD_ROLES = ("boostmd", "boostmd-checked")
SAMPLING_ROLES = (*REFERENCE_ROLES, ADAPTIVE_REFERENCE, *BOOSTMD_ROLES)
NVE_ROLES = ("nve-reference", "nve-boostmd", "nve-boostmd-consistent")
# the NVE run of each BoostMD integrator, and which integrator (--integrator) runs a role
NVE_OF = {"boostmd": "nve-boostmd", "boostmd-checked": "nve-boostmd-consistent"}
# "none": the reference runs alone (to store them, boostmd.validation.stored)
INTEGRATORS = {
    "ase": ("boostmd",),
    "checked": ("boostmd-checked",),
    "both": BOOSTMD_ROLES,
    "none": (),
}


def roles(
    integrator: str = "both", adaptive_reference: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the sampling and NVE roles that run for ``integrator`` (ase, checked, both).

    ``adaptive_reference`` adds the ``reference-adaptive`` run.

    >>> roles("ase")
    (('reference', 'reference-2', 'boostmd'), ('nve-reference', 'nve-boostmd'))
    >>> roles("checked", adaptive_reference=True)[0]
    ('reference', 'reference-2', 'reference-adaptive', 'boostmd-checked')
    """
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {sorted(INTEGRATORS)}, got {integrator!r}")
    boost = INTEGRATORS[integrator]
    references = REFERENCE_ROLES + ((ADAPTIVE_REFERENCE,) if adaptive_reference else ())
    return references + boost, ("nve-reference", *(NVE_OF[role] for role in boost))


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
    energy_consistent: bool = False
    calibrate: bool = False
    equilibration_friction_per_ps: float | None = None
    target_refresh_error_meV: float | None = None
    frame: str = "start"
    adaptive_tau_fs: float | None = DEFAULT_TAU_FS
    pressure_GPa: float | None = None  # None: constant volume; else NPT (a barostat)
    barostat_every: int = DEFAULT_EVERY  # steps between BoostLangevin's volume moves

    @property
    def equilibration_friction(self) -> float:
        """Friction (1/ps) of the equilibration steps (``None``: the production friction)."""
        if self.equilibration_friction_per_ps is None:
            return self.friction_per_ps
        return self.equilibration_friction_per_ps


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
        return "boostmd" in self.role

    @property
    def checked(self) -> bool:
        """Whether the run is integrated by :class:`boostmd.dynamics.integrator.BoostLangevin`."""
        return self.role in ("boostmd-checked", "nve-boostmd-consistent")

    @property
    def nve(self) -> bool:
        """Whether the run is an NVE (energy drift) run."""
        return self.role.startswith("nve")

    def total_steps(self, settings: MDSettings) -> int:
        """Return the steps of the whole run: NVE, or equilibration plus sampling steps."""
        return settings.nve_steps if self.nve else settings.equilibration_steps + settings.steps

    def seed(self, settings: MDSettings, purpose: str) -> int:
        """Return the seed for ``purpose`` ``"momenta"`` or ``"noise"``.

        Momenta depend on the replica only (the same start for every role); the Langevin
        noise depends on the role too (independent runs).
        """
        key = f"{settings.seed}-{self.system}-{self.replica}"
        if purpose == "noise":
            key += f"-{self.role}"
        return zlib.crc32(key.encode())


def _calculator(job: Job, reference, surrogate, settings: MDSettings, batch) -> Calculator:
    if job.uses_boostmd:
        schedule = window_schedule(settings.interval, settings.target_refresh_error_meV)
        return BoostMDCalculator(
            reference,
            surrogate,
            schedule=schedule,
            calibration=settings.calibrate,
            frame=settings.frame,
            timestep_fs=settings.timestep_fs,
            calls=batch,
        )
    return ReferenceCalculator(reference, calls=batch)


def _dynamics(job: Job, atoms: Atoms, settings: MDSettings, rng: np.random.Generator):
    if settings.pressure_GPa is not None and not job.nve and not job.checked:
        adaptive = job.role in (ADAPTIVE_REFERENCE, "boostmd")  # the sampler's dynamics
        return langevin_npt(
            atoms,
            settings.temperature_K,
            settings.pressure_GPa,
            settings.timestep_fs,
            settings.friction_per_ps,
            rng,
            tau_fs=settings.adaptive_tau_fs if adaptive else None,
        )
    if job.checked:
        from boostmd.dynamics.md import boost_langevin

        if job.nve:
            return boost_langevin(
                atoms,
                settings.temperature_K,
                settings.timestep_fs,
                friction_per_ps=0.0,
                rng=rng,
                energy_consistent=True,
                tau_fs=None,
            )
        return boost_langevin(
            atoms,
            settings.temperature_K,
            settings.timestep_fs,
            settings.friction_per_ps,
            rng,
            energy_consistent=settings.energy_consistent,
            tau_fs=settings.adaptive_tau_fs,
            pressure_GPa=settings.pressure_GPa,  # None: constant volume; else MC moves
            barostat_every=settings.barostat_every,
        )
    if job.nve:
        return VelocityVerlet(atoms, settings.timestep_fs * fs)
    if job.role == ADAPTIVE_REFERENCE:
        if settings.adaptive_tau_fs is None:
            raise ValueError("the reference-adaptive run needs the adaptive friction's tau")
        return langevin(
            atoms,
            settings.temperature_K,
            settings.timestep_fs,
            settings.friction_per_ps,
            rng,
            tau_fs=settings.adaptive_tau_fs,
        )
    return langevin(
        atoms, settings.temperature_K, settings.timestep_fs, settings.friction_per_ps, rng
    )


class _Recorder:
    """Observables of a run, kept as growing lists and saved in its checkpoint."""

    SCALARS = (
        "phi",
        "psi",
        "temperature",
        "temperature_hydrogen",
        "temperature_heavy",
        "energy",
        "potential_energy",
        "is_reference",
        "refresh_energy_error",
    )
    # absent from checkpoints of older versions (the report then falls back on the interval
    # and on the potential energy, and leaves out the configurational temperatures);
    # adaptive_friction: each atom's xi (1/ps, float32) under an adaptive Langevin
    # integrator, empty otherwise; reference_force_sq: the mean |F_i|^2 (eV^2/Å^2) of the
    # reference's forces over the hydrogens and over the heavy atoms where the reference
    # ran at this frame's positions, nan elsewhere (and at every frame of a centred-frame run)
    OPTIONAL = ("scheduled_reference", "reference_energy", "adaptive_friction")
    FORCES = "reference_force_sq"
    BONDS = ("bonds_xh", "bonds_heavy")
    KEYS = SCALARS + BONDS
    # boostmd.validation.structure: every frame's bond angles (degrees, float32) and every
    # PAIR_EVERY-th frame's histogram of intermolecular heavy-atom distances; absent from
    # checkpoints of older versions, which then go on without them
    STRUCTURE = ("angles", "pair_counts")
    # the cell's density (g/cm^3; it changes under a barostat); where the step's forces
    # came with a stress (a cell periodic along all three vectors) the pressure (GPa,
    # virial plus the kinetic N kB T / V), else nan; the kinetic temperature of each
    # element (K, float32, elements by atomic number); absent from older checkpoints
    CELL = ("density", "pressure", "temperature_elements")
    # an audited run (BoostMD with centred frames, whose own reference calls are at
    # predicted window centres, no sampled frames): where the validation itself called the
    # reference at the frame's own positions (every audit_every-th frame), and the
    # reference's energy there (eV, nan elsewhere); its forces there go into
    # reference_force_sq. Absent from unaudited runs and from older checkpoints.
    AUDIT = ("audited", "audited_energy")

    def __init__(
        self,
        atoms: Atoms,
        topology: BondTopology,
        saved: dict | None = None,
        audit: MACEReference | None = None,
        audit_every: int = 1,
    ) -> None:
        hydrogen = atoms.numbers == 1
        self.groups = (hydrogen, ~hydrogen)
        has_h = hydrogen[topology.pairs].any(axis=1)
        self.pairs = {"bonds_xh": topology.pairs[has_h], "bonds_heavy": topology.pairs[~has_h]}
        self.elements = [atoms.numbers == number for number in np.unique(atoms.numbers)]
        self.triples = bond_angle_triples(topology.pairs)
        self.intermolecular = IntermolecularPairs(atoms, topology)
        # what a checkpoint of an older version lacks is not recorded on resuming it
        self.kept = {key for key in self.STRUCTURE + self.CELL if saved is None or key in saved}
        if audit is not None and (saved is None or "audited" in saved):
            self.kept |= set(self.AUDIT)
        self.audit = audit if "audited" in self.kept else None
        self.audit_every = audit_every
        self.audit_seconds = 0.0  # the audit's calls are not the sampler's time
        self.values = {
            key: list(saved[key]) if saved and key in saved else []
            for key in self.KEYS
            + self.OPTIONAL
            + self.STRUCTURE
            + self.CELL
            + self.AUDIT
            + (self.FORCES,)
        }

    def observe(self, atoms: Atoms, dihedrals: Dihedrals, xi: np.ndarray | None = None) -> None:
        positions = atoms.positions
        potential = atoms.get_potential_energy()  # cached: the step computed it
        results = atoms.calc.results
        source = results.get("boostmd_source", "reference")
        values = self.values
        for key, indices in zip(("phi", "psi"), dihedrals or (None, None), strict=True):
            angle = np.nan if indices is None else dihedral_angles(positions[None], indices)[0]
            values[key].append(float(angle))
        values["temperature"].append(atoms.get_temperature())
        hydrogens, heavy = group_temperatures(atoms)
        values["temperature_hydrogen"].append(hydrogens)
        values["temperature_heavy"].append(heavy)
        values["energy"].append(potential + atoms.get_kinetic_energy())
        values["potential_energy"].append(potential)
        values["is_reference"].append(source == "reference")
        values["scheduled_reference"].append(
            source == "reference" and bool(results.get("boostmd_scheduled", True))
        )
        values["refresh_energy_error"].append(float(results.get("refresh_energy_error", np.nan)))
        # the reference's energy at this step's frame: with centred frames it ran at the
        # window's predicted centre, and the step's own energy is the surrogate's
        values["reference_energy"].append(float(results.get("boostmd_reference_energy", potential)))
        if xi is not None:
            values["adaptive_friction"].append((xi * 1000 * fs).astype(np.float32))
        centred = getattr(atoms.calc, "frame", "start") == "centred"
        audited = self._audited(atoms)
        if audited is None:
            values[self.FORCES].append(self._reference_force_sq(results, source, centred))
        else:
            values[self.FORCES].append(self._group_force_sq(audited.forces.cpu().numpy()))
        for key, pairs in self.pairs.items():
            lengths = np.linalg.norm(positions[pairs[:, 0]] - positions[pairs[:, 1]], axis=1)
            values[key].append(lengths.astype(np.float32))
        self._observe_kept(atoms, results)

    def _observe_kept(self, atoms: Atoms, results: dict) -> None:
        """Record the observables of :data:`STRUCTURE` and :data:`CELL` this run keeps."""
        values, kept = self.values, self.kept
        if "density" in kept:
            values["density"].append(density(atoms) if atoms.cell.rank == 3 else np.nan)
        if "pressure" in kept:
            values["pressure"].append(_pressure_GPa(atoms, results))
        if "temperature_elements" in kept:
            per_element = kinetic_temperatures(atoms, self.elements)
            values["temperature_elements"].append(np.asarray(per_element, dtype=np.float32))
        if "angles" in kept:
            angles = bond_angles(atoms.positions, self.triples)
            values["angles"].append(angles.astype(np.float32))
        if "pair_counts" in kept and (len(values["phi"]) - 1) % PAIR_EVERY == 0:
            values["pair_counts"].append(self.intermolecular.histogram(atoms.positions, atoms.cell))

    def _audited(self, atoms: Atoms) -> ReferenceResult | None:
        """Call the reference at this frame's positions if it is an audited frame."""
        if self.audit is None:
            return None
        frame = len(self.values["phi"]) - 1  # observe() has recorded this frame's phi
        if frame % self.audit_every:
            self.values["audited"].append(False)
            self.values["audited_energy"].append(np.nan)
            return None
        began = time.perf_counter()
        result = self.audit(atoms)
        self.audit_seconds += time.perf_counter() - began
        self.values["audited"].append(True)
        self.values["audited_energy"].append(float(result.energy))
        return result

    def _group_force_sq(self, forces) -> np.ndarray:
        """Return the mean ``|F_i|^2`` of the hydrogens and of the heavy atoms (nan: none)."""
        squared = np.sum(np.asarray(forces, dtype=float) ** 2, axis=1)
        return np.array([squared[group].mean() if group.any() else np.nan for group in self.groups])

    def _reference_force_sq(self, results: dict, source: str, centred: bool) -> np.ndarray:
        # With centred frames the reference ran at a predicted window centre, not at a
        # sampled frame: its forces there are no sample (on ALA the hydrogens' mean
        # |F|^2 was 0.77 eV^2/Å^2 at the centres, 1.22 at the same steps' own positions).
        # The reference calls such a run makes at its own positions are those of rerun
        # windows and force-guard fallbacks, frames picked by the surrogate's error (on
        # GLN they read 220 K), so a centred run records none.
        # (The validation audits such runs instead: see AUDIT.)
        if source != "reference" or centred:
            return np.full(2, np.nan)
        return self._group_force_sq(results["forces"])

    def arrays(self) -> dict[str, np.ndarray]:
        scalars = self.SCALARS + self.OPTIONAL + tuple(sorted(self.kept & {"density", "pressure"}))
        arrays = {key: np.asarray(self.values[key]) for key in scalars}
        if "audited" in self.kept:
            arrays["audited"] = np.asarray(self.values["audited"], dtype=bool)
            arrays["audited_energy"] = np.asarray(self.values["audited_energy"], dtype=float)
        widths = {
            "temperature_elements": (np.float32, len(self.elements)),
            "angles": (np.float32, len(self.triples)),
            "pair_counts": (np.int32, self.intermolecular.bins),
        }
        for key, (dtype, width) in widths.items():
            if key in self.kept:
                rows = np.asarray(self.values[key], dtype=dtype)
                arrays[key] = rows.reshape(len(self.values[key]), width)
        forces = np.asarray(self.values[self.FORCES], dtype=np.float32)
        arrays[self.FORCES] = forces.reshape(-1, 2)
        for key in self.BONDS:  # (frames, bonds), also with no bond of a kind (water)
            shape = (len(self.values[key]), len(self.pairs[key]))
            arrays[key] = np.asarray(self.values[key], dtype=np.float32).reshape(shape)
        return arrays


def _pressure_GPa(atoms: Atoms, results: dict) -> float:
    """Return the pressure (GPa) from the step's stress and the atoms' kinetic energy.

    ``nan`` where the step gave no stress (no cell periodic along all three vectors).
    """
    if "stress" not in results:
        return np.nan
    volume = atoms.get_volume()
    virial = -float(np.sum(np.asarray(results["stress"])[:3])) / 3
    kinetic = 2 * atoms.get_kinetic_energy() / (3 * volume)
    return (virial + kinetic) / units.GPa


_COUNTERS = ("reference_calls", "surrogate_calls", "rollbacks", "windows", "fallbacks")


def load_checkpoint(path: Path) -> dict | None:
    """Return the arrays of a job's checkpoint file (``None`` if there is none)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        state = {key: saved[key] for key in saved.files}
    missing = [key for key in (*_Recorder.KEYS, *_COUNTERS, "refresh_errors") if key not in state]
    if missing:
        raise ValueError(
            f"{path} was written by an older boostmd.validate (no {', '.join(missing)}); "
            "delete it, or use a new --out, to rerun this job"
        )
    return state


def _save(path: Path, state: dict) -> None:
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **state)
    partial.replace(path)


def run_job(
    job: Job,
    atoms: Atoms,
    dihedrals: Dihedrals,
    reference,
    surrogate,
    settings: MDSettings,
    checkpoints: Path,
    batch: ReplicaBatch | None = None,
    progress: tqdm | None = None,
) -> dict:
    """Run (or resume, or just load) one job; returns its observables and counters.

    Sampling jobs run ``equilibration_steps + steps`` Langevin steps; NVE jobs run
    ``nve_steps`` steps without a thermostat from Maxwell-Boltzmann momenta. ``dihedrals``
    are the atom indices of phi and psi (``None``: recorded as ``nan``). A run stops at
    its first collapsed frame (:func:`~boostmd.dynamics.stability.first_collapse`). The counters of
    BoostMD runs come from the calculator and integrator: ``reference_calls`` counts every
    reference call (reruns of undone windows and force-guard fallbacks too),
    ``rollbacks`` and ``windows`` the undone and all checked windows of
    ``BoostLangevin`` (with ASE's integrators: 0 and the windows ended),
    ``fallbacks`` the force guard's reference calls, and ``refresh_errors`` (eV) and
    ``refresh_force_errors`` (eV/Å) hold the calculator's refresh energy and force errors
    of every window, undone ones included.

    With ``batch``, the job's model calls go through that
    :class:`~boostmd.dynamics.replicas.ReplicaBatch` (it must hold ``reference`` and ``surrogate``;
    run the job inside :meth:`~boostmd.dynamics.replicas.ReplicaBatch.run` to batch them with other
    jobs'). ``progress``: a shared bar to count the steps on (default: a bar of its own).
    """
    path = checkpoints / f"{job.name}.npz"
    saved = load_checkpoint(path)
    structure = start_digest(atoms)
    _check_same_start(path, saved, structure)
    total = job.total_steps(settings)
    if saved is not None and bool(saved["finished"]):
        if progress is not None:
            progress.update(total)
        return job_result(job, saved)
    topology = BondTopology.of(atoms)  # of the starting structure, also on resume
    atoms = atoms.copy()
    calculator = _calculator(job, reference, surrogate, settings, batch)
    atoms.calc = calculator
    rng = np.random.default_rng(job.seed(settings, "noise"))
    if saved is None:
        thermal_momenta(
            atoms, settings.temperature_K, np.random.default_rng(job.seed(settings, "momenta"))
        )
        state = {"step": 0, "seconds": 0.0, **dict.fromkeys(_COUNTERS, 0)}
        refresh_errors: list[float] = []
        force_errors: list[float] = []
    else:
        if "cell" in saved:  # under a barostat the cell has changed since the start
            atoms.set_cell(saved["cell"], scale_atoms=False)
        atoms.positions = saved["positions"]
        atoms.set_momenta(saved["momenta"])
        rng.bit_generator.state = json.loads(str(saved["rng_state"]))
        state = {key: saved[key].item() for key in ("step", "seconds")}
        state.update({key: int(saved[key]) for key in _COUNTERS})
        refresh_errors = [float(x) for x in saved["refresh_errors"]]
        force_errors = [float(x) for x in _saved_force_errors(saved)]
        _restore_calibration(calculator, saved)
        _restore_schedule(calculator, saved)
    dynamics = _dynamics(job, atoms, settings, rng)
    if saved is not None and len(saved.get("xi", ())):
        dynamics.xi = np.array(saved["xi"], dtype=float)
    if saved is not None and len(saved.get("barostat_state", ())):
        dynamics.barostat_state = saved["barostat_state"]
    centred = job.uses_boostmd and getattr(calculator, "frame", "start") == "centred"
    recorder = _Recorder(
        atoms, topology, saved, audit=reference if centred else None, audit_every=settings.interval
    )

    def observe() -> None:
        recorder.observe(atoms, dihedrals, getattr(dynamics, "xi", None))
        collapse = first_collapse(atoms.positions[None], topology)
        if collapse is not None:  # stop here: the next steps could not even be computed
            raise _Collapsed(len(recorder.values["phi"]) - 1, collapse[1])

    dynamics.attach(observe, interval=1)  # ASE observes the first frame of a fresh run
    dynamics.nsteps = int(state["step"])  # and not again on resume
    collapse = None
    own_bar = progress is None
    if own_bar:
        progress = tqdm(total=total, initial=int(state["step"]), desc=job.name, leave=False)
    else:
        progress.update(int(state["step"]))  # done before a resume
    while state["step"] < total and collapse is None:
        segment = min(settings.checkpoint_every, total - int(state["step"]))
        before = _counters(calculator, dynamics)
        audit_before = recorder.audit_seconds
        start = time.perf_counter()
        try:
            _advance(dynamics, job, settings, int(state["step"]), segment)
        except _Collapsed as stop:
            collapse = (stop.frame, stop.reason)
            logger.warning("%s collapsed at frame %d: %s", job.name, *collapse)
        state["seconds"] += time.perf_counter() - start - (recorder.audit_seconds - audit_before)
        done = int(dynamics.nsteps) - int(state["step"])  # fewer than segment after a collapse
        state["step"] += done
        after = _counters(calculator, dynamics)
        for key in _COUNTERS:
            state[key] += after[key] - before[key]
        if not isinstance(calculator, BoostMDCalculator):
            state["reference_calls"] += done
        refresh_errors += _refresh_errors(calculator)[before["refresh_errors"] :]
        force_errors += _refresh_errors(calculator, "refresh_force_errors")[
            before["refresh_errors"] :
        ]
        progress.update(done)
        finished = state["step"] >= total or collapse is not None
        _save(
            path,
            {
                **recorder.arrays(),
                **state,
                "refresh_errors": np.asarray(refresh_errors, dtype=float),
                "refresh_force_errors": np.asarray(force_errors, dtype=float),
                "start_digest": structure,
                "positions": atoms.positions,
                "momenta": atoms.get_momenta(),
                "cell": atoms.cell.array,
                "barostat_state": getattr(dynamics, "barostat_state", np.zeros(0)),
                "xi": getattr(dynamics, "xi", np.zeros(0)),
                "rng_state": json.dumps(rng.bit_generator.state),
                "calibration": _calibration_state(calculator),
                "schedule": _schedule_state(calculator),
                "finished": finished,
                "collapse_frame": -1 if collapse is None else collapse[0],
                "collapse_reason": "" if collapse is None else collapse[1],
            },
        )
    if own_bar:
        progress.close()
    else:
        progress.update(total - int(state["step"]))  # not run after a collapse
    return job_result(job, load_checkpoint(path))


class _Collapsed(Exception):
    """Raised by a run's observer at its first collapsed frame, to stop the run there."""

    def __init__(self, frame: int, reason: str) -> None:
        super().__init__(f"collapsed at frame {frame}: {reason}")
        self.frame, self.reason = frame, reason


def _check_same_start(path: Path, saved: dict | None, start: str) -> None:
    """Refuse to resume a checkpoint that began from another starting structure.

    Checkpoints of older versions hold no digest and are resumed unchecked.
    """
    if saved is None or "start_digest" not in saved or str(saved["start_digest"]) == start:
        return
    raise ValueError(
        f"{path} began from another starting structure than this run's; resuming it would "
        "mix two systems. Delete it, or use a new --out, to rerun this job"
    )


def _advance(dynamics, job: Job, settings: MDSettings, step: int, count: int) -> None:
    """Run ``count`` steps from ``step``: equilibration steps at the equilibration friction.

    At friction 1/ps a dipeptide started from a minimum with Maxwell-Boltzmann momenta
    needs picoseconds to reach the bath temperature (the kinetic energy halves into the
    potential first): measured runs still averaged 160-230 K over their first 0.23 ps and
    only reached 300 K after about 2 ps, so the per-group temperatures of short runs
    compared transients, not equilibrium. A strong friction during the equilibration
    steps brings every run to the bath first; production runs at ``friction_per_ps``.
    """
    if not job.nve and step < settings.equilibration_steps:
        first = min(count, settings.equilibration_steps - step)
        _set_friction(dynamics, settings.equilibration_friction, settings.timestep_fs)
        dynamics.run(first)
        count -= first
    if count:
        if not job.nve:
            _set_friction(dynamics, settings.friction_per_ps, settings.timestep_fs)
        dynamics.run(count)


def _set_friction(dynamics, friction_per_ps: float, timestep_fs: float) -> None:
    """Set a Langevin integrator's friction if it changes.

    BoostLangevin then drops the window it integrated ahead with the old friction.
    """
    friction = ase_units(timestep_fs, friction_per_ps)[1]
    if dynamics.fr != friction:
        dynamics.set_friction(friction)


def _calibration_state(calculator) -> str:
    """Return the curvature calibration's state as JSON (``""`` without one)."""
    calibration = getattr(calculator, "calibration", None)
    return "" if calibration is None else json.dumps(calibration.state())


def _saved_calibration(saved: dict) -> CurvatureCalibration | None:
    """Return the curvature fit a checkpoint holds (None without one)."""
    state = str(saved["calibration"]) if "calibration" in saved else ""
    return CurvatureCalibration.from_state(json.loads(state)) if state else None


def _restore_calibration(calculator, saved: dict) -> None:
    calibration = _saved_calibration(saved)
    if calibration is not None and getattr(calculator, "calibration", None) is not None:
        calculator.calibration = calibration


def _schedule_state(calculator) -> str:
    """Return an error-controlled schedule's learned state as JSON (``""`` otherwise)."""
    state = getattr(getattr(calculator, "schedule", None), "state", None)
    return json.dumps(state()) if state is not None else ""


def _restore_schedule(calculator, saved: dict) -> None:
    state = str(saved["schedule"]) if "schedule" in saved else ""
    if state and hasattr(getattr(calculator, "schedule", None), "load_state"):
        calculator.schedule.load_state(json.loads(state))


def _refresh_errors(calculator, kind: str = "refresh_errors") -> list:
    return list(getattr(calculator, kind, None) or [])


def _saved_force_errors(saved: dict) -> np.ndarray:
    """Refresh force errors of a checkpoint (``nan`` per window where an older one has none)."""
    if "refresh_force_errors" in saved:
        return np.asarray(saved["refresh_force_errors"], dtype=float)
    return np.full(len(saved["refresh_errors"]), np.nan)


def _counters(calculator, dynamics) -> dict[str, int]:
    """Return the running totals of calculator and integrator (0 for a missing counter)."""
    stats = getattr(calculator, "stats", None)
    ended = len(_refresh_errors(calculator))  # one per window ended (ASE's integrators)
    return {
        "reference_calls": int(getattr(stats, "full_steps", 0)),
        "surrogate_calls": int(getattr(stats, "reuse_steps", 0)),
        "rollbacks": int(getattr(dynamics, "rollbacks", 0)),
        "windows": int(getattr(dynamics, "windows", ended)),
        "fallbacks": int(getattr(calculator, "fallbacks", 0)),
        "refresh_errors": ended,
    }


def job_result(job: Job, saved: dict) -> dict:
    """Observables up to (not including) the first collapsed frame, and the counters."""
    frame = int(saved["collapse_frame"])
    end = None if frame < 0 else frame  # frames after a collapse are not samples
    return {
        "job": job,
        **{key: saved[key][:end] for key in _Recorder.KEYS},
        **{
            key: saved[key][:end]
            for key in (
                *_Recorder.OPTIONAL,
                _Recorder.FORCES,
                *_Recorder.CELL,
                *_Recorder.AUDIT,
                "angles",
            )
            if key in saved
        },
        **(
            {"pair_counts": saved["pair_counts"][: None if end is None else histogram_rows(end)]}
            if "pair_counts" in saved
            else {}
        ),
        "seconds": float(saved["seconds"]),
        "steps": int(saved["step"]),
        **{key: int(saved[key]) for key in _COUNTERS},
        "refresh_errors": np.asarray(saved["refresh_errors"], dtype=float),
        "refresh_force_errors": _saved_force_errors(saved),
        "curvature_scale": getattr(_saved_calibration(saved), "scale", 1.0),
        "collapse": None if frame < 0 else (frame, str(saved["collapse_reason"])),
    }
