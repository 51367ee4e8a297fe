r"""Does BoostMD sample what the reference samples? ``python -m boostmd.validate``.

For each system (a capped dipeptide by amino-acid code, or a structure file) it runs
Langevin MD with the reference alone, a second independent reference run (the noise
floor) and BoostMD, all from the same starting structures, plus short NVE runs of the
reference and BoostMD. BoostMD runs with one integrator or both (``--integrator``):
``ase`` (ASE's Langevin with BoostMDCalculator; NVE: velocity Verlet) and ``checked``
(``boostmd.dynamics.integrator.BoostLangevin``, which undoes and reruns windows whose refresh
energy error is too large and, unless ``--no-energy-consistent``, gives each accepted
window's error back along the force error; NVE: no friction, ``energy_consistent=True``).
It compares observables that converge in picoseconds (per-group kinetic temperatures, X-H
and heavy bond-length distributions, the reference energy at BoostMD's refresh frames) and
the backbone phi/psi distributions (Jensen-Shannon divergence of the Ramachandran
histograms, 1-D PMF errors in kT), each against the same comparison between the two
reference runs; checks that no run collapses; and writes ``OUT/report.json``,
``OUT/summary.md`` and PNG plots (:mod:`boostmd.validation.report` defines the metrics).

    python -m boostmd.validate --quick                       # ALA, ~6,400 reference calls
    python -m boostmd.validate --peptide ALA --integrator checked --preset long
    python -m boostmd.validate --structure mine.xyz --reference ref.pt --surrogate s.pt \\
        --phi 4 6 8 14 --psi 6 8 14 16
    torchrun --nproc-per-node 4 -m boostmd.validate --preset full --peptide ALA

Every sampling run first equilibrates for ``--equilibration-steps`` at
``--equilibration-friction`` (20/ps), then samples at ``--friction``; ``--target-error MEV``
lets BoostMD choose each window's length for that refresh-error RMS
(:class:`integrators.ErrorControlled`).

All runs of a process advance together (:class:`boostmd.dynamics.replicas.ReplicaBatch`): every
round of model calls is one batched reference call for the runs that need the reference
and one batched surrogate call for the others. ``--no-batch`` runs them one after the other.

Runs checkpoint every ``--checkpoint-every`` steps; run the same command again to resume.
Under ``torchrun`` the runs are split across ranks (gloo on CPU, NCCL on GPU) and rank 0
writes the report. A resumed or multi-process validation equals an uninterrupted one bit
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

import numpy as np
from ase import Atoms
from ase.io import read
from tqdm import tqdm

from boostmd.dynamics.adaptive import DEFAULT_TAU_FS
from boostmd.dynamics.calculator import FRAMES
from boostmd.dynamics.replicas import ReplicaBatch
from boostmd.forcefields.mace_import import start_command
from boostmd.validation.dihedrals import backbone_dihedrals, dihedral_angles
from boostmd.validation.report import summary_markdown, system_report
from boostmd.validation.runs import (
    INTEGRATORS,
    Job,
    MDSettings,
    job_result,
    load_checkpoint,
    roles,
    run_job,
)
from boostmd.validation.stored import STORE, load_run, run_key, save_run

__all__ = [
    "PRESETS",
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
# are made to catch that within picoseconds. Costs are in reference calls per dipeptide
# with both integrators at N = 10 (two reference runs per replica, each BoostMD run
# about 1/N of its steps, plus the NVE runs): multiply by the reference's time per call
# (0.13-0.25 s for the shipped model on one thread of a 2-core CPU; far less on a GPU).
PRESETS: dict[str, dict] = {
    # catches a broken surrogate: about 6,400 reference calls
    "quick": {"steps": 2500, "equilibration_steps": 250, "replicas": 1, "nve_steps": 300},
    # the README table: 2 x 3 ps per run and role, about 15,000 reference calls
    "standard": {"steps": 3000, "equilibration_steps": 300, "replicas": 2, "nve_steps": 500},
    # 2 x 20 ps per run and role, about 95,000 reference calls (86,000 of them the
    # reference runs, which the shipped store holds for ALA and GLN once computed)
    "long": {"steps": 20_000, "equilibration_steps": 1000, "replicas": 2, "nve_steps": 2000},
    # converged alanine-dipeptide phi/psi statistics: 8 x 50 ps, about 920,000 calls
    "full": {"steps": 50_000, "equilibration_steps": 2000, "replicas": 8, "nve_steps": 5000},
}


def reference_calls(
    steps: int,
    equilibration_steps: int,
    replicas: int,
    nve_steps: int,
    interval: int = 10,
    integrator: str = "both",
    adaptive_reference: bool = False,
) -> int:
    """Estimate the reference calls of a validation per system (without reruns).

    >>> reference_calls(**PRESETS["quick"])
    6410
    """
    samplers = len(INTEGRATORS[integrator])
    run = equilibration_steps + steps
    references = 3 if adaptive_reference else 2
    sampling = replicas * (references * run + samplers * run // interval)
    return sampling + nve_steps + samplers * nve_steps // interval


@dataclass
class ValidationConfig:
    """Everything a validation needs; :data:`PRESETS` fill the run lengths."""

    out: Path
    peptides: list[str] = field(default_factory=list)
    structure: Path | None = None
    phi: tuple[int, ...] | None = None
    psi: tuple[int, ...] | None = None
    reference: Path | None = None
    surrogate: Path | None = None
    pickled_reference: bool = False
    interval: int = 10
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
    integrator: str = "both"
    energy_consistent: bool = True
    calibrate: bool = False
    frame: str = "start"
    adaptive_tau_fs: float | None = DEFAULT_TAU_FS
    adaptive_reference: bool = True
    batch: bool = True
    reference_runs: Path | None = STORE
    store_reference_runs: bool = False

    @property
    def runs_adaptive_reference(self) -> bool:
        """Whether the ``reference-adaptive`` run (a second noise floor) is part of it.

        It is, unless switched off, whenever the checked sampler runs with the adaptive
        friction, and when only the reference runs are made (to store them).
        """
        return (
            self.adaptive_reference
            and self.adaptive_tau_fs is not None
            and self.integrator in ("checked", "both", "none")
        )

    def settings(self) -> MDSettings:
        """Return the integration settings shared by every run."""
        if self.frame == "centred" and (self.target_refresh_error_meV or self.calibrate):
            raise ValueError(
                "--frame centred runs BoostMD at a fixed --interval with the surrogate as "
                "trained: leave out --target-error and --calibrate"
            )
        if self.store_reference_runs and self.reference_runs is None:
            raise ValueError("--store-reference-runs needs a --reference-runs folder to write to")
        if self.checkpoint_every % self.interval:
            raise ValueError(
                f"--checkpoint-every ({self.checkpoint_every}) must be a multiple of "
                f"--interval ({self.interval}) so resumed BoostMD runs keep their schedule"
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
            interval=self.interval,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            energy_consistent=self.energy_consistent,
            calibrate=self.calibrate,
            frame=self.frame,
            adaptive_tau_fs=self.adaptive_tau_fs,
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


def _systems(config: ValidationConfig) -> dict[str, tuple[Atoms, tuple]]:
    """Return the starting structure and (phi, psi) atom indices of every system."""
    from boostmd.forcefields.peptides import residue_code

    systems = {}
    for code in config.peptides:
        atoms = starting_dipeptide(code)
        systems[residue_code(code)] = (atoms, backbone_dihedrals(atoms))
    if config.structure is not None:
        if not config.structure.is_file():
            raise FileNotFoundError(f"--structure {config.structure} does not exist")
        atoms = read(config.structure)
        if config.phi and config.psi:
            dihedrals = (tuple(config.phi), tuple(config.psi))
        else:
            dihedrals = backbone_dihedrals(atoms)
        systems[config.structure.stem] = (atoms, dihedrals)
    if not systems:
        raise ValueError("nothing to validate: pass --peptide CODE or --structure FILE")
    return systems


def _models(config: ValidationConfig):
    """Load the reference and surrogate: the user's files, or the shipped dipeptide models."""
    from boostmd.forcefields.reference import MACEReference
    from boostmd.forcefields.surrogate import Surrogate

    if (config.reference is None) != (config.surrogate is None):
        raise ValueError("pass both --reference and --surrogate, or neither (shipped models)")
    if config.reference is None:
        from boostmd.forcefields.pretrained import load_pretrained

        return load_pretrained("dipeptides")
    if config.pickled_reference:
        reference = MACEReference.from_file(config.reference)
    else:
        reference = MACEReference.load(config.reference)
    return reference, Surrogate.load(config.surrogate, dtype=reference.dtype)


def _warm_up(reference, systems: dict) -> None:
    """Run the reference twice on every system before any run.

    The first forward passes of a TorchScript model in a process can differ from later ones
    in the last bits (the profiling executor has not specialised yet). Without this, a
    run's numbers would depend on whether it was the first in its process, and resumed
    or multi-process validations would differ slightly from uninterrupted ones.
    """
    for atoms, _ in systems.values():
        for _ in range(2):
            reference(atoms)


def _jobs(
    systems: dict, replicas: int, integrator: str = "both", adaptive_reference: bool = False
) -> list[Job]:
    sampling, nve = roles(integrator, adaptive_reference)
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


def validate(config: ValidationConfig, command: str = "") -> list[dict] | None:
    """Run (or resume) a validation; rank 0 writes the report and returns it.

    Returns
    -------
    list of dict or None
        One report per system on rank 0 (also in ``OUT/report.json``); ``None`` elsewhere.
    """
    settings = config.settings()
    roles(config.integrator)  # names a bad --integrator before any work
    systems = _systems(config)
    reference, surrogate = _models(config)
    _warm_up(reference, systems)
    rank, world = _process_group()
    checkpoints = config.out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(systems, config.replicas, config.integrator, config.runs_adaptive_reference)
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
    results = _run_jobs(
        mine, systems, reference, surrogate, settings, checkpoints, config.batch, store
    )
    results = stored + results if rank == 0 else results
    results = _gather(results, world)
    if rank != 0:
        return None
    reports = []
    for name, (atoms, _) in systems.items():
        own = [r for r in results if r["job"].system == name]
        reports.append(
            system_report(name, own, settings, len(atoms), own_wall_clock=not config.batch)
        )
        _plot(config.out, name, own, settings, reports[-1])
    payload = {"command": command, "config": _jsonable(asdict(config)), "systems": reports}
    (config.out / "report.json").write_text(json.dumps(payload, indent=2))
    (config.out / "summary.md").write_text(summary_markdown(reports, settings, command))
    return reports


def _stored_runs(
    config: ValidationConfig, jobs: list[Job], systems: dict, fingerprint: str, settings
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
            key = run_key(job, systems[job.system][0], fingerprint, settings)
            arrays = load_run(config.reference_runs, key)
        if arrays is None:
            to_run.append(job)
        else:
            stored.append(job_result(job, arrays))
    if stored:
        logger.info("%d reference runs from %s", len(stored), config.reference_runs)
    return stored, to_run


def _store(
    store: Path, systems: dict, fingerprint: str, settings, checkpoints: Path, jobs: list[Job]
) -> None:
    """Write the finished reference runs among ``jobs`` into ``store``."""
    for job in jobs:
        if job.uses_boostmd:
            continue
        checkpoint = load_checkpoint(checkpoints / f"{job.name}.npz")
        key = run_key(job, systems[job.system][0], fingerprint, settings)
        logger.info("stored %s", save_run(store, key, checkpoint))


def _run_jobs(
    jobs: list[Job],
    systems: dict,
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
            results.append(
                run_job(job, *systems[job.system], reference, surrogate, settings, checkpoints)
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
                    *systems[job.system],
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
    samples, bonds = {}, {}
    for role in report["frames"]:
        runs = [r for r in results if r["job"].role == role]
        samples[role] = tuple(np.concatenate([r[a][skip:] for r in runs]) for a in ("phi", "psi"))
        bonds[role] = tuple(
            np.concatenate([r[key][skip:].ravel() for r in runs])
            for key in ("bonds_xh", "bonds_heavy")
        )
    title = f"{name}, {settings.temperature_K:g} K, BoostMD N = {settings.interval}"
    plot_free_energy_surfaces(out / f"{name}-free-energy.png", samples, title)
    plot_pmfs(out / f"{name}-pmf.png", samples, title)
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
    parser.add_argument("--phi", type=int, nargs=4, help="atom indices of phi (own structure)")
    parser.add_argument("--psi", type=int, nargs=4, help="atom indices of psi (own structure)")
    parser.add_argument("--reference", type=Path, help="reference MACE (boostmd weights file)")
    parser.add_argument("--surrogate", type=Path, help="its surrogate")
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
        default="both",
        help="BoostMD samplers to run: ase (ASE Langevin + BoostMDCalculator), checked "
        "(BoostLangevin, checked windows), both (default), or none (the reference runs alone)",
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
        "errors as they run (BoostMDCalculator(calibration=True))",
    )
    parser.add_argument(
        "--frame",
        choices=FRAMES,
        default=defaults.frame,
        help="where BoostMD frames each window: at its start (default) or at its predicted "
        "time centre (BoostMDCalculator(frame='centred'))",
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
    parser.add_argument("--interval", type=int, default=defaults.interval)
    parser.add_argument(
        "--target-error",
        type=float,
        help="meV: BoostMD chooses each window's length (2-20 steps, from --interval) so "
        "that the refresh energy error is about this RMS (integrators.ErrorControlled); a "
        "resumed run then starts a new window where it stopped (the same statistics, not "
        "the same trajectory)",
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
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=Path("boostmd-validation"))
    return parser


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
        integrator=args.integrator,
        energy_consistent=args.energy_consistent,
        calibrate=args.calibrate,
        frame=args.frame,
        adaptive_tau_fs=args.adaptive_tau or None,
        adaptive_reference=args.adaptive_reference,
        batch=args.batch,
        reference_runs=None if args.no_stored_reference else args.reference_runs,
        store_reference_runs=args.store_reference_runs,
    )
    command = "python -m boostmd.validate " + shlex.join(argv)
    reports = validate(config, command)
    if reports is not None:
        print((config.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
