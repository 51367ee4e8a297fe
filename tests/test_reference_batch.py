"""Several systems in one reference forward pass equal one pass each."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from boostmd import MACEReference, Surrogate
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.testing import build_mace


@pytest.fixture(scope="module")
def reference():
    return MACEReference(build_mace(dtype=torch.float64, seed=1))


def test_batched_forward_equals_one_forward_per_system(reference):
    ethanol, peptide = molecule("CH3CH2OH"), capped_dipeptide("ALA")
    moved = ethanol.copy()
    moved.positions += np.random.default_rng(0).normal(0, 0.05, moved.positions.shape)
    systems = [ethanol, peptide, moved]
    together = reference.compute_many(systems)
    for atoms, result in zip(systems, together):
        alone = reference(atoms)
        assert float(result.energy) == pytest.approx(float(alone.energy), abs=1e-10)
        torch.testing.assert_close(result.forces, alone.forces, atol=1e-10, rtol=0)
        torch.testing.assert_close(result.node_features, alone.node_features, atol=1e-10, rtol=0)


def test_one_system_batch_is_the_single_call_bit_for_bit(reference):
    peptide = capped_dipeptide("ALA")
    (batched,) = reference.compute_many([peptide])
    single = reference(peptide)
    assert torch.equal(batched.forces, single.forces) and torch.equal(batched.energy, single.energy)


def test_overlapping_replicas_prepared_as_one_batch_equal_their_own_frames(reference):
    torch.manual_seed(0)
    surrogate = Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)
    peptide = capped_dipeptide("ALA")
    replicas = [peptide.copy(), peptide.copy()]  # on top of each other, as replicas are
    replicas[1].positions += np.random.default_rng(1).normal(0, 0.05, (len(peptide), 3))
    results = reference.compute_many(replicas)
    batch = torch.repeat_interleave(torch.arange(2), len(peptide))
    joined = surrogate.prepare_many(replicas, results)
    with pytest.raises(ValueError, match="one reference result per system"):
        surrogate.prepare_many(replicas, results[:1])
    moved = [a.positions + 0.02 * np.sin(np.arange(3 * len(a))).reshape(-1, 3) for a in replicas]
    energies, forces = surrogate.energy_and_forces(joined, np.concatenate(moved))
    for i, (atoms, result) in enumerate(zip(replicas, results)):
        frame = surrogate.prepare(
            atoms.numbers, result.node_features, atoms.positions, result.energy, result.forces
        )
        energy, force = surrogate.energy_and_forces(frame, moved[i])
        assert float(energies[i]) == pytest.approx(float(energy[0]), abs=1e-9)
        torch.testing.assert_close(forces[batch == i], force, atol=1e-9, rtol=0)


def test_bad_batches_are_refused(reference):
    with pytest.raises(ValueError, match="at least one system"):
        reference.compute_many([])
    broken = molecule("H2O")
    broken.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reference.compute_many([molecule("H2O"), broken])
