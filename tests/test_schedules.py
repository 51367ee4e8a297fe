import copy
import math

import pytest
import torch

from integrators import (
    AdamsBashforth,
    ErrorControlled,
    Periodic,
    Profiled,
    Reuse,
    Threshold,
    Warmup,
)
from integrators.schedules import relative_l1


def pattern(schedule, n, indicators=None):
    indicators = indicators or [None] * n
    return "".join(
        "F" if schedule.should_compute(i, x) else "." for i, x in zip(range(n), indicators)
    )


def test_periodic_pattern():
    assert pattern(Periodic(1), 4) == "FFFF"
    assert pattern(Periodic(3), 8) == "F..F..F."


def test_threshold_accumulates_since_last_full_step():
    schedule = Threshold(tol=1.0)
    indicators = [None, 0.3, 0.3, 0.3, 0.5, 0.2, 2.0, 0.1]
    #   step 0 full; sums 0.3, 0.6, 0.9, 1.4>1 -> full; 0.2; 2.2>1 -> full; 0.1
    assert pattern(schedule, 8, indicators) == "F...F.F."
    assert schedule.accumulated == pytest.approx(0.1)


def test_threshold_max_reuse_forces_full_steps():
    schedule = Threshold(tol=10.0, max_reuse=2)
    assert pattern(schedule, 8, [0.0] * 8) == "F..F..F."


def test_threshold_zero_max_reuse_always_computes():
    assert pattern(Threshold(tol=5.0, max_reuse=0), 4, [0.0] * 4) == "FFFF"


def test_threshold_reset_restarts():
    schedule = Threshold(tol=1.0)
    pattern(schedule, 3, [None, 0.6, 0.3])
    schedule.reset()
    assert schedule.accumulated == 0.0
    assert pattern(schedule, 3, [None, 0.6, 0.3]) == "F.."


def test_threshold_needs_indicator_after_first_step():
    schedule = Threshold(tol=1.0)
    assert schedule.should_compute(0)
    with pytest.raises(ValueError, match="needs an indicator"):
        schedule.should_compute(1)
    with pytest.raises(ValueError, match="finite and >= 0"):
        schedule.should_compute(1, float("nan"))
    with pytest.raises(ValueError, match="finite and >= 0"):
        schedule.should_compute(1, -0.1)


def test_warmup_forces_first_and_last_steps():
    schedule = Warmup(Periodic(4), first=2, last=2, total=10)
    assert pattern(schedule, 10) == "FF..F...FF"


def test_warmup_restarts_an_inner_threshold():
    # Forced warm-up steps count as full steps for the inner accumulation.
    schedule = Warmup(Threshold(tol=1.0), first=2)
    assert pattern(schedule, 6, [None, 5.0, 0.4, 0.4, 0.4, 0.4]) == "FF..F."


def test_warmup_rejects_steps_beyond_total():
    schedule = Warmup(Periodic(2), first=1, total=3)
    with pytest.raises(ValueError, match="beyond"):
        schedule.should_compute(3)


def test_profiled_follows_mask():
    schedule = Profiled(torch.tensor([True, False, False, True]))
    assert pattern(schedule, 4) == "F..F"
    assert schedule.num_full == 2
    with pytest.raises(ValueError, match="covers 4 steps; got step 4"):
        schedule.should_compute(4)


def test_profiled_calibration_reuses_predictable_steps():
    # Values linear in t except a jump at t = 5: a linear predictor reuses the
    # linear stretches and computes around the jump.
    times = [float(i) for i in range(9)]
    outputs = [torch.tensor([t + (10.0 if t >= 5 else 0.0)]) for t in times]
    schedule = Profiled.calibrate(outputs, times, AdamsBashforth(order=2), tol=1e-6)
    assert "".join("F" if m else "." for m in schedule.mask) == "FF...FF.."
    assert schedule.errors[2] == pytest.approx(0.0)
    assert schedule.errors[0] is None


def test_profiled_calibration_respects_max_reuse_and_resets_predictor():
    times = [float(i) for i in range(7)]
    outputs = [torch.ones(2) for _ in times]
    predictor = Reuse()
    schedule = Profiled.calibrate(outputs, times, predictor, tol=0.0, max_reuse=2)
    assert schedule.mask == (True, False, False, True, False, False, True)
    assert predictor.num_recorded == 0


def test_relative_l1_on_nested_values():
    target = (torch.tensor([1.0, -1.0]), torch.tensor([2.0]))
    prediction = (torch.tensor([1.0, -0.5]), torch.tensor([2.0]))
    assert relative_l1(prediction, target) == pytest.approx(0.5 / 4.0)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Periodic(0), r"Periodic\(every=\.\.\.\) must be an integer >= 1, got 0"),
        (lambda: Periodic(2.5), "got 2.5"),
        (lambda: Threshold(-0.1), r"tol=\.\.\.\) must be a number >= 0, got -0.1"),
        (lambda: Threshold(float("nan")), "tol"),
        (lambda: Threshold(float("inf")), "never computes"),
        (lambda: Threshold(0.1, max_reuse=-1), "max_reuse"),
        (lambda: Warmup(Periodic(2), first=-1), "first"),
        (lambda: Warmup(Periodic(2), last=2), r"needs total"),
        (lambda: Warmup(Periodic(2), first=3, last=3, total=4), "more steps than total"),
        (lambda: Profiled([]), "at least one step"),
        (lambda: Profiled([True, False], num_steps=3), "2 entries but num_steps=3"),
        (lambda: Profiled.calibrate([torch.ones(1)], [0.0, 1.0], Reuse(), 0.1), "1 outputs"),
        (lambda: ErrorControlled(0.0), r"tol=\.\.\.\) must be a number > 0"),
        (lambda: ErrorControlled(0.1, initial=30), r"initial=30\) must lie in"),
        (lambda: ErrorControlled(0.1, min_interval=5, max_interval=3), "max_interval"),
        (lambda: ErrorControlled(0.1, order=0), "order"),
    ],
)
def test_bad_configurations_name_the_value(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        Periodic(2).should_compute(-1)


def run_error_controlled(schedule, constant, order, steps):
    """Drive ``schedule`` with a predictor whose error is exactly ``constant * k**order``."""
    since, errors = 0, []
    for step in range(steps):
        if schedule.should_compute(step):
            if step:
                errors.append(constant * since**order)
                schedule.report_error(errors[-1], since)
            since = 0
        since += 1
    return errors


@pytest.mark.parametrize("order", [1.0, 2.0, 3.0])
def test_error_controlled_settles_on_the_longest_interval_within_tol(order):
    constant, tol = 0.002, 0.05
    schedule = ErrorControlled(tol=tol, initial=10, max_interval=50, order=order)
    errors = run_error_controlled(schedule, constant, order, 400)
    expected = math.floor((tol / constant) ** (1 / order))  # the largest k with C k^p <= tol
    assert schedule.interval == expected
    assert max(errors[1:]) <= tol < constant * (expected + 1) ** order


def test_error_controlled_bounds_and_bad_errors():
    schedule = ErrorControlled(tol=1.0, initial=5, min_interval=2, max_interval=8)
    assert schedule.interval == 5  # nothing reported yet
    schedule.report_error(0.0, 5)
    assert schedule.interval == 7  # a perfect predictor: growing by half at most
    schedule.report_error(0.0, 7)
    assert schedule.interval == 8  # up to the longest interval
    schedule = ErrorControlled(tol=1.0, initial=5, min_interval=2, max_interval=8, memory=1)
    schedule.report_error(1e6, 5)
    assert schedule.interval == 2
    schedule.report_error(float("nan"), 5)  # a blow-up counts as a huge error
    assert schedule.interval == 2
    with pytest.raises(ValueError, match="steps"):
        schedule.report_error(0.1, 0)


def test_error_controlled_average_forgets_old_reports_after_memory():
    schedule = ErrorControlled(tol=1.0, order=1.0, memory=2)
    for error in (4.0, 2.0):  # the first two are averaged equally
        schedule.report_error(error, 1)
    assert schedule.model.mean_square == pytest.approx((16 + 4) / 2)
    schedule.report_error(0.0, 1)  # then each new one weighs 1 / memory
    assert schedule.model.mean_square == pytest.approx(10 / 2)


def test_error_controlled_copies_share_what_they_learned_but_not_the_count():
    schedule = ErrorControlled(tol=1.0, initial=4, order=1.0)
    pattern(schedule, 2)
    snapshot = copy.deepcopy(schedule)
    schedule.report_error(4.0, 4)  # measured after the snapshot, e.g. in an undone window
    assert snapshot.model is schedule.model and snapshot.interval == schedule.interval == 1
    pattern(schedule, 3)
    assert snapshot.since_full == 1 and schedule.since_full == 0
    schedule.reset()  # restarts the count, keeps the error model
    assert schedule.interval == 1 and schedule.should_compute(0)
    state = schedule.state()
    fresh = ErrorControlled(tol=1.0, initial=4, order=1.0)
    fresh.load_state(state)
    assert fresh.interval == schedule.interval and fresh.state() == state


def test_consult_says_what_the_schedule_asked_and_tells_it_of_forced_steps():
    from integrators.schedules import consult

    schedule = Threshold(tol=10.0)
    assert consult(schedule, 0) == (True, True)
    assert consult(schedule, 1, 4.0) == (False, False)
    assert consult(schedule, 2, 4.0, force=True) == (True, False)  # forced against its advice
    assert schedule.accumulated == 0.0  # told of the full step: the sum restarts
