"""The main job: BoostMD on a capped dipeptide, its speedup, and a look at what it samples.

Runs BoostMD (the reference every ``interval`` steps, the surrogate in between) under
:class:`~boostmd.BoostLangevin` at 300 K and friction 1/ps, exactly as the validation's
BoostMD runs (:func:`boostmd.validation.runs.run_job`): 300 steps at 20/ps bring the
built structure to the bath, then ``--steps`` sampling steps. Each window is framed at
its predicted time centre, checked (a window whose refresh energy error exceeds 10 kT is
rerun with the reference) and a per-atom adaptive friction absorbs what a slightly wrong
window pumps into single atoms. The reference alone is timed on a short segment from the
same state, and the speedup counts every call BoostMD made (reference calls, reruns and
the centres' predictions included). ``comparison.png`` shows the run's bond lengths,
reference energies and phi/psi over the stored reference runs of the validation
(:mod:`boostmd.validation.stored`); ``--full-reference`` runs the reference for as many
steps instead, for the speedup and the picture.

    python -m boostmd.demo                    # alanine dipeptide, shipped models, minutes
    python -m boostmd.demo --full-reference   # the reference run of the same length too
    boostmd demo --peptide VAL --steps 4000

The run checkpoints to ``OUT/checkpoints``; the same command resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.md.langevin import Langevin
from ase.units import fs

from boostmd.dynamics.calculator import DEFAULT_INTERVAL, FRAMES, ReferenceCalculator
from boostmd.dynamics.md import thermal_momenta
from boostmd.forcefields.mace_import import start_command
from boostmd.validation.dihedrals import backbone_dihedrals
from boostmd.validation.report import (
    adaptive_friction_stats,
    compare_runs,
    refresh_error_stats,
    refresh_force_rmse,
    sampled_observables,
)
from boostmd.validation.runs import Job, MDSettings, run_job
from boostmd.validation.stored import STORE, load_run, run_key
from boostmd.validation.validate import PRESETS, ValidationConfig

__all__ = ["DemoConfig", "format_summary", "run_demo"]

logger = logging.getLogger(__name__)

# what the picture and the printed distances compare
SHOWN = {
    "bond_xh_w1_mA": "X-H bond lengths, W1 (mÅ)",
    "bond_heavy_w1_mA": "heavy-atom bond lengths, W1 (mÅ)",
    "reference_energy_w1_meV": "reference energy at the frames, W1 (meV)",
    "config_temperature_hydrogen_K": "configurational T of the hydrogens, |T - bath| (K)",
    "config_temperature_heavy_K": "configurational T of the heavy atoms, |T - bath| (K)",
}


@dataclass
class DemoConfig:
    """Settings of the demo (the defaults take a few minutes on a 2-core CPU)."""

    peptide: str = "ALA"
    steps: int = PRESETS["standard"]["steps"]
    equilibration_steps: int = PRESETS["standard"]["equilibration_steps"]
    reference_steps: int = 200
    interval: int = DEFAULT_INTERVAL
    target_error_meV: float | None = None
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    equilibration_friction_per_ps: float = 20.0
    checked: bool = True
    energy_consistent: bool = True
    frame: str = "centred"
    full_reference: bool = False
    seed: int = 0
    out: Path = Path("boostmd-demo")
    overwrite: bool = False

    def settings(self) -> MDSettings:
        """Return the integration settings of the BoostMD run (the validation's own)."""
        return ValidationConfig(
            out=self.out,
            steps=self.steps,
            equilibration_steps=self.equilibration_steps,
            nve_steps=0,
            interval=self.interval,
            checkpoint_every=50 * self.interval,
            temperature_K=self.temperature_K,
            timestep_fs=self.timestep_fs,
            friction_per_ps=self.friction_per_ps,
            equilibration_friction_per_ps=self.equilibration_friction_per_ps,
            target_refresh_error_meV=self.target_error_meV,
            energy_consistent=self.energy_consistent,
            frame=self.frame,
            seed=self.seed,
        ).settings()


def _time_reference(atoms: Atoms, reference, config: DemoConfig, job: Job) -> float:
    """Seconds per step of Langevin MD with the reference alone, from the run's start."""
    settings = config.settings()
    atoms = atoms.copy()
    atoms.calc = ReferenceCalculator(reference)
    thermal_momenta(
        atoms, config.temperature_K, np.random.default_rng(job.seed(settings, "momenta"))
    )
    atoms.get_forces()  # the first call warms the model up: not timed
    dynamics = Langevin(
        atoms,
        config.timestep_fs * fs,
        temperature_K=config.temperature_K,
        friction=config.friction_per_ps / (1000 * fs),
        fixcm=False,
        rng=np.random.default_rng(config.seed),
    )
    start = time.perf_counter()
    dynamics.run(config.reference_steps)
    return (time.perf_counter() - start) / config.reference_steps


def _stored_reference(name: str, atoms: Atoms, fingerprint: str, config: DemoConfig):
    """Return the validation's stored reference runs of this system (``{}`` if none match)."""
    standard = PRESETS["standard"]
    settings = replace(
        config.settings(),
        steps=standard["steps"],
        equilibration_steps=standard["equilibration_steps"],
        seed=0,
    )
    runs = {}
    for role in ("reference", "reference-2"):
        found = []
        for replica in range(standard["replicas"]):
            job = Job(name, role, replica)
            arrays = load_run(STORE, run_key(job, atoms, fingerprint, settings))
            if arrays is not None:
                found.append({"job": job, **arrays})
        if found:
            runs[role] = found
    return runs if "reference" in runs else {}


def run_demo(config: DemoConfig, reference=None, surrogate=None, atoms: Atoms | None = None):
    """Run BoostMD, time the reference, compare; returns the summary (``out/summary.json``).

    Parameters
    ----------
    config
        Settings.
    reference, surrogate
        Models to use (default: the shipped ``dipeptides`` models).
    atoms
        Starting structure (default: the capped dipeptide ``config.peptide``).
    """
    summary_path = config.out / "summary.json"
    if summary_path.exists() and not config.overwrite:
        raise FileExistsError(f"{summary_path} exists; pass --overwrite or another --out")
    if reference is None or surrogate is None:
        from boostmd.forcefields.pretrained import load_pretrained

        reference, surrogate = load_pretrained("dipeptides")
    if atoms is None:
        from boostmd.forcefields.peptides import capped_dipeptide, residue_code

        name, atoms = residue_code(config.peptide), capped_dipeptide(config.peptide)
    else:
        name = config.peptide
    dihedrals = backbone_dihedrals(atoms)
    settings = config.settings()
    checkpoints = config.out / "checkpoints"
    if config.overwrite:
        for old in checkpoints.glob("*.npz"):
            old.unlink()
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = Job(name, "boostmd-checked" if config.checked else "boostmd", 0)
    boostmd = run_job(job, atoms, dihedrals, reference, surrogate, settings, checkpoints)
    if config.full_reference:
        own = Job(name, "reference", 0)
        full = run_job(own, atoms, dihedrals, reference, surrogate, settings, checkpoints)
        seconds_per_reference_step = full["seconds"] / full["steps"]
        references, compared_with = {"reference": [full]}, "a reference run of the same length"
    else:
        seconds_per_reference_step = _time_reference(atoms, reference, config, job)
        references = _stored_reference(name, atoms, reference.fingerprint, config)
        compared_with = "the stored reference runs" if references else None
    seconds_per_step = boostmd["seconds"] / boostmd["steps"]
    summary = {
        "config": {**asdict(config), "out": str(config.out)},
        "atoms": len(atoms),
        "steps": boostmd["steps"],
        "reference_seconds_per_step": seconds_per_reference_step,
        "reference_steps_timed": boostmd["steps"]
        if config.full_reference
        else config.reference_steps,
        "boostmd_seconds_per_step": seconds_per_step,
        "speedup": seconds_per_reference_step / seconds_per_step,
        **{key: boostmd[key] for key in ("reference_calls", "surrogate_calls", "rollbacks")},
        "guard_fallbacks": boostmd["fallbacks"],
        "collapse": boostmd["collapse"],
        "refresh_energy_error_meV": refresh_error_stats(boostmd["refresh_errors"]),
        "refresh_force_rmse_meV_per_A": refresh_force_rmse(boostmd["refresh_force_errors"]),
        "adaptive_friction_per_ps": adaptive_friction_stats(
            [boostmd], settings.equilibration_steps + 1
        ),
        "compared_with": compared_with,
    }
    if references:
        summary["comparison"] = _compare(name, references, boostmd, settings, config)
    else:
        logger.warning(
            "no stored reference runs for %s with this reference and these settings: no "
            "comparison (make them with python -m boostmd.validate --store-reference-runs, "
            "or pass --full-reference)",
            name,
        )
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def _compare(name: str, references: dict, boostmd: dict, settings, config: DemoConfig) -> dict:
    """Distances of the run (and of the second reference run) from the reference; plot."""
    skip, interval = settings.equilibration_steps + 1, settings.interval
    distances = {}
    for role, runs in (("boostmd", [boostmd]), ("reference-2", references.get("reference-2"))):
        if runs:
            values = compare_runs(
                references["reference"], runs, skip, interval, config.temperature_K
            )
            distances[role] = {key: values[key] for key in SHOWN}
    observables = {
        role: sampled_observables(runs, skip, interval) for role, runs in references.items()
    }
    observables[boostmd["job"].role] = sampled_observables([boostmd], skip, interval)
    try:
        from boostmd.validation.plots import plot_against_reference
    except ImportError as error:  # matplotlib is optional
        logger.warning("no picture (%s); pip install matplotlib", error)
        return distances
    plot_against_reference(
        config.out / "comparison.png",
        observables,
        f"{name}, {config.temperature_K:g} K, friction {config.friction_per_ps:g}/ps: BoostMD "
        f"(N = {interval}, {boostmd['steps']} steps) over the reference",
    )
    return distances


def format_summary(summary: dict) -> str:
    """Format the summary as a short human-readable report."""
    refresh = summary["refresh_energy_error_meV"]
    xi = summary["adaptive_friction_per_ps"]
    lines = [
        f"reference alone: {summary['reference_seconds_per_step']:.3f} s per step "
        f"(timed over {summary['reference_steps_timed']} steps)",
        f"BoostMD        : {summary['boostmd_seconds_per_step']:.3f} s per step over "
        f"{summary['steps']} steps, every call counted: speedup {summary['speedup']:.1f}x",
        f"calls          : {summary['reference_calls']} reference, "
        f"{summary['surrogate_calls']} surrogate; {summary['rollbacks']} windows rerun, "
        f"{summary['guard_fallbacks']} guard fallbacks"
        + (f"; collapsed: {summary['collapse']}" if summary["collapse"] else "; no collapse"),
    ]
    if refresh["count"]:
        lines.append(
            f"refresh dE     : RMS {refresh['rms_meV']:.1f} meV, mean {refresh['mean_meV']:+.1f} "
            f"meV over {refresh['count']} windows (force RMSE there "
            f"{summary['refresh_force_rmse_meV_per_A']:.0f} meV/Å)"
        )
    if xi:
        lines.append(
            f"adaptive friction: largest mean xi {xi['largest_mean']:+.2f}/ps (atom {xi['atom']})"
        )
    comparison = summary.get("comparison")
    if comparison:
        lines.append(f"against {summary['compared_with']} (the second reference run for scale):")
        for key, label in SHOWN.items():
            value = comparison["boostmd"][key]
            if not np.isfinite(value):
                continue  # runs made before the reference's forces were recorded
            scale = comparison.get("reference-2", {}).get(key, np.nan)
            second = f"   (reference-2: {scale:.2f})" if np.isfinite(scale) else ""
            lines.append(f"  {label:52s} {value:7.2f}{second}")
    lines.append(
        f"written to {summary['config']['out']}/ (summary.json"
        + (", comparison.png" if comparison else "")
        + ", checkpoints/); sampling verdicts: python -m boostmd.validate"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: map arguments onto :class:`DemoConfig` and run."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptide", default=defaults.peptide)
    parser.add_argument(
        "--steps", type=int, default=defaults.steps, help="sampling steps after equilibration"
    )
    parser.add_argument("--equilibration-steps", type=int, default=defaults.equilibration_steps)
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=defaults.reference_steps,
        help="steps of the reference alone timed for the speedup",
    )
    parser.add_argument(
        "--full-reference",
        action="store_true",
        help="run the reference alone for as many steps as BoostMD (the speedup and the "
        "picture come from it)",
    )
    parser.add_argument("--interval", type=int, default=defaults.interval)
    parser.add_argument(
        "--target-error",
        type=float,
        help="meV: choose each window's length (2-20 steps, from --interval) so that the "
        "refresh energy error is about this RMS (integrators.ErrorControlled; start frames)",
    )
    parser.add_argument("--temperature", type=float, default=defaults.temperature_K)
    parser.add_argument("--timestep", type=float, default=defaults.timestep_fs, help="fs")
    parser.add_argument(
        "--friction", type=float, default=defaults.friction_per_ps, help="1/ps, sampling"
    )
    parser.add_argument(
        "--unchecked",
        action="store_true",
        help="ASE's plain Langevin instead of BoostLangevin (no window checks, no adaptive "
        "friction: it heats on unseen molecules)",
    )
    parser.add_argument(
        "--energy-consistent",
        action=argparse.BooleanOptionalAction,
        default=defaults.energy_consistent,
        help="BoostLangevin gives each accepted window's refresh energy error back along "
        "the force error (default on)",
    )
    parser.add_argument(
        "--frame",
        choices=FRAMES,
        default=defaults.frame,
        help="frame each window at its predicted time centre (default) or at its start",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    start_command(logging.WARNING)
    config = DemoConfig(
        peptide=args.peptide,
        steps=args.steps,
        equilibration_steps=args.equilibration_steps,
        reference_steps=args.reference_steps,
        interval=args.interval,
        target_error_meV=args.target_error,
        temperature_K=args.temperature,
        timestep_fs=args.timestep,
        friction_per_ps=args.friction,
        checked=not args.unchecked,
        energy_consistent=args.energy_consistent,
        frame=args.frame,
        full_reference=args.full_reference,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
    )
    print(format_summary(run_demo(config)))


if __name__ == "__main__":
    main()
