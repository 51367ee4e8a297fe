import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Bit-for-bit claims hold with one thread: with more, torch's CPU kernels can add up
    in an order that depends on the machine's load (seen: forces 6e-8 eV/Å apart)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(scope="module")
def reference():
    """A small random MACE in float64 (a test file may define its own ``reference``)."""
    from boostmd import MACEReference
    from boostmd.forcefields.testing import build_mace

    return MACEReference(build_mace(dtype=torch.float64, seed=1))


@pytest.fixture(scope="module")
def surrogate(reference):
    """Untrained: a smooth surrogate whose refresh energy errors are small (meV) but never
    zero, from the public API only."""
    from boostmd import Surrogate

    torch.manual_seed(3)
    return Surrogate.for_reference(reference, num_channels=8, hidden_dim=32)
