"""Train a surrogate for a reference from reference MD runs (:mod:`boostmd.training.data`).

    python -m boostmd.train --reference REFERENCE.pt --data data/pairs --out runs/surrogate
    python -m boostmd.train --reference mace.model --pickled-reference --data data/pairs \
        --structure aspirin.xyz --out runs/aspirin     # the runs of one structure file
    python -m boostmd.train --reference REFERENCE.pt --data data/pairs data/windows \
        --init runs/surrogate/surrogate.pt --out runs/surrogate-2   # on-policy windows

The last ``validation_fraction`` of every run is held out (a time block, so validation
frames are not neighbours of training frames). Each epoch writes ``checkpoint.pt``;
``--resume`` continues from it. The best model by validation force error is written to
``OUT/surrogate.pt``; a table of force errors against ``k`` (steps since the reference
frame) closes the run and is saved in ``OUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from boostmd.dynamics.calculator import check_compatible
from boostmd.forcefields.mace_import import start_command
from boostmd.forcefields.pretrained import load_reference
from boostmd.forcefields.reference import MACEReference
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate
from boostmd.training.run_files import Trajectory, load_trajectories
from boostmd.training.stiffness import (
    BondStiffness,
    surrogate_curvatures,
    write_stiffness_labels,
)

__all__ = [
    "Pair",
    "TrainConfig",
    "errors_by_k",
    "force_rmse_by_k",
    "make_batch",
    "rmse_by_k",
    "train",
]

logger = logging.getLogger(__name__)

# labelled bonds whose curvature a training step fits (a random subset of one frame's)
STIFFNESS_BONDS_PER_STEP = 8


@dataclass
class TrainConfig:
    """Settings of a surrogate training run.

    The loss is ``energy_weight * mean(dE^2) + forces_weight * mean(dF^2)`` with ``dE`` the
    energy error of each pair in eV (per graph, not per atom) and ``dF`` the force
    components' errors in eV/Å. The energy term is weighted heavily on purpose: the energy
    error at the end of a window is BoostMD's refresh error, which decides whether the
    dynamics heat up and whether a window is accepted; forces alone leave it free to drift.
    ``max_k`` should cover the windows the surrogate will run (N = 10 plus a margin).
    ``underestimate_weight`` multiplies the energy term where the surrogate is *below* the
    reference: BoostMD's own dynamics seek out the directions in which the surrogate is too
    soft (its refresh errors are mostly positive), while directions where it is too stiff
    are avoided, so a value above 1 trades a little stiffness for stability.
    ``batch_size`` counts reference frames; each is prepared once and evaluated at every
    ``k = 1..max_k`` (a batch holds ``batch_size * max_k`` pairs). Gradients are clipped to
    ``max_grad_norm``, a guard against the rare steep batch (the quartic terms).
    ``reference`` is what :func:`boostmd.forcefields.pretrained.load_reference` takes (a
    shipped name, a weights file, or with ``pickled_reference`` a mace-torch ``.model``).
    ``time_limit_s`` stops after the first epoch that ends past it (checkpointed, so
    ``resume`` continues). ``stiffness_weight`` weighs, in each batch, the mean
    squared error of the surrogate's bond-stretch curvatures, over the labels' mean square,
    at up to ``STIFFNESS_BONDS_PER_STEP`` random bonds of one reference frame labelled with
    the reference's (runs with ``NAME.stiffness.npz``,
    :func:`boostmd.training.stiffness.write_stiffness_labels`; none, no term): window
    forces alone left the indole ring of TRP 15-20% too soft along some bonds, which
    spreads them wider than the reference does.
    """

    reference: Path | str
    data: list[Path]
    out: Path
    max_k: int = 12
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-6
    energy_weight: float = 10.0
    forces_weight: float = 10.0
    underestimate_weight: float = 1.0
    validation_fraction: float = 0.2
    patience: int = 8
    num_channels: int = 16
    hidden_dim: int = 64
    max_grad_norm: float = 10.0
    seed: int = 0
    resume: bool = False
    init: Path | None = None
    pickled_reference: bool = False
    time_limit_s: float | None = None
    stiffness_weight: float = 1.0


@dataclass(frozen=True)
class Pair:
    """A training example: run ``run``, reference frame ``reference``, ``k`` steps on."""

    run: int
    reference: int
    k: int


@dataclass
class Batch:
    """Targets and the inputs of :meth:`Surrogate.prepare` for several pairs."""

    inputs: dict = field(repr=False)
    positions: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    atoms_per_graph: torch.Tensor


def make_batch(trajectories: list[Trajectory], pairs: list[Pair], dtype: torch.dtype) -> Batch:
    """Concatenate pairs into one batch of graphs."""
    parts = {
        key: []
        for key in (
            "numbers",
            "features",
            "ref_pos",
            "ref_energy",
            "ref_forces",
            "edge_index",
            "shifts",
            "pair_force",
            "batch",
            "pos",
            "energy",
            "forces",
        )
    }
    offset = 0
    for graph, pair in enumerate(pairs):
        run = trajectories[pair.run]
        step = int(run.reference_steps[pair.reference])
        edge_index, g, shifts = run.edges[pair.reference]
        n = len(run.numbers)
        parts["numbers"].append(run.numbers)
        parts["features"].append(torch.as_tensor(run.node_features[pair.reference]))
        parts["ref_pos"].append(torch.as_tensor(run.positions[step]))
        parts["ref_energy"].append(float(run.energies[step]))
        parts["ref_forces"].append(torch.as_tensor(run.forces[step]))
        parts["edge_index"].append(edge_index + offset)
        parts["shifts"].append(shifts)
        parts["pair_force"].append(g)
        parts["batch"].append(torch.full((n,), graph, dtype=torch.long))
        parts["pos"].append(torch.as_tensor(run.positions[step + pair.k]))
        parts["energy"].append(float(run.energies[step + pair.k]))
        parts["forces"].append(torch.as_tensor(run.forces[step + pair.k]))
        offset += n
    as_float = {"dtype": dtype}
    inputs = {
        "numbers": np.concatenate(parts["numbers"]),
        "node_features": torch.cat(parts["features"]).to(**as_float),
        "positions": torch.cat(parts["ref_pos"]).to(**as_float),
        "energy": torch.tensor(parts["ref_energy"], **as_float),
        "forces": torch.cat(parts["ref_forces"]).to(**as_float),
        "batch": torch.cat(parts["batch"]),
        "edge_index": torch.cat(parts["edge_index"], dim=1),
        "shifts": torch.cat(parts["shifts"]).to(**as_float),
        "pair_force": torch.cat(parts["pair_force"]).to(**as_float),
    }
    batch = inputs["batch"]
    return Batch(
        inputs=inputs,
        positions=torch.cat(parts["pos"]).to(**as_float),
        energy=torch.tensor(parts["energy"], **as_float),
        forces=torch.cat(parts["forces"]).to(**as_float),
        atoms_per_graph=torch.bincount(batch).to(**as_float),
    )


def make_window_batch(
    trajectories: list[Trajectory], windows: list[Pair], max_k: int, dtype: torch.dtype
) -> Batch:
    """Batch reference frames once each, with targets at ``k = 1..max_k`` for every frame.

    ``windows`` are pairs whose ``k`` is ignored. The targets are ordered ``k``-major (all
    frames at ``k = 1``, then all at ``k = 2``, ...), matching
    ``ReferenceFrame.tile(max_k)`` of the prepared frames.
    """
    frames = make_batch(trajectories, [Pair(w.run, w.reference, 1) for w in windows], dtype)
    positions, energies, forces = [], [], []
    for k in range(1, max_k + 1):
        for window in windows:
            run = trajectories[window.run]
            step = int(run.reference_steps[window.reference]) + k
            positions.append(torch.as_tensor(run.positions[step]))
            energies.append(float(run.energies[step]))
            forces.append(torch.as_tensor(run.forces[step]))
    return Batch(
        inputs=frames.inputs,
        positions=torch.cat(positions).to(dtype),
        energy=torch.tensor(energies, dtype=dtype),
        forces=torch.cat(forces).to(dtype),
        atoms_per_graph=frames.atoms_per_graph.repeat(max_k),
    )


def full_windows(pairs: list[Pair], max_k: int) -> list[Pair]:
    """One pair per reference frame whose pairs cover every ``k = 1..max_k``."""
    ks: dict[tuple[int, int], set[int]] = {}
    for pair in pairs:
        ks.setdefault((pair.run, pair.reference), set()).add(pair.k)
    wanted = set(range(1, max_k + 1))
    return [Pair(run, ref, 0) for (run, ref), seen in ks.items() if wanted <= seen]


def prepare_batch(surrogate: Surrogate, batch: Batch) -> ReferenceFrame:
    """Run :meth:`Surrogate.prepare` on a batch's reference frames."""
    inputs = batch.inputs
    return surrogate.prepare(
        inputs["numbers"],
        inputs["node_features"],
        inputs["positions"],
        inputs["energy"],
        inputs["forces"],
        batch=inputs["batch"],
        edge_index=inputs["edge_index"],
        shifts=inputs["shifts"],
        pair_force=inputs["pair_force"],
    )


def split_pairs(trajectories: list[Trajectory], config: TrainConfig):
    """Training and validation pairs: the last fraction of each run is validation."""
    train, valid = [], []
    for index, run in enumerate(trajectories):
        boundary = int(len(run.positions) * (1 - config.validation_fraction))
        for target, steps in (
            (train, slice(0, boundary)),
            (valid, slice(boundary, len(run.positions))),
        ):
            target.extend(Pair(index, r, k) for r, k in run.pairs(config.max_k, steps))
    return train, valid


def _batches(pairs: list[Pair], size: int) -> list[list[Pair]]:
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def errors_by_k(
    surrogate: Surrogate,
    trajectories: list[Trajectory],
    pairs: list[Pair],
    batch_size: int = 64,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Return the surrogate's errors against the reference, by ``k`` (steps since the frame).

    Returns
    -------
    dict
        ``k -> (energy, forces)``: the signed energy errors ``E_ref - E_surrogate`` (eV;
        at ``k = N``, BoostMD's refresh energy errors for windows of ``N`` steps; positive
        where the surrogate is too soft) and each pair's mean squared force-component
        error ((eV/Å)^2), one entry per pair.
    """
    energy_errors: dict[int, list[float]] = {}
    force_errors: dict[int, list[float]] = {}
    dtype = surrogate.feature_in.weight.dtype
    for chunk in _batches(pairs, batch_size):
        batch = make_batch(trajectories, chunk, dtype)
        with torch.no_grad():
            frame = prepare_batch(surrogate, batch)
        energy, forces = surrogate.energy_and_forces(frame, batch.positions)
        error = ((forces - batch.forces) ** 2).sum(-1)
        per_graph = torch.zeros(len(chunk), dtype=error.dtype).index_add(
            0, batch.inputs["batch"], error
        ) / (3 * batch.atoms_per_graph)
        signed = (batch.energy - energy).tolist()
        for pair, value, e_value in zip(chunk, per_graph.tolist(), signed):
            force_errors.setdefault(pair.k, []).append(value)
            energy_errors.setdefault(pair.k, []).append(e_value)
    return {
        k: (np.array(energy_errors[k]), np.array(force_errors[k])) for k in sorted(force_errors)
    }


def rmse_by_k(
    surrogate: Surrogate,
    trajectories: list[Trajectory],
    pairs: list[Pair],
    batch_size: int = 64,
) -> tuple[dict[int, float], dict[int, float]]:
    """Surrogate force RMSE (eV/Å) and energy RMSE (eV) against the reference, by ``k``.

    ``k`` is the number of steps since the reference frame; the energy error at
    ``k = N`` is BoostMD's refresh energy error for windows of ``N`` steps.
    """
    errors = errors_by_k(surrogate, trajectories, pairs, batch_size)
    forces_by_k = {k: math.sqrt(float(np.mean(f))) for k, (_, f) in errors.items()}
    energy_by_k = {k: math.sqrt(float(np.mean(e**2))) for k, (e, _) in errors.items()}
    return forces_by_k, energy_by_k


def force_rmse_by_k(
    surrogate: Surrogate,
    trajectories: list[Trajectory],
    pairs: list[Pair],
    batch_size: int = 64,
) -> dict[int, float]:
    """Surrogate force RMSE (eV/Å) against the reference, by steps since the reference."""
    return rmse_by_k(surrogate, trajectories, pairs, batch_size)[0]


def _loss(surrogate: Surrogate, batch: Batch, config: TrainConfig) -> torch.Tensor:
    """Loss of a window batch: each frame prepared once, evaluated at every ``k``."""
    frame = prepare_batch(surrogate, batch).tile(config.max_k)
    energy, forces = surrogate.energy_and_forces(frame, batch.positions, training=True)
    difference = energy - batch.energy
    energy_error = difference**2 * torch.where(difference < 0, config.underestimate_weight, 1.0)
    return (
        config.energy_weight * energy_error.mean()
        + config.forces_weight * ((forces - batch.forces) ** 2).mean()
    )


def _labelled_frames(trajectories: list[Trajectory]) -> list[tuple[int, int]]:
    """``(run, row)`` of every reference frame with stiffness labels."""
    return [
        (run, row)
        for run, trajectory in enumerate(trajectories)
        if trajectory.stiffness is not None
        for row in range(len(trajectory.stiffness[0]))
    ]


def _curvatures(
    surrogate, trajectories, labelled: tuple[int, int], dtype, training: bool, bonds=None
):
    """Return the surrogate's and the reference's curvatures of one frame's labelled bonds.

    The third value marks which of the run's bonds were measured there: the labelled ones,
    or ``bonds`` of them (a boolean mask over the run's bonds) where given.
    """
    run, row = labelled
    trajectory = trajectories[run]
    indices, pairs, curvatures, step = trajectory.stiffness
    labelled = np.isfinite(curvatures[row]) if bonds is None else bonds
    reference_index = int(indices[row])
    batch = make_batch(trajectories, [Pair(run, reference_index, 0)], dtype)
    frame = prepare_batch(surrogate, batch)
    probe = trajectory.positions[trajectory.reference_steps[reference_index]]
    predicted = surrogate_curvatures(
        frame, surrogate, pairs[labelled], probe, step, training=training
    )
    return predicted, torch.as_tensor(curvatures[row][labelled], dtype=predicted.dtype), labelled


def _stiffness_loss(surrogate, trajectories, labelled: tuple[int, int], dtype) -> torch.Tensor:
    """Relative squared curvature error of at most STIFFNESS_BONDS_PER_STEP labelled bonds.

    A random subset of the frame's labelled bonds (an unbiased estimate of the error over
    all of them) bounds the cost of a step: each bond is two surrogate copies of the whole
    frame, which in a 64-water box made this term 60% of a training step.
    """
    run, row = labelled
    curvatures = trajectories[run].stiffness[2][row]
    chosen = np.flatnonzero(np.isfinite(curvatures))
    scale = float(np.mean(curvatures[chosen] ** 2))
    if len(chosen) > STIFFNESS_BONDS_PER_STEP:
        chosen = np.sort(random.sample(list(chosen), STIFFNESS_BONDS_PER_STEP))
    bonds = np.zeros(len(curvatures), dtype=bool)
    bonds[chosen] = True
    predicted, target, _ = _curvatures(surrogate, trajectories, labelled, dtype, True, bonds)
    # relative to the frame's typical bond curvature (all its labels): a bond near zero
    # curvature (a random model's) must not dominate
    return ((predicted - target) ** 2).mean() / max(scale, 1e-6)


def stiffness_ratios(surrogate: Surrogate, trajectories: list[Trajectory]) -> dict[str, float]:
    """Return the surrogate's summed bond curvatures over the reference's on labelled frames.

    Returns ``{"xh", "heavy", "softest_bond"}`` (``softest_bond``: the lowest ratio of one
    bond, summed over the frames that labelled it); empty without labels.
    """
    labelled = _labelled_frames(trajectories)
    if not labelled:
        return {}
    dtype = surrogate.feature_in.weight.dtype
    measured = {}
    for run, row in labelled:
        trajectory = trajectories[run]
        if run not in measured:
            shape = trajectory.stiffness[2].shape
            hydrogen = (trajectory.numbers[trajectory.stiffness[1]] == 1).any(axis=1)
            measured[run] = (np.full(shape, np.nan), np.full(shape, np.nan), hydrogen)
        predicted, target, bonds = _curvatures(surrogate, trajectories, (run, row), dtype, False)
        measured[run][0][row, bonds] = target.double().numpy()
        measured[run][1][row, bonds] = predicted.detach().double().numpy()
    sums = {"xh": [0.0, 0.0], "heavy": [0.0, 0.0]}
    softest = math.inf
    for reference_k, surrogate_k, hydrogen in measured.values():
        for group, chosen in (("xh", hydrogen), ("heavy", ~hydrogen)):
            sums[group][0] += float(np.nansum(surrogate_k[:, chosen]))
            sums[group][1] += float(np.nansum(reference_k[:, chosen]))
        stiffness = BondStiffness(reference_k, surrogate_k, hydrogen)
        softest = min(softest, float(np.nanmin(stiffness.bond_ratios())))
    result = {group: a / b for group, (a, b) in sums.items() if b}
    return {**result, "softest_bond": softest}


def _standardise_features(surrogate: Surrogate, trajectories: list[Trajectory]) -> None:
    features = np.concatenate(
        [run.node_features.reshape(-1, run.node_features.shape[-1]) for run in trajectories]
    )
    surrogate.feature_mean.copy_(torch.as_tensor(features.mean(0)))
    surrogate.feature_std.copy_(torch.as_tensor(features.std(0) + 1e-6))


def _initial_surrogate(
    reference: MACEReference, config: TrainConfig, trajectories: list[Trajectory]
) -> Surrogate:
    """Return a fresh surrogate, or the one in ``config.init`` to fine-tune (same reference).

    A version-1 ``config.init`` is upgraded (:func:`boostmd.forcefields.upgrade.upgrade_version_1`),
    its new head fitted on the node features of the training runs.
    """
    if config.init is None:
        return Surrogate.for_reference(
            reference, num_channels=config.num_channels, hidden_dim=config.hidden_dim
        )
    payload = torch.load(config.init, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("version") == 1:
        from boostmd.forcefields.upgrade import upgrade_version_1

        numbers = np.concatenate(
            [np.tile(run.numbers, len(run.node_features)) for run in trajectories]
        )
        features = np.concatenate(
            [run.node_features.reshape(-1, run.node_features.shape[-1]) for run in trajectories]
        )
        surrogate = upgrade_version_1(config.init, numbers, features).to(reference.dtype)
    else:
        surrogate = Surrogate.load(config.init, dtype=reference.dtype)
    check_compatible(reference, surrogate)
    return surrogate


def _judge_epoch(
    surrogate: Surrogate, trajectories, valid_pairs, config: TrainConfig, state: dict, loss: float
) -> None:
    """Score ``surrogate`` on the validation pairs, keep it if best, append to the history.

    Selection is by the training objective on the validation pairs; ``state["epoch"]``
    is the epoch just finished (0: the starting surrogate of a fine-tune).
    """
    surrogate.eval()
    by_k, energy_by_k = rmse_by_k(surrogate, trajectories, valid_pairs)
    valid_rmse = math.sqrt(float(np.mean(np.square(list(by_k.values())))))
    valid_energy_rmse = math.sqrt(float(np.mean(np.square(list(energy_by_k.values())))))
    valid_loss = config.energy_weight * valid_energy_rmse**2 + config.forces_weight * (
        valid_rmse**2 / 3
    )
    improved = valid_loss < state["best"]
    state["best"] = min(state["best"], valid_loss)
    state["stale"] = 0 if improved or state["epoch"] == 0 else state["stale"] + 1
    if improved:
        surrogate.save(config.out / "surrogate.pt", overwrite=True)
    record = {
        "epoch": state["epoch"],
        "train_loss": None if math.isnan(loss) else loss,
        "valid_force_rmse_eV_per_A": valid_rmse,
        "valid_energy_rmse_eV": valid_energy_rmse,
    }
    with (config.out / "history.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    logger.info(
        "epoch %d: train loss %.4g, validation force RMSE %.1f meV/Å, energy RMSE %.1f meV",
        state["epoch"],
        loss,
        1000 * valid_rmse,
        1000 * valid_energy_rmse,
    )


def train(config: TrainConfig, reference: MACEReference | None = None) -> dict:
    """Train (or resume training) a surrogate; returns the final metrics.

    ``reference``: the model ``config.reference`` names, already loaded (building a MACE
    takes seconds to a minute), else it is loaded here.
    """
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    checkpoint_path = config.out / "checkpoint.pt"
    if checkpoint_path.exists() and not config.resume:
        raise FileExistsError(
            f"{config.out} already holds a training run; pass --resume to continue it or "
            "choose another --out"
        )
    config.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if reference is None:
        reference = load_reference(config.reference, pickled=config.pickled_reference)
    trajectories = load_trajectories(config.data, reference.cutoff, reference.fingerprint)
    surrogate = _initial_surrogate(reference, config, trajectories)
    train_pairs, valid_pairs = split_pairs(trajectories, config)
    train_windows = full_windows(train_pairs, config.max_k)
    if not train_windows or not valid_pairs:
        raise ValueError(
            "not enough frames for training and validation pairs; "
            "generate longer runs or lower --max-k"
        )
    if config.init is None:
        _standardise_features(surrogate, trajectories)
    optimizer = torch.optim.AdamW(
        surrogate.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    state = {"epoch": 0, "best": math.inf, "stale": 0}
    if config.resume and checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        surrogate.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        logger.info("resuming at epoch %d", state["epoch"])
    if config.init is not None and state["epoch"] == 0 and math.isinf(state["best"]):
        # The starting surrogate is the first candidate: a fine-tune that only makes it
        # worse on this data returns it unchanged.
        _judge_epoch(surrogate, trajectories, valid_pairs, config, state, math.nan)
    dtype = surrogate.feature_in.weight.dtype
    labelled = _labelled_frames(trajectories) if config.stiffness_weight > 0 else []

    def out_of_time() -> bool:
        limit = config.time_limit_s
        return limit is not None and time.monotonic() - started > limit

    while state["epoch"] < config.epochs and state["stale"] < config.patience and not out_of_time():
        surrogate.train()
        random.shuffle(train_windows)
        losses = []
        progress = tqdm(
            _batches(train_windows, config.batch_size),
            desc=f"epoch {state['epoch'] + 1}/{config.epochs}",
            leave=False,
        )
        for chunk in progress:
            batch = make_window_batch(trajectories, chunk, config.max_k, dtype)
            loss = _loss(surrogate, batch, config)
            if labelled:
                stiffness = _stiffness_loss(surrogate, trajectories, random.choice(labelled), dtype)
                loss = loss + config.stiffness_weight * stiffness
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(surrogate.parameters(), config.max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
            progress.set_postfix(loss=f"{losses[-1]:.4g}")
        scheduler.step()
        state["epoch"] += 1
        _judge_epoch(surrogate, trajectories, valid_pairs, config, state, float(np.mean(losses)))
        torch.save(
            {
                "model": surrogate.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
            },
            checkpoint_path,
        )
    best = Surrogate.load(config.out / "surrogate.pt")
    by_k, energy_by_k = rmse_by_k(best, trajectories, valid_pairs)
    metrics = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "train_pairs": len(train_pairs),
        "validation_pairs": len(valid_pairs),
        "epochs_run": state["epoch"],
        "validation_force_rmse_meV_per_A_by_k": {k: 1000 * v for k, v in by_k.items()},
        "validation_energy_rmse_meV_by_k": {k: 1000 * v for k, v in energy_by_k.items()},
        "stiffness_ratio_on_labelled_frames": stiffness_ratios(best, trajectories),
    }
    metrics["config"]["data"] = [str(p) for p in config.data]
    (config.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def format_table(by_k: dict[int, float], energy_by_k: dict[int, float] | None = None) -> str:
    """Force (and energy) RMSE against k as a small text table."""
    energy_by_k = energy_by_k or {}
    lines = ["  k | force RMSE (meV/Å) | energy RMSE (meV)", "----+--------------------+------"]
    lines += [
        f"{k:3d} | {value:18.1f} | {energy_by_k.get(k, float('nan')):8.1f}"
        for k, value in by_k.items()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: map arguments onto :class:`TrainConfig` and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference",
        required=True,
        help="the reference: a shipped name (dipeptides), a weights file, or with "
        "--pickled-reference a mace-torch .model",
    )
    parser.add_argument(
        "--pickled-reference",
        action="store_true",
        help="--reference is a mace-torch .model (a pickle: loading it runs code from the "
        "file; trust it)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="directories of runs from python -m boostmd.data",
    )
    parser.add_argument(
        "--runs",
        nargs="*",
        default=None,
        help="run names to train on (default: all), e.g. ALA_300K GLY_500K",
    )
    parser.add_argument(
        "--structure",
        type=Path,
        nargs="+",
        default=None,
        help="train only on the runs made from these structure files (python -m "
        "boostmd.data --structure names runs after the file's stem)",
    )
    parser.add_argument("--out", type=Path, required=True)
    defaults = TrainConfig(reference=Path(), data=[], out=Path())
    for name in ("max_k", "epochs", "batch_size", "patience", "num_channels", "hidden_dim", "seed"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    for name in (
        "lr",
        "forces_weight",
        "energy_weight",
        "underestimate_weight",
        "validation_fraction",
        "max_grad_norm",
        "stiffness_weight",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name)
        )
    parser.add_argument(
        "--stiffness-frames",
        type=int,
        default=0,
        help="first label this many frames of each run with the reference's bond-stretch "
        "curvatures (NAME.stiffness.npz, kept for later trainings), which training fits "
        "with --stiffness-weight (python -m boostmd.fit labels 8)",
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--init", type=Path, default=None, help="fine-tune this surrogate instead of a new one"
    )
    args = parser.parse_args(argv)
    start_command(logging.INFO)
    for directory in args.data:
        if not directory.is_dir():
            raise SystemExit(
                f"--data {directory} is not a directory of runs "
                "(make one with python -m boostmd.data)"
            )
    files = sorted(f for directory in args.data for f in directory.glob("*.extxyz"))
    if args.runs:
        files = [f for f in files if f.stem in set(args.runs)]
    if args.structure:
        stems = {path.stem for path in args.structure}
        files = [f for f in files if f.stem.rsplit("_", 1)[0] in stems]
    if not files:
        raise SystemExit(f"no runs (*.extxyz) to train on in {[str(d) for d in args.data]}")
    skipped = ("runs", "data", "structure", "stiffness_frames")
    values = {k: v for k, v in vars(args).items() if k not in skipped}
    reference = None
    if args.stiffness_frames:
        reference = load_reference(args.reference, pickled=args.pickled_reference)
        for run in files:
            write_stiffness_labels(reference, run, frames=args.stiffness_frames)
    metrics = train(TrainConfig(data=files, **values), reference)
    print(
        format_table(
            metrics["validation_force_rmse_meV_per_A_by_k"],
            metrics["validation_energy_rmse_meV_by_k"],
        )
    )


if __name__ == "__main__":
    main()
