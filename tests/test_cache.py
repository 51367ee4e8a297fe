import math

import pytest
import torch

from integrators import (
    AdamsBashforth,
    Cache,
    Linear,
    Periodic,
    Profiled,
    Reuse,
    Taylor,
    Threshold,
    Warmup,
)

TIMES = [1.0, 0.93, 0.85, 0.74, 0.66, 0.51, 0.42, 0.3, 0.22, 0.1]  # non-uniform, decreasing


class CountingModel:
    """A deterministic expensive function with a call counter."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, scale=1.0):
        self.calls += 1
        return scale * math.sin(3.0 * t) * x + t**2


@pytest.fixture
def x(dtype):
    return torch.linspace(-1, 1, 7, dtype=dtype)


def test_periodic_one_equals_plain_calls(x):
    model = CountingModel()
    cache = Cache(model, Periodic(1), Taylor(order=2))
    for t in TIMES:
        assert torch.equal(cache(x, t, scale=2.0), model(x, t, scale=2.0))
    assert cache.stats.full_steps == len(TIMES) and cache.stats.reuse_steps == 0
    assert model.calls == 2 * len(TIMES)


@pytest.mark.parametrize(
    "make_predictor", [Reuse, Linear, lambda: AdamsBashforth(3), lambda: Taylor(2)]
)
@pytest.mark.parametrize(
    "schedule", [Periodic(3), Warmup(Periodic(4), first=2, last=1, total=len(TIMES))]
)
def test_full_steps_run_fn_and_reuse_steps_predict(make_predictor, schedule, x):
    model, reference = CountingModel(), make_predictor()
    cache = Cache(model, schedule, make_predictor())
    schedule.reset()
    expected_full = [schedule.should_compute(i) for i in range(len(TIMES))]
    schedule.reset()
    for t, full in zip(TIMES, expected_full):
        out = cache(x, t)
        assert out.dtype == x.dtype
        assert cache.last_source == ("full" if full else "reuse")
        if full:
            torch.testing.assert_close(out, math.sin(3.0 * t) * x + t**2)
            reference.update(t, out)
        else:
            assert torch.equal(out, reference.predict(t))
    assert model.calls == cache.stats.full_steps == sum(expected_full)
    assert cache.stats.reuse_steps == len(TIMES) - sum(expected_full)
    assert cache.stats.total_steps == cache.step == len(TIMES)
    assert cache.stats.full_time_s > 0 and cache.stats.reuse_time_s > 0
    assert cache.stats.full_fraction == pytest.approx(sum(expected_full) / len(TIMES))


def test_first_call_is_full_even_if_schedule_says_reuse(x):
    model = CountingModel()
    cache = Cache(model, Profiled([False, False, True]), Reuse())
    cache(x, 1.0)
    assert cache.last_source == "full" and model.calls == 1
    cache(x, 0.5)
    assert cache.last_source == "reuse"


def test_threshold_with_indicator_function(x):
    indicator_steps = []

    def indicator(inp, t):
        indicator_steps.append(t)
        return 0.4

    cache = Cache(CountingModel(), Threshold(tol=1.0), Reuse(), indicator=indicator)
    sources = []
    for t in TIMES[:6]:
        cache(x, t)
        sources.append(cache.last_source)
    assert sources == ["full", "reuse", "reuse", "full", "reuse", "reuse"]
    assert indicator_steps == TIMES[:6]


def test_reset_starts_a_new_trajectory(x):
    model = CountingModel()
    cache = Cache(model, Periodic(2), Linear())
    first = [cache(x, t) for t in TIMES]
    cache.reset()
    assert cache.step == 0 and cache.stats.total_steps == 0
    second = [cache(x, t) for t in TIMES]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_nested_outputs(x):
    cache = Cache(lambda inp, t: (inp * t, {"skip": inp + t}), Periodic(2), Linear())
    outputs = [cache(x, t) for t in (0.0, 1.0, 2.0, 3.0)]
    product, extra = outputs[3]
    torch.testing.assert_close(product, x * 3.0)
    torch.testing.assert_close(extra["skip"], x + 3.0)


def test_stats_as_dict():
    cache = Cache(lambda inp, t: inp, Periodic(2), Reuse())
    for t in range(4):
        cache(torch.zeros(1), float(t))
    stats = cache.stats.as_dict()
    assert stats["full_steps"] == 2 and stats["reuse_steps"] == 2
    assert stats["full_fraction"] == 0.5
    assert "2 full" in str(cache.stats)


def test_rejects_objects_that_are_not_schedules_or_predictors():
    with pytest.raises(TypeError, match=r"schedule=.*lacks the Schedule methods"):
        Cache(lambda x, t: x, object(), Reuse())
    with pytest.raises(TypeError, match=r"predictor=.*lacks the Predictor methods"):
        Cache(lambda x, t: x, Periodic(1), object())
    with pytest.raises(TypeError, match=r"fn=.*callable"):
        Cache(3, Periodic(1), Reuse())
