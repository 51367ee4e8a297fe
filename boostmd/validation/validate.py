r"""Does BoostMD sample what the reference samples? ``python -m boostmd.validate``.

For each system (a capped dipeptide by amino-acid code, or any molecule in a structure
file ``ase.io.read`` reads) it runs Langevin MD with the reference alone, a second
independent reference run (the noise floor) and BoostMD, all from the same starting
structures, plus short NVE runs of the reference and BoostMD. BoostMD runs with one
integrator or both (``--integrator``): ``checked`` (the default:
``boostmd.dynamics.integrator.BoostLangevin``, which undoes and reruns windows whose
refresh energy error is too large and, unless ``--no-energy-consistent``, gives each
accepted window's error back along the force error; NVE: no friction,
``energy_consistent=True``) and ``ase`` (ASE's Langevin with BoostMDCalculator; NVE:
velocity Verlet). By default each window is framed at its predicted time centre
(``--frame centred``; ``--frame start`` for ``--target-error`` and ``--calibrate``).
It compares observables that converge in picoseconds (per-group kinetic temperatures, X-H
and heavy bond-length distributions, the reference energy at BoostMD's refresh frames)
and, where the system has them, the phi/psi distributions (Jensen-Shannon divergence of
the Ramachandran histograms, 1-D PMF errors in kT), each against the same comparison
between the two reference runs; checks that no run collapses; and writes
``OUT/report.json``, ``OUT/summary.md`` and PNG plots (:mod:`boostmd.validation.report`
defines the metrics).

    python -m boostmd.validate --quick                       # ALA, ~8,900 reference calls
    python -m boostmd.validate --peptide ALA --integrator both --preset long
    python -m boostmd.validate --structure aspirin.xyz --surrogate fit/surrogate.pt
    python -m boostmd.validate --structure mine.pdb --reference ref.pt --surrogate s.pt \\
        --phi 4 6 8 14 --psi 6 8 14 16
    python -m boostmd.validate --preset standard --peptide GLN --workers 2
    torchrun --nproc-per-node 2 -m boostmd.validate --preset long --peptide ALA

``--reference`` names a shipped reference (``dipeptides``, the default; ``water``), a
boostmd weights file, or with ``--pickled-reference`` a mace-torch ``.model``; a shipped
name without ``--surrogate`` takes its shipped surrogate. The phi/psi metrics need
dihedrals: a capped dipeptide's backbone is found on its own, another molecule's are
given with ``--phi``/``--psi``; without them (or with ``--no-dihedrals``) those metrics
are reported as not computed, and the verdict rests on the others (the bond lengths at
least).

Every sampling run first equilibrates for ``--equilibration-steps`` at
``--equilibration-friction`` (20/ps), then samples at ``--friction``; ``--target-error MEV``
lets BoostMD choose each window's length for that refresh-error RMS
(:class:`integrators.ErrorControlled`).

All runs of a process advance together (:class:`boostmd.dynamics.replicas.ReplicaBatch`): every
round of model calls is one batched reference call for the runs that need the reference
and one batched surrogate call for the others. ``--no-batch`` runs them one after the other.

Runs checkpoint every ``--checkpoint-every`` steps; run the same command again to resume.
``--workers K`` runs them side by side in ``K`` worker processes
(:mod:`boostmd.validation.workers`: a local process pool, or a Dask cluster with
``--scheduler``), each run alone as with ``--no-batch``, so the report does not depend on
``K``. Under ``torchrun`` the runs are split across ranks (gloo on CPU, NCCL on GPU) and
rank 0 writes the report. A resumed or multi-process validation equals an uninterrupted one bit
for bit with ``--no-batch`` (and one thread); batched, its runs share their batched calls
with other runs than before, and agree to rounding at first and in their statistics after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io import read
from tqdm import tqdm

from boostmd.dynamics.adaptive import DEFAULT_TAU_FS
from boostmd.dynamics.barostat import DEFAULT_EVERY
from boostmd.dynamics.calculator import DEFAULT_INTERVAL, FRAMES
from boostmd.dynamics.periodic import whole_molecules
from boostmd.dynamics.replicas import ReplicaBatch
from boostmd.forcefields.mace_import import start_command
from boostmd.validation.dihedrals import backbone_dihedrals, dihedral_angles
from boostmd.validation.report import summary_markdown, system_report
from boostmd.validation.runs import (
    INTEGRATORS,
    Dihedrals,
    Job,
    MDSettings,
    job_result,
    load_checkpoint,
    roles,
    run_job,
)
from boostmd.validation.stored import STORE, load_run, run_key, save_run
from boostmd.validation.workers import executor, map_in_order, set_threads

__all__ = [
    "PRESETS",
    "System",
    "ValidationConfig",
    "main",
    "reference_calls",
    "starting_dipeptide",
    "validate",
]

logger = logging.getLogger(__name__)

# Run lengths (1 fs steps). The Boltzmann distribution does not depend on the Langevin
# friction, so the default is a light 1/ps: a strong thermostat hides a sampler that
# heats (README, "Use a thermostat"), and the temperature, bond-length and energy metrics
# are made to catch that within picoseconds. Costs are in reference calls per system with
# the default runs at N = 10 (three reference runs per replica, the reference-adaptive one
# included, the checked sampler's about 1/N of its steps, plus the NVE runs;
# reference_calls): multiply by the reference's time per call (0.13-0.25 s for the
# shipped model on one thread of a 2-core CPU; far less on a GPU).
PRESETS: dict[str, dict] = {
    # catches a broken surrogate: about 8,900 reference calls
    "quick": {"steps": 2500, "equilibration_steps": 250, "replicas": 1, "nve_steps": 300},
    # the README table: 2 x 3 ps per run and role, about 21,000 reference calls
    "standard": {"steps": 3000, "equilibration_steps": 300, "replicas": 2, "nve_steps": 500},
    # 2 x 20 ps per run and role, about 132,000 reference calls (128,000 of them the
    # reference runs, which the shipped store holds for ALA and GLN)
    "long": {"steps": 20_000, "equilibration_steps": 1000, "replicas": 2, "nve_steps": 2000},
    # converged alanine-dipeptide phi/psi statistics: 8 x 50 ps, about 1.3 million calls
    "full": {"steps": 50_000, "equilibration_steps": 2000, "replicas": 8, "nve_steps": 5000},
}


def reference_calls(
    steps: int,
    equilibration_steps: int,
    replicas: int,
    nve_steps: int,
    interval: int = 10,
    integrator: str = "checked",
    adaptive_reference: bool = True,
) -> int:
    """Estimate the reference calls of a validation per system (without reruns).

    The defaults are those of :class:`ValidationConfig`: the checked sampler and the
    ``reference-adaptive`` run.

    >>> reference_calls(**PRESETS["quick"])
    8855
    >>> reference_calls(**PRESETS["quick"], integrator="both", adaptive_reference=False)
    6410
    """
    samplers = len(INTEGRATORS[integrator])
    run = equilibration_steps + steps
    references = 3 if adaptive_reference else 2
    sampling = replicas * (references * run + samplers * run // interval)
    return sampling + nve_steps + samplers * nve_steps // interval


@dataclass
class ValidationConfig:
    """Everything a validation needs; :data:`PRESETS` fill the run lengths.

    The defaults are the validated settings: the checked sampler (``integrator``) with
    the energy-consistent refresh, the adaptive friction (``adaptive_tau_fs``) and its
    ``reference-adaptive`` noise floor, windows framed at their predicted centres
    (``frame``). ``reference`` is a shipped reference's name, a weights file, or with
    ``pickled_reference`` a mace-torch ``.model`` (``None`` with a ``surrogate``: the
    shipped ``dipeptides``; both ``None``: the shipped models). ``phi``/``psi`` are atom
    indices of ``structure``; ``dihedrals=False`` leaves the phi/psi metrics out.
    """

    out: Path
    peptides: list[str] = field(default_factory=list)
    structure: Path | None = None
    phi: tuple[int, ...] | None = None
    psi: tuple[int, ...] | None = None
    dihedrals: bool = True
    reference: str | Path | None = None
    surrogate: Path | None = None
    pickled_reference: bool = False
    interval: int | None = None  # None: the surrogate's fitted interval, else 10 (DEFAULT_INTERVAL)
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    equilibration_friction_per_ps: float | None = 20.0
    target_refresh_error_meV: float | None = None
    steps: int = PRESETS["quick"]["steps"]
    equilibration_steps: int = PRESETS["quick"]["equilibration_steps"]
    replicas: int = PRESETS["quick"]["replicas"]
    nve_steps: int = PRESETS["quick"]["nve_steps"]
    checkpoint_every: int = 500
    seed: int = 0
    integrator: str = "checked"
    energy_consistent: bool = True
    calibrate: bool = False
    frame: str = "centred"
    adaptive_tau_fs: float | None = DEFAULT_TAU_FS
    adaptive_reference: bool = True
    batch: bool = True
    reference_runs: Path | None = STORE
    store_reference_runs: bool = False
    workers: int | None = None  # None: the runs of this process, in it (or batched)
    threads_per_worker: int = 1
    scheduler: str | None = None  # a Dask scheduler's address for the workers
    pressure_GPa: float | None = None  # None: constant volume
    barostat_every: int = DEFAULT_EVERY  # steps between the checked sampler's volume moves

    @property
    def runs_adaptive_reference(self) -> bool:
        """Whether the ``reference-adaptive`` run (a second noise floor) is part of it.

        It is, unless switched off, whenever the checked sampler runs with the adaptive
        friction, at constant pressure (where BoostMD runs under the adaptive friction),
        and when only the reference runs are made (to store them).
        """
        at_constant_pressure = self.pressure_GPa is not None  # BoostMD: adaptive NPT
        return (
            self.adaptive_reference
            and self.adaptive_tau_fs is not None
            and (self.integrator in ("checked", "both", "none") or at_constant_pressure)
        )

    def settings(self) -> MDSettings:
        """Return the integration settings shared by every run.

        An unset ``interval`` is 10 (``DEFAULT_INTERVAL``) here; :func:`validate` first
        sets it from the surrogate.
        """
        interval = self.interval or DEFAULT_INTERVAL
        if self.frame == "centred" and (self.target_refresh_error_meV or self.calibrate):
            given = "--target-error" if self.target_refresh_error_meV else "--calibrate"
            raise ValueError(
                f"{given} needs --frame start: --frame centred (the default) runs BoostMD "
                "at a fixed --interval with the surrogate as trained; add --frame start, "
                f"or leave out {given}"
            )
        if self.store_reference_runs and self.reference_runs is None:
            raise ValueError("--store-reference-runs needs a --reference-runs folder to write to")
        if self.checkpoint_every % interval:
            raise ValueError(
                f"--checkpoint-every ({self.checkpoint_every}) must be a multiple of "
                f"--interval ({interval}) so resumed BoostMD runs keep their schedule"
            )
        return MDSettings(
            temperature_K=self.temperature_K,
            timestep_fs=self.timestep_fs,
            friction_per_ps=self.friction_per_ps,
            equilibration_friction_per_ps=self.equilibration_friction_per_ps,
            target_refresh_error_meV=self.target_refresh_error_meV,
            steps=self.steps,
            equilibration_steps=self.equilibration_steps,
            nve_steps=self.nve_steps,
            interval=interval,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            energy_consistent=self.energy_consistent,
            calibrate=self.calibrate,
            frame=self.frame,
            adaptive_tau_fs=self.adaptive_tau_fs,
            pressure_GPa=self.pressure_GPa,
            barostat_every=self.barostat_every,
        )


# phi of an L-residue's main basins (beta, C5, C7eq, alpha_R): where a run should start
MAIN_BASIN_PHI = (-180.0, -45.0)


def starting_dipeptide(code: str, seeds: int = 20) -> Atoms:
    """Build the capped dipeptide from RDKit's first conformer with phi in a main basin.

    Seeds 0, 1, ... are tried in turn.

    RDKit's embedding can put phi in the left-handed region (GLN, seed 0: phi = +86
    degrees), a basin an L-residue's reference run leaves only after 1-14 ps. A run of a
    few picoseconds from there measures that escape (which way, how soon), not the
    Boltzmann distribution, so the validation starts from a conformer with phi in
    :data:`MAIN_BASIN_PHI`, as seed 0 already is for ALA, THR, ILE and TRP.
    """
    from boostmd.forcefields.peptides import capped_dipeptide

    for seed in range(seeds):
        atoms = capped_dipeptide(code, seed)
        phi, _ = backbone_dihedrals(atoms)
        angle = float(dihedral_angles(atoms.positions[None], phi)[0])
        if MAIN_BASIN_PHI[0] <= angle <= MAIN_BASIN_PHI[1]:
            if seed:
                logger.info("%s starts from RDKit's conformer %d (phi %.0f)", code, seed, angle)
            return atoms
    raise RuntimeError(
        f"none of RDKit's first {seeds} conformers of {code} has phi in {MAIN_BASIN_PHI}; "
        "pass a structure of your own with --structure"
    )


# why a system's phi/psi metrics are not computed
NO_BACKBONE = "no dihedrals: not a capped dipeptide and no --phi/--psi given"
SWITCHED_OFF = "no dihedrals: switched off (--no-dihedrals)"


class System(NamedTuple):
    """A system to validate.

    ``dihedrals``: the phi/psi atom indices its runs record (``None``: none);
    ``no_dihedrals``: why its phi/psi metrics are not computed (``""``: they are).
    """

    atoms: Atoms
    dihedrals: Dihedrals
    no_dihedrals: str = ""


def _systems(config: ValidationConfig) -> dict[str, System]:
    """Return every system to validate, by name."""
    from boostmd.forcefields.peptides import residue_code

    if (config.phi is None) != (config.psi is None):
        raise ValueError("pass both --phi and --psi (four atom indices each), or neither")
    if config.phi is not None and config.structure is None:
        raise ValueError(
            "--phi and --psi name atoms of --structure FILE; a --peptide's backbone "
            "dihedrals are found on their own"
        )
    off = "" if config.dihedrals else SWITCHED_OFF
    systems = {}
    for code in config.peptides:
        atoms = starting_dipeptide(code)
        systems[residue_code(code)] = System(atoms, backbone_dihedrals(atoms), off)
    if config.structure is not None:
        atoms = _read_structure(config.structure)
        dihedrals = _structure_dihedrals(atoms, config)
        why = off or ("" if dihedrals else NO_BACKBONE)
        if why:
            logger.info("%s: phi/psi metrics not computed (%s)", config.structure.name, why)
        systems[config.structure.stem] = System(atoms, dihedrals, why)
    if not systems:
        raise ValueError("nothing to validate: pass --peptide CODE or --structure FILE")
    return systems


def _read_structure(path: Path) -> Atoms:
    if not path.is_file():
        raise FileNotFoundError(f"--structure {path} does not exist")
    try:
        atoms = read(path)
    except Exception as error:  # ASE raises many kinds for a file it cannot parse
        raise ValueError(
            f"--structure {path}: ASE cannot read it ({error}); give a file ase.io.read "
            "reads (xyz, extxyz, pdb, cif, ...)"
        ) from error
    return whole_molecules(atoms)  # a wrapped file's molecules split across faces


def _structure_dihedrals(atoms: Atoms, config: ValidationConfig) -> Dihedrals:
    """``--phi``/``--psi`` if given, else a capped dipeptide's backbone, else ``None``."""
    if config.phi is None:
        try:
            return backbone_dihedrals(atoms)
        except ValueError:
            return None
    dihedrals = (tuple(map(int, config.phi)), tuple(map(int, config.psi)))
    for name, indices in zip(("--phi", "--psi"), dihedrals, strict=True):
        if len(indices) != 4 or len(set(indices)) != 4:
            raise ValueError(f"{name} needs four different atom indices, got {list(indices)}")
        if not all(0 <= i < len(atoms) for i in indices):
            raise ValueError(
                f"{name} {' '.join(map(str, indices))}: {config.structure} has atoms 0 to "
                f"{len(atoms) - 1}"
            )
    return dihedrals


def _models(config: ValidationConfig):
    """Load the reference and surrogate: the user's, or shipped models.

    The reference runs alone (``integrator="none"``) need no surrogate: ``--reference``
    alone is then enough. A shipped reference's name alone (``--reference water``) takes
    its shipped surrogate; neither, the shipped dipeptide models.
    """
    from boostmd.dynamics.calculator import check_compatible
    from boostmd.forcefields.pretrained import PRETRAINED, load_pretrained, load_reference
    from boostmd.forcefields.surrogate import Surrogate

    if config.surrogate is None:
        if config.reference is not None and config.integrator == "none":
            return load_reference(config.reference, pickled=config.pickled_reference), None
        shipped = str(config.reference) in PRETRAINED and not config.pickled_reference
        if config.reference is not None and not shipped:
            raise ValueError(
                f"--reference {config.reference} needs its surrogate: pass --surrogate FILE "
                "too, or leave both out for the shipped dipeptide models"
            )
        return load_pretrained(str(config.reference or "dipeptides"))
    if config.pickled_reference and config.reference is None:
        raise ValueError("--pickled-reference needs --reference FILE.model to load")
    reference = load_reference(config.reference or "dipeptides", pickled=config.pickled_reference)
    surrogate = Surrogate.load(config.surrogate, dtype=reference.dtype)
    try:
        check_compatible(reference, surrogate)
    except ValueError as error:
        if config.reference is not None:
            raise
        raise ValueError(
            f"{error} (without --reference the reference is the shipped dipeptides one: "
            f"pass --reference MODEL, the model {config.surrogate} was made for)"
        ) from error
    return reference, surrogate


def _systems_and_models(config: ValidationConfig, warm_up: bool = True):
    """Build the systems and load the models; with ``warm_up``, ready to run jobs.

    Warming up runs the reference twice on every system before any run: the first forward
    passes of a TorchScript model in a process can differ from later ones in the last bits
    (the profiling executor has not specialised yet). Without it, a run's numbers would
    depend on whether it was the first in its process, and resumed or multi-process
    validations would differ slightly from uninterrupted ones.
    """
    systems = _systems(config)
    reference, surrogate = _models(config)
    if warm_up:
        for system in systems.values():
            for _ in range(2):
                reference(system.atoms)
    return systems, reference, surrogate


def _jobs(
    systems: dict,
    replicas: int,
    integrator: str = "both",
    adaptive_reference: bool = False,
    nve_runs: bool = True,
) -> list[Job]:
    sampling, nve = roles(integrator, adaptive_reference)
    nve = nve if nve_runs else ()
    jobs = [
        Job(system, role, replica)
        for system in systems
        for replica in range(replicas)
        for role in sampling
    ]
    return jobs + [Job(system, role, 0) for system in systems for role in nve]


def _process_group():
    """``(rank, world size)``, joining the torchrun process group when launched by it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _gather(results: list[dict], world: int) -> list[dict]:
    if world == 1:
        return results
    import torch.distributed as dist

    gathered: list[list[dict] | None] = [None] * world
    dist.all_gather_object(gathered, results)
    return [result for part in gathered for result in part]


def _fitted_interval(config: ValidationConfig, surrogate) -> ValidationConfig:
    """Fill in the interval: the one a fit stored with the surrogate, else the default.

    The checkpoints then fall on a multiple of it (the nearest to ``checkpoint_every``).
    ``surrogate`` is ``None`` when the reference runs alone.
    """
    if config.interval is not None:
        return config
    interval = getattr(surrogate, "recommended_interval", None) or DEFAULT_INTERVAL
    every = max(interval, interval * round(config.checkpoint_every / interval))
    return replace(config, interval=interval, checkpoint_every=every)


def validate(config: ValidationConfig, command: str = "") -> list[dict] | None:
    """Run (or resume) a validation; rank 0 writes the report and returns it.

    Returns
    -------
    list of dict or None
        One report per system on rank 0 (also in ``OUT/report.json``); ``None`` elsewhere.
    """
    roles(config.integrator)  # names a bad --integrator before any work
    # with --workers the runs are made (and the reference warmed up) in the workers
    systems, reference, surrogate = _systems_and_models(config, config.workers is None)
    config = _fitted_interval(config, surrogate)
    settings = config.settings()
    rank, world = _process_group()
    checkpoints = config.out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(
        systems,
        config.replicas,
        config.integrator,
        config.runs_adaptive_reference,
        nve_runs=config.nve_steps > 0,
    )
    logger.info(
        "about %d reference calls per system",
        reference_calls(
            config.steps,
            config.equilibration_steps,
            config.replicas,
            config.nve_steps,
            config.interval,
            config.integrator,
            config.runs_adaptive_reference,
        ),
    )
    stored, to_run = _stored_runs(config, jobs, systems, reference.fingerprint, settings)
    mine = [job for index, job in enumerate(to_run) if index % world == rank]
    store = None
    if config.store_reference_runs:
        store = partial(
            _store, config.reference_runs, systems, reference.fingerprint, settings, checkpoints
        )
    if config.workers is not None:
        if world > 1:
            raise ValueError(
                "--workers starts its own worker processes: run it without torchrun, or "
                "leave out --workers under torchrun"
            )
        results = _run_on_workers(config, mine)
    else:
        results = _run_jobs(
            mine, systems, reference, surrogate, settings, checkpoints, config.batch, store
        )
    results = stored + results if rank == 0 else results
    results = _gather(results, world)
    if rank != 0:
        return None
    reports = []
    for name, system in systems.items():
        own = [r for r in results if r["job"].system == name]
        reports.append(
            system_report(
                name,
                own,
                settings,
                len(system.atoms),
                own_wall_clock=not config.batch or config.workers is not None,
                no_dihedrals=system.no_dihedrals,
                symbols=[chemical_symbols[z] for z in np.unique(system.atoms.numbers)],
                numbers=system.atoms.numbers,
            )
        )
        _plot(config.out, name, own, settings, reports[-1])
    payload = {"command": command, "config": _jsonable(asdict(config)), "systems": reports}
    (config.out / "report.json").write_text(json.dumps(payload, indent=2))
    (config.out / "summary.md").write_text(summary_markdown(reports, settings, command))
    return reports


def _stored_runs(
    config: ValidationConfig,
    jobs: list[Job],
    systems: dict[str, System],
    fingerprint: str,
    settings: MDSettings,
) -> tuple[list[dict], list[Job]]:
    """Split the jobs into stored reference runs (their results) and the jobs to run.

    A job is taken from the store when it is a reference run, its own checkpoint does not
    exist, and the store holds a run with the same :func:`~boostmd.validation.stored.run_key`
    (so ``--store-reference-runs`` runs only the runs the store lacks).
    """
    if config.reference_runs is None:
        return [], jobs
    stored, to_run = [], []
    for job in jobs:
        arrays = None
        if not job.uses_boostmd and not (config.out / "checkpoints" / f"{job.name}.npz").exists():
            arrays = load_run(config.reference_runs, _key(job, systems, fingerprint, settings))
        if arrays is None:
            to_run.append(job)
        else:
            stored.append(job_result(job, arrays))
    if stored:
        logger.info("%d reference runs from %s", len(stored), config.reference_runs)
    return stored, to_run


def _key(job: Job, systems: dict[str, System], fingerprint: str, settings: MDSettings) -> dict:
    system = systems[job.system]
    return run_key(job, system.atoms, fingerprint, settings, system.dihedrals)


def _store(
    store: Path,
    systems: dict[str, System],
    fingerprint: str,
    settings: MDSettings,
    checkpoints: Path,
    jobs: list[Job],
) -> None:
    """Write the finished reference runs among ``jobs`` into ``store``."""
    for job in jobs:
        if job.uses_boostmd:
            continue
        checkpoint = load_checkpoint(checkpoints / f"{job.name}.npz")
        key = _key(job, systems, fingerprint, settings)
        logger.info("stored %s", save_run(store, key, checkpoint))


def _run_jobs(
    jobs: list[Job],
    systems: dict[str, System],
    reference,
    surrogate,
    settings,
    checkpoints: Path,
    batch: bool,
    store=None,
) -> list[dict]:
    """Run the jobs one after the other, or all together with batched model calls.

    ``store`` (a callable taking a list of jobs) is given each job as soon as it has
    finished, so that a long set of runs stopped part way keeps what it finished.
    """
    store = store or (lambda finished: None)
    if not batch:
        results = []
        for job in jobs:
            system = systems[job.system]
            results.append(
                run_job(
                    job,
                    system.atoms,
                    system.dihedrals,
                    reference,
                    surrogate,
                    settings,
                    checkpoints,
                )
            )
            store([job])
        return results
    replicas = ReplicaBatch(reference, surrogate)
    steps = sum(job.total_steps(settings) for job in jobs)
    with tqdm(total=steps, desc=f"{len(jobs)} runs together", unit="step") as progress:
        results = replicas.run(
            [
                partial(
                    run_job,
                    job,
                    systems[job.system].atoms,
                    systems[job.system].dihedrals,
                    replicas.reference_model,
                    replicas.surrogate_model,
                    settings,
                    checkpoints,
                    batch=replicas,
                    progress=progress,
                )
                for job in jobs
            ]
        )
    store(jobs)
    return results


# The models and systems of a worker process (_run_in_worker), loaded once per process.
_WORKER_STATE: dict[str, tuple] = {}


def _run_on_workers(config: ValidationConfig, jobs: list[Job]) -> list[dict]:
    """Run the jobs side by side on ``config.workers`` workers (:mod:`.workers`)."""
    with executor(config.workers, config.threads_per_worker, config.scheduler) as pool:
        return map_in_order(
            pool, _run_in_worker, jobs, config, limit=config.workers, describe=lambda j: j.name
        )


def _run_in_worker(job: Job, config: ValidationConfig) -> dict:
    """Run one job in a worker process, as ``--no-batch`` runs it in one process.

    The models and systems are loaded and the reference warmed up
    (:func:`_systems_and_models`) on the first job a process gets; a finished reference
    run is stored when ``config.store_reference_runs``.
    """
    set_threads(config.threads_per_worker)
    key = repr(config)
    if key not in _WORKER_STATE:
        _WORKER_STATE.clear()
        _WORKER_STATE[key] = _systems_and_models(config)
    systems, reference, surrogate = _WORKER_STATE[key]
    settings, checkpoints = config.settings(), config.out / "checkpoints"
    system = systems[job.system]
    result = run_job(
        job, system.atoms, system.dihedrals, reference, surrogate, settings, checkpoints
    )
    if config.store_reference_runs:
        _store(config.reference_runs, systems, reference.fingerprint, settings, checkpoints, [job])
    return result


def _plot(out: Path, name: str, results: list[dict], settings: MDSettings, report: dict) -> None:
    try:
        from boostmd.validation.plots import (
            plot_bonds_and_temperatures,
            plot_free_energy_surfaces,
            plot_pmfs,
        )
    except ImportError as error:  # matplotlib is optional
        logger.warning("no plots (%s); pip install matplotlib", error)
        return
    skip = settings.equilibration_steps + 1
    by_role = {role: [r for r in results if r["job"].role == role] for role in report["frames"]}

    def pooled(runs: list[dict], key: str) -> np.ndarray:
        return np.concatenate([r[key][skip:].ravel() for r in runs])

    title = f"{name}, {settings.temperature_K:g} K, BoostMD N = {settings.interval}"
    if not report["no_dihedrals"]:
        samples = {
            role: (pooled(runs, "phi"), pooled(runs, "psi")) for role, runs in by_role.items()
        }
        plot_free_energy_surfaces(out / f"{name}-free-energy.png", samples, title)
        plot_pmfs(out / f"{name}-pmf.png", samples, title)
    bonds = {
        role: (pooled(runs, "bonds_xh"), pooled(runs, "bonds_heavy"))
        for role, runs in by_role.items()
    }
    plot_bonds_and_temperatures(
        out / f"{name}-bonds-temperatures.png",
        bonds,
        report["group_temperature_K"],
        settings.temperature_K,
        title,
    )


def _jsonable(values: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = ValidationConfig(out=Path())
    parser.add_argument("--peptide", action="append", default=[], help="amino-acid code")
    parser.add_argument("--structure", type=Path, help="your own structure file (ASE-readable)")
    parser.add_argument(
        "--phi",
        type=int,
        nargs=4,
        help="atom indices of a dihedral of --structure to judge as phi (with --psi); a "
        "capped dipeptide's backbone is found without",
    )
    parser.add_argument("--psi", type=int, nargs=4, help="atom indices of psi (with --phi)")
    parser.add_argument(
        "--no-dihedrals",
        dest="dihedrals",
        action="store_false",
        help="leave the phi/psi metrics out (not computed), even for a dipeptide",
    )
    parser.add_argument(
        "--reference",
        metavar="MODEL",
        help="reference MACE: a shipped reference's name (dipeptides, the default with "
        "--surrogate), a boostmd weights file, or with --pickled-reference a mace-torch .model",
    )
    parser.add_argument(
        "--surrogate",
        type=Path,
        help="the reference's surrogate (a file of Surrogate.save, e.g. python -m "
        "boostmd.fit's); without it a shipped --reference takes its shipped surrogate, "
        "and leaving out both means the shipped dipeptide models",
    )
    parser.add_argument(
        "--pickled-reference",
        action="store_true",
        help="--reference is a pickled MACE .model (runs code from the file: trust it)",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument(
        "--integrator",
        choices=sorted(INTEGRATORS),
        default=None,
        help="BoostMD samplers to run: checked (BoostLangevin, checked windows; default), "
        "ase (ASE Langevin, or LangevinBAOAB with --pressure, + BoostMDCalculator), both, "
        "or none (the reference runs alone)",
    )
    parser.add_argument(
        "--pressure",
        type=float,
        default=None,
        metavar="GPA",
        help="run every sampling run at this pressure (GPa) and judge the density too (a "
        "fully periodic --structure): the reference runs under ASE's LangevinBAOAB and its "
        "hydrostatic barostat (boostmd.dynamics.npt), the checked sampler with Monte Carlo "
        "volume moves (boostmd.dynamics.barostat)",
    )
    parser.add_argument(
        "--barostat-every",
        type=int,
        default=defaults.barostat_every,
        metavar="STEPS",
        help="with --pressure: steps between the checked sampler's Monte Carlo volume moves",
    )
    parser.add_argument(
        "--energy-consistent",
        action=argparse.BooleanOptionalAction,
        default=defaults.energy_consistent,
        help="the checked sampler removes each accepted refresh error from the kinetic "
        "energy, along the force error (BoostLangevin(energy_consistent=True); default on)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="BoostMD calculators fit the scale of the surrogate's curvature to the refresh "
        "errors as they run (BoostMDCalculator(calibration=True)); needs --frame start",
    )
    parser.add_argument(
        "--frame",
        choices=FRAMES,
        default=defaults.frame,
        help="where BoostMD frames each window: at its predicted time centre "
        "(BoostMDCalculator(frame='centred'); default) or at its start (for --target-error "
        "and --calibrate)",
    )
    parser.add_argument(
        "--adaptive-tau",
        type=float,
        default=defaults.adaptive_tau_fs,
        help="fs: response time of the checked sampler's per-atom adaptive friction "
        f"(boostmd.dynamics.adaptive; default {DEFAULT_TAU_FS:g}); 0 runs plain Langevin steps",
    )
    parser.add_argument(
        "--adaptive-reference",
        action=argparse.BooleanOptionalAction,
        default=defaults.adaptive_reference,
        help="also run the reference alone under the checked sampler's adaptive friction "
        "(role reference-adaptive) and take each metric's noise floor as the larger of "
        "reference-2's and its distance from the reference (default on)",
    )
    for name in ("steps", "equilibration_steps", "replicas", "nve_steps"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help="overrides the preset")
    parser.add_argument(
        "--interval",
        type=int,
        default=defaults.interval,
        help="BoostMD's window length (default: the interval python -m boostmd.fit stored "
        "with the surrogate, else 10, the shipped surrogate's validated interval)",
    )
    parser.add_argument(
        "--target-error",
        type=float,
        help="meV: BoostMD chooses each window's length (2-20 steps, from --interval) so "
        "that the refresh energy error is about this RMS (integrators.ErrorControlled; needs "
        "--frame start); a resumed run then starts a new window where it stopped (the same "
        "statistics, not the same trajectory)",
    )
    parser.add_argument("--temperature", type=float, default=defaults.temperature_K)
    parser.add_argument("--timestep", type=float, default=defaults.timestep_fs, help="fs")
    parser.add_argument("--friction", type=float, default=defaults.friction_per_ps, help="1/ps")
    parser.add_argument(
        "--equilibration-friction",
        type=float,
        default=defaults.equilibration_friction_per_ps,
        help="friction (1/ps) of the equilibration steps, which bring every run to the bath "
        "temperature before the production steps at --friction",
    )
    parser.add_argument(
        "--batch",
        action=argparse.BooleanOptionalAction,
        default=defaults.batch,
        help="advance all runs together, their reference and surrogate calls batched "
        "(boostmd.dynamics.replicas.ReplicaBatch; default on). --no-batch runs them one after the "
        "other, which makes a resumed or multi-process validation equal to an "
        "uninterrupted one bit for bit",
    )
    parser.add_argument(
        "--reference-runs",
        type=Path,
        default=defaults.reference_runs,
        help="folder of stored reference runs: a reference run whose system, model and MD "
        "settings match one there is taken from it instead of being run (default: the "
        "shipped runs, boostmd/validation/reference_runs)",
    )
    parser.add_argument(
        "--no-stored-reference",
        action="store_true",
        help="run every reference run, taking none from --reference-runs",
    )
    parser.add_argument(
        "--store-reference-runs",
        action="store_true",
        help="run the reference runs and write them into --reference-runs (with "
        "--integrator none to run only them)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="run the independent MD runs side by side in this many worker processes, each "
        "as --no-batch runs it (the report is the same as with one worker); with "
        "--scheduler, the runs in flight at once on the Dask cluster",
    )
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=defaults.threads_per_worker,
        help="torch threads of each worker (default 1: --workers 2 fills a 2-core CPU)",
    )
    parser.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler (tcp://HOST:8786) to send the runs to "
        "instead of local processes (pip install 'boostmd[cluster]'); OUT must be on a "
        "file system the Dask workers share",
    )
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=Path("boostmd-validation"))
    return parser


def chosen_integrator(args: argparse.Namespace) -> str:
    """``--integrator``, else the default: the checked sampler."""
    return ValidationConfig.integrator if args.integrator is None else args.integrator


def main(argv: list[str] | None = None) -> None:
    """Command line: map arguments onto :class:`ValidationConfig` and validate."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    start_command(logging.WARNING)
    preset = dict(PRESETS["quick" if args.quick else args.preset])
    preset.update(
        {
            key: getattr(args, key)
            for key in ("steps", "equilibration_steps", "replicas", "nve_steps")
            if getattr(args, key) is not None
        }
    )
    config = replace(
        ValidationConfig(out=args.out, **preset),
        peptides=args.peptide or ([] if args.structure else ["ALA"]),
        structure=args.structure,
        phi=args.phi,
        psi=args.psi,
        dihedrals=args.dihedrals,
        reference=args.reference,
        surrogate=args.surrogate,
        pickled_reference=args.pickled_reference,
        interval=args.interval,
        temperature_K=args.temperature,
        timestep_fs=args.timestep,
        friction_per_ps=args.friction,
        equilibration_friction_per_ps=args.equilibration_friction,
        target_refresh_error_meV=args.target_error,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        integrator=chosen_integrator(args),
        pressure_GPa=args.pressure,
        barostat_every=args.barostat_every,
        energy_consistent=args.energy_consistent,
        calibrate=args.calibrate,
        frame=args.frame,
        adaptive_tau_fs=args.adaptive_tau or None,
        adaptive_reference=args.adaptive_reference,
        batch=args.batch,
        reference_runs=None if args.no_stored_reference else args.reference_runs,
        store_reference_runs=args.store_reference_runs,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        scheduler=args.scheduler,
    )
    command = "python -m boostmd.validate " + shlex.join(argv)
    reports = validate(config, command)
    if reports is not None:
        print((config.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
