"""Several systems in one reference forward pass equal one pass each."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from boostmd import MACEReference
from boostmd.peptides import capped_dipeptide
from boostmd.testing import build_mace


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


def test_bad_batches_are_refused(reference):
    with pytest.raises(ValueError, match="at least one system"):
        reference.compute_many([])
    broken = molecule("H2O")
    broken.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reference.compute_many([molecule("H2O"), broken])
