import math

import pytest
import torch

from integrators import AdamsBashforth, Linear, Reuse, Taylor
from integrators.predictors import lagrange_weights

# Relative tolerance of an extrapolated polynomial, per dtype: the extrapolation
# weights amplify input rounding by their absolute sum (about 10-100 here).
RTOL = {torch.float32: 2e-4, torch.float64: 1e-10}


def random_times(n, generator):
    steps = 0.05 + torch.rand(n, generator=generator, dtype=torch.float64)  # non-uniform
    return torch.cumsum(steps, 0).tolist()


def polynomial(coefficients, t):
    """Evaluate a vector-valued polynomial; coefficients has shape (degree + 1, dim)."""
    powers = torch.tensor([t**j for j in range(coefficients.shape[0])], dtype=torch.float64)
    return powers @ coefficients


def assert_exact(predictor, degree, dtype, history, seed):
    generator = torch.Generator().manual_seed(seed)
    coefficients = torch.randn(degree + 1, 5, generator=generator, dtype=torch.float64)
    times = random_times(history + 1, generator)
    for t in times[:-1]:
        predictor.update(t, polynomial(coefficients, t).to(dtype))
    predicted = predictor.predict(times[-1])
    expected = polynomial(coefficients, times[-1])
    assert predicted.dtype == dtype
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(predicted.double(), expected, rtol=0, atol=RTOL[dtype] * scale)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_adams_bashforth_exact_below_order(order, seed, dtype):
    for degree in range(order):
        assert_exact(AdamsBashforth(order), degree, dtype, history=order + 2, seed=seed)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_taylor_exact_up_to_order(order, seed, dtype):
    for degree in range(order + 1):
        assert_exact(Taylor(order), degree, dtype, history=order + 3, seed=seed)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_adams_bashforth_is_not_exact_at_its_order(order):
    # The bound above is sharp: a degree-`order` polynomial is not reproduced.
    predictor = AdamsBashforth(order)
    for t in range(order):
        predictor.update(float(t), torch.tensor([float(t) ** order], dtype=torch.float64))
    assert not math.isclose(predictor.predict(float(order)).item(), float(order) ** order)


def test_taylor_derivatives_on_cubic():
    predictor = Taylor(order=3)
    times = [0.0, 0.3, 1.1, 1.5]
    for t in times:
        predictor.update(t, torch.tensor([t**3 - 2 * t], dtype=torch.float64))
    t = times[-1]
    value, first, second, third = (d.item() for d in predictor.derivatives)
    assert value == pytest.approx(t**3 - 2 * t, abs=1e-12)
    assert first == pytest.approx(3 * t**2 - 2, abs=1e-10)
    assert second == pytest.approx(6 * t, abs=1e-9)
    assert third == pytest.approx(6.0, abs=1e-9)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_taylor_matches_adams_bashforth_of_one_order_more(order):
    # Both extrapolate the polynomial through the same points, in two representations.
    generator = torch.Generator().manual_seed(order)
    taylor, adams = Taylor(order), AdamsBashforth(order + 1)
    times = random_times(order + 2, generator)
    for t in times[:-1]:
        value = torch.randn(4, generator=generator, dtype=torch.float64)
        taylor.update(t, value)
        adams.update(t, value)
    torch.testing.assert_close(taylor.predict(times[-1]), adams.predict(times[-1]))


def test_short_history_uses_highest_available_order():
    adams, taylor = AdamsBashforth(order=4), Taylor(order=4)
    assert adams.exact_degree == taylor.exact_degree == -1
    for t in (0.0, 0.5):
        value = torch.tensor([3.0 * t + 1.0], dtype=torch.float64)
        adams.update(t, value)
        taylor.update(t, value)
    assert adams.effective_order == 2 and adams.exact_degree == 1
    assert taylor.effective_order == 1 and taylor.exact_degree == 1
    for predictor in (adams, taylor):
        assert predictor.predict(2.0).item() == pytest.approx(7.0)


def test_history_is_a_sliding_window():
    predictor = AdamsBashforth(order=2)
    for t in range(5):
        predictor.update(float(t), torch.tensor([float(t)]))
    assert predictor.times == [3.0, 4.0]


def test_reuse_returns_last_value_unchanged():
    predictor = Reuse()
    first, second = torch.randn(3), torch.randn(3)
    predictor.update(0.0, first)
    predictor.update(1.0, second)
    assert torch.equal(predictor.predict(7.0), second)
    assert predictor.exact_degree == 0


def test_linear_exact_on_lines_with_nonuniform_steps(dtype):
    predictor = Linear()
    for t in (0.2, 0.9):
        predictor.update(t, torch.tensor([2.0 * t - 1.0], dtype=dtype))
    assert predictor.exact_degree == 1
    assert predictor.predict(1.7).item() == pytest.approx(2.4, rel=1e-6)


def test_linear_weight_scales_the_trend():
    predictor = Linear(weight=0.5)
    predictor.update(0.0, torch.tensor([0.0]))
    predictor.update(1.0, torch.tensor([1.0]))
    assert predictor.predict(2.0).item() == pytest.approx(1.5)
    assert predictor.exact_degree == 0


def test_nested_values_keep_structure_dtype_and_device():
    predictor = AdamsBashforth(order=2)
    for t in (0.0, 1.0):
        predictor.update(
            t, {"hidden": (torch.full((2,), t), torch.full((1,), 2 * t, dtype=torch.float16))}
        )
    predicted = predictor.predict(2.0)
    assert set(predicted) == {"hidden"} and isinstance(predicted["hidden"], tuple)
    hidden, other = predicted["hidden"]
    assert hidden.dtype == torch.float32 and other.dtype == torch.float16
    assert hidden.device == torch.device("cpu")
    assert torch.equal(hidden, torch.full((2,), 2.0))
    assert torch.equal(other, torch.full((1,), 4.0, dtype=torch.float16))


def test_lagrange_weights_sum_to_one():
    assert sum(lagrange_weights([0.0, 0.4, 1.3, 2.0], 2.6)) == pytest.approx(1.0)


def test_reset_forgets_history():
    predictor = Taylor(order=2)
    predictor.update(0.0, torch.zeros(1))
    predictor.reset()
    assert predictor.num_recorded == 0 and predictor.derivatives == []
    with pytest.raises(RuntimeError, match="before any full step"):
        predictor.predict(1.0)


@pytest.mark.parametrize("cls", [AdamsBashforth, Taylor])
@pytest.mark.parametrize("order", [0, -1, 1.5, True])
def test_bad_order_is_named(cls, order):
    with pytest.raises(ValueError, match=r"order=\.\.\.\) must be an integer >= 1"):
        cls(order=order)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), "1"])
def test_bad_linear_weight(weight):
    with pytest.raises(ValueError, match="weight"):
        Linear(weight=weight)


def test_repeated_or_nonfinite_time_is_rejected():
    predictor = AdamsBashforth(order=3)
    predictor.update(0.5, torch.zeros(1))
    with pytest.raises(ValueError, match="already in the history"):
        predictor.update(0.5, torch.zeros(1))
    with pytest.raises(ValueError, match="finite"):
        predictor.update(float("nan"), torch.zeros(1))


def test_unsupported_value_type():
    with pytest.raises(TypeError, match="expected a tensor"):
        Reuse().update(0.0, [1.0, 2.0])
