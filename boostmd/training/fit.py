r"""``python -m boostmd.fit``: a surrogate for the user's own system and reference, in one command.

    python -m boostmd.fit --reference dipeptides --structure aspirin.xyz --out fit-aspirin
    python -m boostmd.fit --reference mine.model --pickled-reference \\
        --structure a.xyz b.pdb --out fit-mine --budget 60

The field's usual loop, in rounds, every stage resumable (run the same command with
``--resume`` after an interruption):

1. **reference MD** (:mod:`boostmd.training.data`): the reference's own Langevin MD of every
   structure at a few temperatures (the check temperature among them), a few frames of
   each labelled with the reference's curvature along each bond's stretch
   (:mod:`boostmd.training.stiffness`);
2. **training** (:mod:`boostmd.training.train`): from the shipped surrogate when the reference
   is the shipped one, from scratch otherwise, on window forces and energies and on those
   curvatures;
3. **check** (:mod:`boostmd.training.fit_check`): BoostMD exactly as a user runs it, from
   the reference MD's last frame: its rerun fraction, and its bond-length spreads against
   the reference MD at the same temperature (which the fit has for free), judged against
   the scatter of an exact run made the same way (once per fit), and the surrogate's
   stiffness along the bonds on held-out frames of that exact run (no sampling noise);
4. while the rerun fraction is above ``--target-rerun`` or the bonds spread wrong, and time
   is left: **on-policy windows** of the current surrogate labelled by the reference
   (:mod:`boostmd.training.windows`, DAgger-style) and a fine-tune on everything so far;
5. if the bonds still spread wrong at ``--interval``, the longest shorter interval at which
   they do not (stored with the surrogate: :class:`~boostmd.BoostMDCalculator` uses it);
6. the **speedup** over the reference alone on a short run, every call counted.

``OUT`` then holds ``surrogate.pt`` (with its recipe: the interval, the commands, the
figures), ``report.json`` and ``report.png``. ``--budget`` (minutes) bounds the whole fit:
a round that would not fit in what is left is not started, and training stops at the
budget's end after its current epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from boostmd.dynamics.stability import BondTopology, start_digest
from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.pretrained import (
    MODELS_DIR,
    PRETRAINED,
    convert_reference,
    load_reference,
    shipped_surrogate_for,
)
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import Surrogate
from boostmd.training.data import PairDataConfig, generate_trajectories, read_structures
from boostmd.training.fit_check import check_run, exact_check_run, measure_speedup
from boostmd.training.stiffness import (
    LABELLED_BONDS_PER_FRAME,
    bond_stiffness,
    write_stiffness_labels,
)
from boostmd.training.train import TrainConfig, train
from boostmd.training.windows import WindowConfig, generate_windows

__all__ = ["FitConfig", "fit", "main"]

logger = logging.getLogger(__name__)

STATE_FILE = "fit-state.json"
# shorter intervals tried, longest first, when the bonds spread wrong at --interval
SHORTER_INTERVALS = (7, 5, 3)
# the reference MD equilibrates at this friction (1/ps; the validation's), then samples
# at 1/ps: 200 steps at 20/ps bring a structure at its minimum to the bath temperature
EQUILIBRATION_FRICTION_PER_PS = 20.0
# the stiffness check: frames of the exact check run it measures, the largest relative
# error of a bond group's summed stretch curvature and the softest single bond allowed
# (a harmonic bond's spread goes as k^-1/2: 0.88 is 6.6% too wide)
STIFFNESS_CHECK_FRAMES = 4
CHECKED_BONDS = 48  # per frame at most: all of a small molecule's, a bounded cost on any
STIFFNESS_TOLERANCE = 0.04
MIN_BOND_STIFFNESS = 0.88


@dataclass
class FitConfig:
    """Everything a fit needs (the command line maps onto it).

    Parameters
    ----------
    reference
        A shipped reference's name, a weights file, or with ``pickled_reference`` a
        mace-torch ``.model`` (converted once into ``out/reference.pt``).
    structures
        Structure files ASE reads.
    out
        The fit's folder.
    budget_minutes
        Wall time the whole fit may take.
    temperatures
        Temperatures (K) of the reference MD; ``temperature_K`` is added if missing.
    temperature_K
        Where BoostMD will run: the check runs' temperature.
    md_steps, equilibration_steps
        Frames kept per reference MD run, after the equilibration steps.
    interval
        The window length wanted (shorter only if the bonds need it).
    target_rerun_fraction
        Rounds go on while a check run reruns more windows than this.
    check_steps
        Steps of each check run.
    epochs, finetune_epochs
        Training epochs of the first round and of each later round.
    max_rounds
        Rounds at most (the first included).
    stiffness_frames
        Frames of each reference MD run labelled with the reference's bond-stretch
        curvatures (:mod:`boostmd.training.stiffness`), which training fits and the check
        compares on frames of the exact check run; 0 leaves stiffness out.
    """

    reference: str
    structures: list[Path]
    out: Path
    pickled_reference: bool = False
    budget_minutes: float = 30.0
    temperatures: tuple[float, ...] = (300.0, 600.0)
    temperature_K: float = 300.0
    md_steps: int = 1000
    equilibration_steps: int = 200
    interval: int = 10
    target_rerun_fraction: float = 0.05
    check_steps: int = 2000
    epochs: int = 4
    finetune_epochs: int = 3
    max_rounds: int = 3
    stiffness_frames: int = 8
    seed: int = 0
    resume: bool = False
    command: str = field(default="", repr=False)

    def identity(self, reference: MACEReference, structures: dict[str, Atoms]) -> dict:
        """Return what the fit's folder is for: a resumed fit must match it."""
        return {
            "reference": reference.fingerprint,
            "structures": {name: start_digest(atoms) for name, atoms in structures.items()},
            "temperatures": sorted(self.all_temperatures),
            "md_steps": self.md_steps,
            "seed": self.seed,
        }

    @property
    def all_temperatures(self) -> list[float]:
        """The reference MD's temperatures, the check temperature included."""
        return sorted({float(t) for t in (*self.temperatures, self.temperature_K)})


class _Clock:
    """The fit's time budget."""

    def __init__(self, minutes: float) -> None:
        self.deadline = time.monotonic() + 60 * minutes

    @property
    def left_s(self) -> float:
        return self.deadline - time.monotonic()


def _reference_weights(config: FitConfig, reference: MACEReference) -> Path:
    """Return the reference as a safe weights file (a ``.model`` is converted once)."""
    if config.pickled_reference:
        return convert_reference(reference, config.out / "reference.pt")
    if config.reference in PRETRAINED:
        return MODELS_DIR / PRETRAINED[config.reference][0]
    return Path(config.reference)


def _seconds_per_call(reference: MACEReference, structures: dict[str, Atoms]) -> float:
    """Return the reference's seconds per call on the structures (after a warm-up)."""
    times = []
    for atoms in structures.values():
        for _ in range(2):  # the first passes compile
            reference(atoms)
        calls = []
        for _ in range(3):
            began = time.perf_counter()
            reference(atoms)
            calls.append(time.perf_counter() - began)
        times.append(min(calls))
    return float(np.mean(times))


def _check_budget(config: FitConfig, calls_s: float, structures: dict) -> None:
    """Refuse a budget too short for the reference MD and one check of a first round."""
    runs = len(structures) * len(config.all_temperatures)
    made = len(list((config.out / "reference-md").glob("*.extxyz")))  # a resumed fit's
    md_calls = max(0, runs - made) * (config.md_steps + config.equilibration_steps)
    check_calls = len(structures) * config.check_steps * (1 + 3 // config.interval)
    label_graphs = (
        sum(
            2 * min(len(BondTopology.of(atoms).pairs), LABELLED_BONDS_PER_FRAME)
            for atoms in structures.values()
        )
        * len(config.all_temperatures)
        * config.stiffness_frames
    )
    calls = md_calls + check_calls + label_graphs
    needed = calls * calls_s / 60
    if needed > config.budget_minutes:
        raise ValueError(
            f"--budget {config.budget_minutes:g} minutes is too short for one round: its "
            f"reference MD, stiffness labels and check run alone take about {needed:.0f} "
            f"minutes here ({calls} reference graphs at {calls_s:.3f} s). Raise --budget, "
            "or lower --md-steps, --stiffness-frames or the number of --temperatures"
        )


def _open_folder(config: FitConfig, identity: dict) -> dict:
    """Create ``out`` or resume its fit (refused if it is another's); returns its state."""
    state_path = config.out / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state["identity"] != identity:
            raise ValueError(
                f"{config.out} holds the fit of another system or reference "
                f"({state['identity']}); choose a new --out for this one"
            )
        return state
    config.out.mkdir(parents=True, exist_ok=True)
    return {"identity": identity, "rounds": [], "shorter_checks": []}


def _refuse_a_used_folder(config: FitConfig) -> None:
    """Refuse an ``out`` that holds a fit or anything else, unless resuming."""
    if config.resume or not config.out.is_dir() or not any(config.out.iterdir()):
        return
    if (config.out / STATE_FILE).is_file():
        raise FileExistsError(
            f"{config.out} already holds a fit; pass --resume to continue it, or choose a new --out"
        )
    raise FileExistsError(f"{config.out} is not empty; choose a new --out or pass --resume")


def _save_state(config: FitConfig, state: dict) -> None:
    path = config.out / STATE_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(path)


def _reference_md(config: FitConfig, reference, structures) -> list[Path]:
    md = PairDataConfig(
        out=config.out / "reference-md",
        temperatures=config.all_temperatures,
        steps=config.md_steps,
        equilibration_steps=config.equilibration_steps,
        equilibration_friction_per_ps=EQUILIBRATION_FRICTION_PER_PS,
        seed=config.seed,
    )
    return generate_trajectories(reference, structures, md)


def _train_round(
    config, reference, weights: Path, data, init: Path | None, index, clock, reserve_s: float
) -> Path:
    """Train (or resume training) round ``index``; returns its ``surrogate.pt``."""
    out = config.out / f"round-{index}"
    done = out / "metrics.json"
    if done.is_file():
        return out / "surrogate.pt"
    first = index == 0
    train(
        TrainConfig(
            reference=weights,
            data=data,
            out=out,
            epochs=config.epochs if first else config.finetune_epochs,
            patience=config.epochs,
            lr=1e-3 if init is not None else 2e-3,
            batch_size=4,
            energy_weight=20.0,
            underestimate_weight=3.0,
            init=init,
            seed=config.seed + index,
            resume=(out / "checkpoint.pt").is_file(),
            time_limit_s=max(60.0, clock.left_s - reserve_s),
        ),
        reference,
    )
    return out / "surrogate.pt"


def _reserve_s(config: FitConfig, calls_s: float) -> float:
    """Time kept back from training for a round's checks and the speedup run.

    A check run makes a reference call every ``interval`` steps (twice that with its
    centred frames' look-ahead, counted generously) and a surrogate step otherwise (a
    twentieth of a call, generously); the exact check run, made once, a call every step.
    ``calls_s``: the reference's seconds per call on the structures.
    """
    exact_made = len(list((config.out / "exact-check").glob("*.npy")))
    exact_calls = max(0, len(config.structures) - exact_made) * config.check_steps
    check_calls = len(config.structures) * config.check_steps * (2 / config.interval + 0.05)
    return 120.0 + (exact_calls + check_calls) * calls_s


def _exact_checks(config: FitConfig, reference, data_frames) -> dict[str, np.ndarray]:
    """Return each structure's exact check run (the check's noise floor), made once."""
    folder = config.out / "exact-check"
    folder.mkdir(exist_ok=True)
    runs = {}
    for name, (start, _) in data_frames.items():
        path = folder / f"{name}.npy"
        if not path.is_file():
            frames = exact_check_run(
                reference,
                start,
                steps=config.check_steps,
                temperature_K=config.temperature_K,
                seed=config.seed,
            )
            np.save(path.with_suffix(".partial.npy"), frames)
            path.with_suffix(".partial.npy").replace(path)
        runs[name] = np.load(path, allow_pickle=False)
    return runs


def _check(config, reference, surrogate, data_frames, interval: int) -> list[dict]:
    exact = _exact_checks(config, reference, data_frames)
    results = []
    for name, (start, positions) in data_frames.items():
        result = check_run(
            reference,
            surrogate,
            name,
            start,
            positions,
            exact_positions=exact[name],
            interval=interval,
            steps=config.check_steps,
            temperature_K=config.temperature_K,
            seed=config.seed,
        )
        logger.info(
            "check of %s at N = %d: %.0f%% of windows rerun, bond spreads %s",
            name,
            interval,
            100 * result.rerun_fraction,
            ", ".join(
                f"{g} {v['ratio']:.3f}x (exact run {v.get('floor', math.nan):.3f}x)"
                for g, v in result.spreads.items()
            ),
        )
        checked = result.as_dict()
        if config.stiffness_frames:
            checked["stiffness"] = _stiffness_check(reference, surrogate, start, exact[name])
        results.append(checked)
    return results


def _stiffness_check(reference, surrogate, start: Atoms, exact_positions: np.ndarray) -> dict:
    """Bond-stretch stiffness of the surrogate on frames of the exact check run (held out)."""
    chosen = exact_positions[:: max(1, len(exact_positions) // STIFFNESS_CHECK_FRAMES)]
    frames = [Atoms(start.numbers, p, cell=start.cell, pbc=start.pbc) for p in chosen]
    stiffness = bond_stiffness(
        reference, surrogate, frames[:STIFFNESS_CHECK_FRAMES], bonds_per_frame=CHECKED_BONDS
    )
    ratios = {group: stiffness.ratio(group) for group in ("xh", "heavy")}
    softest = float(np.nanmin(stiffness.bond_ratios()))
    passed = softest >= MIN_BOND_STIFFNESS and all(
        not math.isfinite(r) or abs(r - 1) <= STIFFNESS_TOLERANCE for r in ratios.values()
    )
    logger.info(
        "stiffness along the bonds (surrogate / reference): X-H %.3f, heavy %.3f, softest "
        "bond %.3f",
        ratios["xh"],
        ratios["heavy"],
        softest,
    )
    return {**ratios, "softest_bond": softest, "passed": passed}


def _passes(checks: list[dict], target: float, stiffness: bool = True) -> tuple[bool, bool]:
    """Whether every structure's check met the rerun target, and sampled its bonds right.

    ``stiffness``: the bonds must also be as stiff as the reference's (a check made
    without a stiffness measurement passes it).
    """
    rerun_ok = all(c["rerun_fraction"] <= target for c in checks)
    bonds_ok = all(
        c["collapse"] is None
        and all(g["passed"] for g in c["spreads"].values())
        and (not stiffness or c.get("stiffness", {}).get("passed", True))
        for c in checks
    )
    return rerun_ok, bonds_ok


def _check_frames(config: FitConfig, runs: list[Path]) -> dict[str, tuple[Atoms, np.ndarray]]:
    """Each structure's start (last frame) and frames of its reference MD at the check T."""
    frames = {}
    for path in runs:
        name, temperature = path.stem.rsplit("_", 1)
        if float(temperature.rstrip("K")) != config.temperature_K:
            continue
        trajectory = read(path, index=":")
        frames[name] = (trajectory[-1], np.stack([a.positions for a in trajectory]))
    return frames


def fit(config: FitConfig, reference: MACEReference | None = None) -> dict:
    """Fit a surrogate to the structures (or resume a fit); returns the report.

    ``reference``: the model ``config.reference`` names, already loaded (building a MACE
    takes seconds to a minute), else it is loaded here.

    Raises
    ------
    FileExistsError
        If ``out`` holds a fit and ``resume`` is off, or is not empty.
    ValueError
        For a structure the reference cannot run, a fit of another system in ``out``, or
        a budget too short for one round.
    """
    clock = _Clock(config.budget_minutes)
    _refuse_a_used_folder(config)
    if reference is None:
        reference = load_reference(config.reference, pickled=config.pickled_reference)
    structures = read_structures(config.structures, reference)
    state = _open_folder(config, config.identity(reference, structures))
    calls_s = _seconds_per_call(reference, structures)
    _check_budget(config, calls_s, structures)
    weights = _reference_weights(config, reference)
    runs = _reference_md(config, reference, structures)
    if config.stiffness_frames:
        for run in runs:
            write_stiffness_labels(reference, run, frames=config.stiffness_frames)
    frames = _check_frames(config, runs)
    shipped = shipped_surrogate_for(reference)
    init = None
    if shipped is not None:
        init = config.out / "initial-surrogate.pt"
        if not init.is_file():
            shipped.save(init)
    logger.info(
        "training %s", "from the shipped surrogate" if init else "a new surrogate from scratch"
    )
    data, surrogate_path = list(runs), None
    for index in range(config.max_rounds):
        if index < len(state["rounds"]):  # finished before an interruption
            done = state["rounds"][index]
            data += [Path(p) for p in done["windows"]]
            surrogate_path = Path(done["surrogate"])
            continue
        if index and not _round_fits(config, clock, state, _reserve_s(config, calls_s)):
            logger.info("no time left for round %d of the fit", index + 1)
            break
        windows = []
        if index:
            windows = _windows(config, reference, surrogate_path, runs, index)
            data += windows
        surrogate_path = _train_round(
            config,
            reference,
            weights,
            data,
            surrogate_path or init,
            index,
            clock,
            _reserve_s(config, calls_s),
        )
        surrogate = Surrogate.load(surrogate_path, dtype=reference.dtype)
        checks = _check(config, reference, surrogate, frames, config.interval)
        state["rounds"].append(
            {
                "surrogate": str(surrogate_path),
                "windows": [str(p) for p in windows],
                "checks": checks,
                "seconds": 60 * config.budget_minutes - clock.left_s,
            }
        )
        _save_state(config, state)
        if all(_passes(checks, config.target_rerun_fraction)):
            break
    return _finish(config, reference, surrogate_path, frames, state, clock)


def _round_fits(config: FitConfig, clock: _Clock, state: dict, reserve_s: float) -> bool:
    """Whether another round (windows, fine-tune, check) fits in the time left."""
    rounds = state["rounds"]
    if not rounds:
        return True
    last = rounds[-1]["seconds"] - (rounds[-2]["seconds"] if len(rounds) > 1 else 0)
    return clock.left_s > min(last, 0.6 * 60 * config.budget_minutes) + reserve_s


def _windows(config, reference, surrogate_path: Path, runs: list[Path], index: int) -> list[Path]:
    surrogate = Surrogate.load(surrogate_path, dtype=reference.dtype)
    window = WindowConfig(window=config.interval + 2, every=config.interval + 2, seed=config.seed)
    return generate_windows(reference, surrogate, runs, config.out / f"windows-{index}", window)


def _finish(config, reference, surrogate_path, frames, state, clock) -> dict:
    """Pick the interval, measure the speedup, write ``surrogate.pt`` and the report."""
    surrogate = Surrogate.load(surrogate_path, dtype=reference.dtype)
    checks = state["rounds"][-1]["checks"]
    interval = config.interval
    if not _passes(checks, config.target_rerun_fraction)[1]:
        interval = _shorter_interval(config, reference, surrogate, frames, state)
    if "speedup" not in state:
        name, (start, _) = next(iter(frames.items()))
        state["speedup"] = {
            "structure": name,
            **measure_speedup(
                reference, surrogate, start, interval=interval, temperature_K=config.temperature_K
            ),
        }
        _save_state(config, state)
    surrogate.recipe = {
        "interval": interval,
        "made_by": config.command or "boostmd.training.fit.fit",
        "structures": list(frames),
        "temperature_K": config.temperature_K,
        "rounds": len(state["rounds"]),
    }
    surrogate.save(config.out / "surrogate.pt", overwrite=True)
    report = _report(config, state, interval, surrogate_path)
    (config.out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(config, report)
    return report


def _shorter_interval(config, reference, surrogate, frames, state) -> int:
    """Return the longest of :data:`SHORTER_INTERVALS` whose check samples the bonds right."""
    done = {c["interval"]: c["checks"] for c in state["shorter_checks"]}
    for interval in (n for n in SHORTER_INTERVALS if n < config.interval):
        if interval not in done:
            checks = _check(config, reference, surrogate, frames, interval)
            state["shorter_checks"].append({"interval": interval, "checks": checks})
            _save_state(config, state)
            done[interval] = checks
        if _passes(done[interval], 1.0, stiffness=False)[1]:
            logger.warning(
                "the bonds spread too wide at N = %d: the surrogate is stored with N = %d, "
                "the longest interval at which its check sampled them right",
                config.interval,
                interval,
            )
            return interval
    shortest = min(n for n in (*SHORTER_INTERVALS, config.interval))
    logger.warning(
        "the bonds spread wrong at every interval down to N = %d: this surrogate does not "
        "sample this system right; fit longer (--budget, --md-steps) or use the reference "
        "alone. It is stored with N = %d",
        shortest,
        shortest,
    )
    return shortest


def _report(config: FitConfig, state: dict, interval: int, surrogate_path: Path) -> dict:
    final = state["rounds"][-1]["checks"]
    metrics_path = Path(surrogate_path).with_name("metrics.json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    rerun_ok, bonds_ok = _passes(final, config.target_rerun_fraction)
    return {
        "command": config.command,
        "config": {
            **asdict(config),
            "out": str(config.out),
            "structures": list(map(str, config.structures)),
        },
        "interval": interval,
        "target_met": {"rerun_fraction": rerun_ok, "bond_spreads": bonds_ok},
        "rounds": [
            {"index": i, "checks": r["checks"], "minutes": r["seconds"] / 60}
            for i, r in enumerate(state["rounds"])
        ],
        "shorter_interval_checks": state["shorter_checks"],
        "validation_force_rmse_meV_per_A_by_k": metrics.get(
            "validation_force_rmse_meV_per_A_by_k", {}
        ),
        "validation_energy_rmse_meV_by_k": metrics.get("validation_energy_rmse_meV_by_k", {}),
        "speedup": state.get("speedup", {}),
        "surrogate": str(config.out / "surrogate.pt"),
    }


def _plot(config: FitConfig, report: dict) -> None:
    try:
        from boostmd.training.fit_plot import plot_fit_report
    except ImportError as error:  # matplotlib is optional
        logger.warning("no report.png (%s); pip install matplotlib", error)
        return
    plot_fit_report(config.out / "report.png", report)


def _parser() -> argparse.ArgumentParser:
    defaults = FitConfig(reference="", structures=[], out=Path())
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reference",
        required=True,
        help="a shipped reference's name (dipeptides), a weights file, or with "
        "--pickled-reference a mace-torch .model",
    )
    parser.add_argument(
        "--pickled-reference",
        action="store_true",
        help="--reference is a mace-torch .model (a pickle: loading it runs code from the "
        "file; trust it); it is converted once into OUT/reference.pt",
    )
    parser.add_argument("--structure", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=defaults.budget_minutes, help="minutes")
    parser.add_argument("--resume", action="store_true", help="continue the fit in --out")
    parser.add_argument("--temperatures", type=float, nargs="+", default=defaults.temperatures)
    parser.add_argument("--temperature", type=float, default=defaults.temperature_K)
    parser.add_argument("--interval", type=int, default=defaults.interval)
    parser.add_argument(
        "--target-rerun", type=float, default=defaults.target_rerun_fraction, help="fraction"
    )
    numbers = ("md_steps", "equilibration_steps", "check_steps", "epochs", "max_rounds")
    for name in (*numbers, "stiffness_frames", "seed"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line: map arguments onto :class:`FitConfig` and fit."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    start_command(logging.INFO)
    config = FitConfig(
        reference=args.reference,
        structures=args.structure,
        out=args.out,
        pickled_reference=args.pickled_reference,
        budget_minutes=args.budget,
        temperatures=tuple(args.temperatures),
        temperature_K=args.temperature,
        md_steps=args.md_steps,
        stiffness_frames=args.stiffness_frames,
        equilibration_steps=args.equilibration_steps,
        interval=args.interval,
        target_rerun_fraction=args.target_rerun,
        check_steps=args.check_steps,
        epochs=args.epochs,
        max_rounds=args.max_rounds,
        seed=args.seed,
        resume=args.resume,
        command="python -m boostmd.fit " + shlex.join(argv),
    )
    try:
        report = fit(config)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise SystemExit(f"boostmd.fit: {error}") from None
    print(format_report(report))


def format_report(report: dict) -> str:
    """Format a fit's report as a few lines."""
    lines = [f"surrogate: {report['surrogate']} (interval N = {report['interval']})"]
    for check in report["rounds"][-1]["checks"]:
        summary = check["summary"]
        spreads = ", ".join(f"{g} {v['ratio']:.3f}x" for g, v in check["spreads"].items())
        lines.append(
            f"{check['structure']}: {100 * check['rerun_fraction']:.1f}% of windows rerun, "
            f"{summary['reference_calls_per_step']:.3f} reference calls per step, dE "
            f"{summary['refresh_error_rms_meV']:.0f} meV RMS, bond spreads {spreads} of the "
            "reference's"
        )
        if "stiffness" in check:
            stiffness = check["stiffness"]
            lines.append(
                f"  stiffness along the bonds (surrogate / reference): X-H "
                f"{stiffness['xh']:.3f}, heavy {stiffness['heavy']:.3f}, softest bond "
                f"{stiffness['softest_bond']:.3f}"
            )
    speedup = report["speedup"]
    if speedup:
        lines.append(
            f"speedup over the reference alone, every call counted: {speedup['speedup']:.1f}x "
            f"({speedup['structure']}, {speedup['steps_timed']} steps each)"
        )
    met = report["target_met"]
    if not all(met.values()):
        lines.append(f"targets not met: {[k for k, v in met.items() if not v]} (see report.json)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
