"""Replicas advanced together: batched model calls, each replica's own decisions."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from boostmd import BoostLangevin, BoostMDCalculator, Surrogate
from boostmd.dynamics.calculator import ReferenceCalculator
from boostmd.dynamics.model_calls import ModelCalls, frames_many, surrogate_many
from boostmd.dynamics.replicas import ReplicaBatch
from boostmd.forcefields.surrogate import ReferenceFrame

TIMESTEP = 0.5 * units.fs
FRICTION = 0.01 / units.fs
STEPS = 12


def replica(seed: int) -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(seed).normal(0, 0.02, atoms.positions.shape)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    return atoms


def boost_run(atoms, calc, seed, tolerance=np.inf):
    atoms.calc = calc
    return BoostLangevin(atoms, TIMESTEP, 300, FRICTION, tolerance=tolerance, rng=seed)


def plain_run(calc, seed):
    """ASE's Langevin on a replica, for a calculator without windows."""
    atoms = replica(seed)
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    return Langevin(atoms, TIMESTEP, temperature_K=300, friction=FRICTION, fixcm=False, rng=rng)


def trace(dynamics):
    """Keep the positions and energy of every shown step."""
    frames = []
    dynamics.attach(
        lambda: frames.append(
            (dynamics.atoms.get_positions(), dynamics.atoms.get_potential_energy())
        )
    )
    return frames


def test_joined_frames_evaluate_as_each_frame_alone_and_split_back(reference, surrogate):
    systems = [replica(seed) for seed in range(3)]
    systems[1] = molecule("CH3OH")  # other sizes too
    results = [reference(atoms) for atoms in systems]
    frames = frames_many(surrogate, systems, results)  # one batch, split
    alone = [ModelCalls(reference, surrogate).frame(a, r) for a, r in zip(systems, results)]
    moved = [
        atoms.positions + 0.03 * np.sin(np.arange(3 * len(atoms))).reshape(-1, 3)
        for atoms in systems
    ]
    scales = [1.0, 0.5, 2.0]
    together = surrogate_many(surrogate, frames, moved, scales)
    for single, x, scale, (energy, forces, curvature) in zip(alone, moved, scales, together):
        energy_alone, forces_alone, curvature_alone = surrogate_many(
            surrogate, [single], [x], [scale]
        )[0]
        assert energy == pytest.approx(energy_alone, abs=1e-10)
        assert curvature == pytest.approx(curvature_alone, abs=1e-10)
        np.testing.assert_allclose(forces, forces_alone, atol=1e-9)
    rejoined = ReferenceFrame.join(frames).split()
    for frame, again in zip(frames, rejoined):
        for name, value in vars(frame).items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, getattr(again, name)), name


def test_one_replica_is_the_unbatched_run_bit_for_bit(reference, surrogate):
    runs = {}
    for way in ("alone", "batched"):
        batch = ReplicaBatch(reference, surrogate)
        calc = (
            BoostMDCalculator(reference, surrogate, interval=4, force_guard=1e9, frame="start")
            if way == "alone"
            else batch.boostmd_calculator(interval=4, force_guard=1e9, frame="start")
        )
        dynamics = boost_run(replica(0), calc, seed=7, tolerance=5e-5)  # some rollbacks
        frames = trace(dynamics)
        if way == "alone":
            dynamics.run(STEPS)
        else:
            batch.run([lambda dynamics=dynamics: dynamics.run(STEPS)])
        runs[way] = (frames, dynamics.rollbacks, calc.stats.full_steps)
    (alone, rollbacks, full), (batched, rollbacks_b, full_b) = runs["alone"], runs["batched"]
    assert 0 < rollbacks == rollbacks_b and full == full_b
    for (x, energy), (y, energy_b) in zip(alone, batched, strict=True):
        np.testing.assert_array_equal(x, y)
        assert energy == energy_b


def test_each_replica_keeps_its_own_rollbacks_and_equals_its_run_alone(reference, surrogate):
    tolerances = [0.0, np.inf, 5e-4]  # every window rerun, none, some
    batch = ReplicaBatch(reference, surrogate)
    together = [
        boost_run(
            replica(i), batch.boostmd_calculator(interval=4, force_guard=1e9, frame="start"), i, tol
        )
        for i, tol in enumerate(tolerances)
    ]
    # a reference-only replica shares the same batched calls
    reference_run = plain_run(batch.reference_calculator(), seed=9)
    batch.run([lambda d=d: d.run(STEPS) for d in [*together, reference_run]])
    assert together[0].rollbacks == together[0].windows > 0
    assert together[1].rollbacks == 0
    # one batched reference call serves every replica whose window ends, and one batched
    # window every replica's surrogate steps
    for kind in ("reference", "frame", "window"):
        assert batch.requests[kind] > batch.batched_calls[kind]
    for i, (tol, dynamics) in enumerate(zip(tolerances, together)):
        alone = boost_run(
            replica(i),
            BoostMDCalculator(reference, surrogate, interval=4, force_guard=1e9, frame="start"),
            i,
            tol,
        )
        alone.run(STEPS)
        assert alone.rollbacks == dynamics.rollbacks and alone.windows == dynamics.windows
        np.testing.assert_allclose(dynamics.atoms.positions, alone.atoms.positions, atol=1e-9)
    single = plain_run(ReferenceCalculator(reference), seed=9)
    single.run(STEPS)
    np.testing.assert_allclose(reference_run.atoms.positions, single.atoms.positions, atol=1e-9)


def test_max_atoms_splits_a_round_into_smaller_batches(reference, surrogate):
    batch = ReplicaBatch(reference, surrogate, max_atoms=20)  # ethanol: 9 atoms, two fit
    runs = [
        boost_run(replica(i), batch.boostmd_calculator(interval=4, frame="start"), i)
        for i in range(5)
    ]
    batch.run([lambda d=d: d.run(4) for d in runs])
    for kind in ("reference", "frame", "window"):
        # five replicas in step: each round's calls as batches of 2, 2 and 1
        assert batch.requests[kind] == 5 * batch.batched_calls[kind] / 3
    with pytest.raises(ValueError, match="max_atoms"):
        ReplicaBatch(reference, surrogate, max_atoms=0)


def test_a_failing_replica_stops_the_others_and_its_error_is_raised(reference, surrogate):
    batch = ReplicaBatch(reference, surrogate)
    runs = [
        boost_run(replica(i), batch.boostmd_calculator(interval=4, frame="start"), i)
        for i in range(3)
    ]
    broken = runs[1].atoms

    def diverge():
        runs[1].run(5)
        broken.positions[2] = np.nan  # as a diverged integrator would leave it
        runs[1].run(5)

    tasks = [lambda: runs[0].run(1000), diverge, lambda: runs[2].run(1000)]
    with pytest.raises(ValueError, match=r"atoms \[2\] have NaN"):
        batch.run(tasks)
    assert runs[0].nsteps < 1000 and runs[2].nsteps < 1000  # stopped, not run to the end
    # the batch is usable again, and outside run() its calls are made at once
    assert len(batch.run([lambda: runs[0].run(2)])) == 1
    runs[2].atoms.get_potential_energy()


def test_misuse_is_named(reference, surrogate):
    with pytest.raises(ValueError, match="no surrogate"):
        ReplicaBatch(reference).boostmd_calculator(frame="start")
    other = ReplicaBatch(reference, Surrogate.for_reference(reference, num_channels=4))
    with pytest.raises(ValueError, match=r"ReplicaBatch\.boostmd_calculator"):
        BoostMDCalculator(reference, surrogate, calls=other, frame="start")
    with pytest.raises(ValueError, match="at least one frame"):
        ReferenceFrame.join([])
