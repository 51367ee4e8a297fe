"""The main job: BoostMD against the reference alone on a capped dipeptide.

Runs Langevin MD (300 K, friction 1/ps) twice from the same structure, momenta and random
seed: once with the reference MACE on every step, once with BoostMD (reference every
``interval`` steps, surrogate in between) under :class:`~boostmd.integrator.BoostLangevin`,
which checks every window's refresh energy error, reruns a window with the reference
when it is far off (10 kT), gives each accepted window's energy error back along the force
error (the energy-consistent refresh; ``--no-energy-consistent`` leaves it out) and
carries a per-atom adaptive friction (:mod:`boostmd.adaptive`, tau = 100 fs) that absorbs
what windows with a slightly wrong surrogate pump into or drain from single atoms
(``--unchecked`` uses ASE's plain ``Langevin`` instead). Prints the speedup (counting
every reference call, reruns included), the call counts, the refresh energy errors and
the surrogate's force error against the reference on sampled surrogate steps; writes
both trajectories, a Ramachandran plot and a JSON summary.

    python -m boostmd.demo                 # alanine dipeptide, 300 K, shipped models
    boostmd demo --peptide VAL --steps 4000
    python -m boostmd.demo --peptide GLN --target-error 13   # window length chosen per
                                           # window for a 13 meV RMS refresh error
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.io import write
from tqdm import tqdm

from boostmd.calculator import FRAMES, BoostMDCalculator, ReferenceCalculator
from boostmd.cli import start
from boostmd.dihedrals import backbone_dihedrals, dihedral_angles
from boostmd.md import boost_langevin, langevin, thermal_momenta, window_schedule
from boostmd.validation.report import refresh_error_stats, refresh_force_rmse

__all__ = ["DemoConfig", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of the demo (defaults finish in a few minutes on a 2-core CPU)."""

    peptide: str = "ALA"
    steps: int = 2000
    interval: int = 10
    target_error_meV: float | None = None
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    checked: bool = True
    energy_consistent: bool = True
    frame: str = "start"
    force_samples: int = 100
    write_every: int = 10
    seed: int = 0
    out: Path = Path("boostmd-demo")
    overwrite: bool = False


def _run(atoms: Atoms, calc: Calculator, config: DemoConfig, label: str):
    """Run Langevin MD; return positions, sources, surrogate forces and wall time."""
    atoms = atoms.copy()
    atoms.calc = calc
    checked = config.checked and isinstance(calc, BoostMDCalculator)
    args = (atoms, config.temperature_K, config.timestep_fs, config.friction_per_ps)
    if checked:
        dynamics = boost_langevin(
            *args, rng=config.seed + 1, energy_consistent=config.energy_consistent
        )
    else:
        dynamics = langevin(*args, rng=config.seed + 1)
    positions, sources, surrogate_forces = [], [], {}
    progress = tqdm(total=config.steps + 1, desc=label, unit="step")

    def observe():
        source = calc.results.get("boostmd_source", "reference")
        if source == "surrogate":
            surrogate_forces[len(positions)] = calc.results["forces"].copy()
        positions.append(atoms.positions.copy())
        sources.append(source)
        progress.update()

    dynamics.attach(observe, interval=1)
    start = time.perf_counter()
    dynamics.run(config.steps)
    seconds = time.perf_counter() - start
    progress.close()
    rollbacks = getattr(dynamics, "rollbacks", 0)
    return np.asarray(positions), sources, surrogate_forces, seconds, rollbacks


def _force_error(reference, numbers, positions, surrogate_forces: dict, samples: int) -> dict:
    """Surrogate force RMSE against the reference on evenly spread surrogate steps."""
    steps = sorted(surrogate_forces)
    chosen = steps[:: max(1, len(steps) // samples)][:samples]
    errors = [
        np.mean(
            (
                surrogate_forces[step]
                - reference.compute(numbers, positions[step]).forces.double().numpy()
            )
            ** 2
        )
        for step in chosen
    ]
    rmse = 1000 * float(np.sqrt(np.mean(errors))) if errors else None
    return {"sampled_steps": len(chosen), "force_rmse_meV_per_A": rmse}


def _plot(path: Path, angles: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(angles), figsize=(5 * len(angles), 4.6), sharey=True)
    for ax, (label, (phi, psi)) in zip(np.atleast_1d(axes), angles.items()):
        ax.hist2d(phi, psi, bins=60, range=[[-180, 180], [-180, 180]], cmap="viridis", cmin=1)
        ax.set(
            title=label,
            xlabel="phi (degrees)",
            xlim=(-180, 180),
            ylim=(-180, 180),
            xticks=range(-180, 181, 90),
            yticks=range(-180, 181, 90),
        )
        ax.set_aspect("equal")
    np.atleast_1d(axes)[0].set_ylabel("psi (degrees)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(config: DemoConfig, reference=None, surrogate=None, atoms: Atoms | None = None):
    """Run the comparison; returns the summary (also written to ``out/summary.json``).

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
        from boostmd.pretrained import load_pretrained

        reference, surrogate = load_pretrained("dipeptides")
    if atoms is None:
        from boostmd.peptides import capped_dipeptide

        atoms = capped_dipeptide(config.peptide)
    atoms = atoms.copy()
    thermal_momenta(atoms, config.temperature_K, np.random.default_rng(config.seed))
    config.out.mkdir(parents=True, exist_ok=True)

    ref_positions, _, _, ref_seconds, _ = _run(
        atoms, ReferenceCalculator(reference), config, "reference MD"
    )
    boost = BoostMDCalculator(
        reference,
        surrogate,
        schedule=window_schedule(config.interval, config.target_error_meV),
        frame=config.frame,
        timestep_fs=config.timestep_fs,
    )
    boost_positions, _, surrogate_forces, boost_seconds, rollbacks = _run(
        atoms, boost, config, "BoostMD"
    )
    forces = _force_error(
        reference, atoms.numbers, boost_positions, surrogate_forces, config.force_samples
    )

    angles = {}
    for label, positions in (("reference", ref_positions), ("BoostMD", boost_positions)):
        frames = [Atoms(atoms.numbers, p) for p in positions[:: config.write_every]]
        write(config.out / f"{label.lower()}.extxyz", frames, format="extxyz")
    try:
        phi, psi = backbone_dihedrals(atoms)
        angles = {
            label: (dihedral_angles(p, phi), dihedral_angles(p, psi))
            for label, p in (("reference", ref_positions), ("BoostMD", boost_positions))
        }
        _plot(
            config.out / "ramachandran.png",
            angles,
            f"{config.peptide} dipeptide, {config.temperature_K:.0f} K, "
            f"{config.steps} steps of {config.timestep_fs} fs",
        )
    except (ValueError, ImportError) as error:
        logger.warning("no Ramachandran plot: %s", error)

    summary = {
        "config": {**asdict(config), "out": str(config.out)},
        "atoms": len(atoms),
        "reference_seconds": ref_seconds,
        "boostmd_seconds": boost_seconds,
        "speedup": ref_seconds / boost_seconds,
        "reference_calls": boost.stats.full_steps,
        "surrogate_calls": boost.stats.reuse_steps,
        "guard_fallbacks": boost.fallbacks,
        "rollbacks": rollbacks,
        "refresh_energy_error_meV": refresh_error_stats(np.asarray(boost.refresh_errors)),
        "refresh_force_rmse_meV_per_A": refresh_force_rmse(boost.refresh_force_errors),
        "reference_time_s": boost.stats.full_time_s,
        "surrogate_time_s": boost.stats.reuse_time_s,
        "surrogate_vs_reference": forces,
    }
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    """Format the summary as a short human-readable report."""
    forces = summary["surrogate_vs_reference"]
    rmse = forces["force_rmse_meV_per_A"]
    refresh = summary["refresh_energy_error_meV"]
    refresh_line = (
        f"refresh dE   : RMS {refresh['rms_meV']:.1f} meV, mean {refresh['mean_meV']:+.1f} meV, "
        f"largest {refresh['max_abs_meV']:.0f} meV over {refresh['count']} windows "
        f"(force RMSE there {summary['refresh_force_rmse_meV_per_A']:.1f} meV/Å); "
        f"{summary['rollbacks']} windows rerun with the reference"
        if refresh["count"]
        else "refresh dE   : no finished windows"
    )
    return "\n".join(
        [
            f"reference MD : {summary['reference_seconds']:7.1f} s",
            f"BoostMD      : {summary['boostmd_seconds']:7.1f} s   "
            f"speedup {summary['speedup']:.1f}x",
            f"calls        : {summary['reference_calls']} reference "
            f"({summary['reference_time_s']:.1f} s), {summary['surrogate_calls']} surrogate "
            f"({summary['surrogate_time_s']:.1f} s); {summary['guard_fallbacks']} guard fallbacks",
            refresh_line,
            f"surrogate force RMSE vs reference on {forces['sampled_steps']} sampled steps: "
            + (f"{rmse:.1f} meV/Å" if rmse is not None else "n/a"),
            f"written to {summary['config']['out']}/ (trajectories, ramachandran.png, "
            "summary.json)",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: map arguments onto :class:`DemoConfig` and run."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptide", default=defaults.peptide)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--interval", type=int, default=defaults.interval)
    parser.add_argument(
        "--target-error",
        type=float,
        help="meV: choose each window's length (2-20 steps, from --interval) so that the "
        "refresh energy error is about this RMS (integrators.ErrorControlled)",
    )
    parser.add_argument("--temperature", type=float, default=defaults.temperature_K)
    parser.add_argument("--timestep", type=float, default=defaults.timestep_fs, help="fs")
    parser.add_argument(
        "--friction",
        type=float,
        default=defaults.friction_per_ps,
        help="Langevin friction in 1/ps",
    )
    parser.add_argument(
        "--unchecked",
        action="store_true",
        help="ASE's plain Langevin instead of BoostLangevin (no window checks or reruns)",
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
        help="frame each window at its start or at its predicted time centre "
        "(BoostMDCalculator(frame=...))",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    start(logging.WARNING)
    config = DemoConfig(
        peptide=args.peptide,
        steps=args.steps,
        interval=args.interval,
        target_error_meV=args.target_error,
        temperature_K=args.temperature,
        timestep_fs=args.timestep,
        friction_per_ps=args.friction,
        checked=not args.unchecked,
        energy_consistent=args.energy_consistent,
        frame=args.frame,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
    )
    print(format_summary(run_demo(config)))


if __name__ == "__main__":
    main()
