"""The reference on cuEquivariance kernels: same results, same fingerprint, or a clear error."""

import importlib.util

import pytest
import torch
from ase.build import molecule

from boostmd import MACEReference
from boostmd.forcefields.mace_io import save_mace
from boostmd.forcefields.testing import build_mace

HAS_CUEQ = importlib.util.find_spec("cuequivariance_torch") is not None


@pytest.fixture(scope="module")
def reference():
    return MACEReference(build_mace(dtype=torch.float64, seed=1))


@pytest.mark.skipif(HAS_CUEQ, reason="cuequivariance-torch is installed")
def test_asking_without_cuequivariance_names_the_packages(reference, tmp_path):
    with pytest.raises(ImportError, match="pip install cuequivariance-torch"):
        reference.with_cuequivariance()
    save_mace(reference.model, tmp_path / "reference.pt")
    with pytest.raises(ImportError, match="cuequivariance-ops-torch"):
        MACEReference.load(tmp_path / "reference.pt", cuequivariance=True)


@pytest.mark.skipif(not HAS_CUEQ, reason="needs cuequivariance-torch")
@pytest.mark.filterwarnings("ignore:cuequivariance_ops_torch is not available")
def test_converted_reference_gives_the_same_results_and_fingerprint(reference):
    atoms = molecule("CH3CH2OH")
    default_dtype = torch.get_default_dtype()
    converted = reference.with_cuequivariance()
    assert torch.get_default_dtype() == default_dtype
    assert converted.fingerprint == reference.fingerprint and converted.dtype == torch.float64
    plain, fast = reference(atoms), converted(atoms)
    assert float(fast.energy) == pytest.approx(float(plain.energy), abs=1e-6)
    torch.testing.assert_close(fast.forces, plain.forces, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.node_features, plain.node_features, atol=1e-6, rtol=0)
