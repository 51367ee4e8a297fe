import json

import numpy as np
import pytest

from boostmd.dynamics.calibration import CurvatureCalibration


def _windows(true_scale: float, scales_used, rng):
    """Refresh errors of windows whose true curvature energy is ``true_scale * K``."""
    curvature = rng.uniform(0.1, 1.0, len(scales_used))
    errors = (true_scale - np.asarray(scales_used)) * curvature
    return errors, curvature


def test_the_fit_recovers_the_true_scale_whatever_scale_each_window_ran_with():
    rng = np.random.default_rng(0)
    used = rng.uniform(0.8, 1.3, 30)  # as if the scale had changed from window to window
    calibration = CurvatureCalibration(min_windows=5)
    for error, curvature, scale in zip(*_windows(1.07, used, rng), used):
        calibration.update(float(error), float(curvature), float(scale))
    assert calibration.windows == 30
    assert calibration.scale == pytest.approx(1.07, rel=1e-12)


def test_the_scale_is_one_until_enough_windows_and_clipped_after():
    rng = np.random.default_rng(1)
    calibration = CurvatureCalibration(min_windows=4, bounds=(0.8, 1.25))
    errors, curvature = _windows(3.0, np.ones(4), rng)
    for k in range(4):
        assert calibration.scale == 1.0
        calibration.update(float(errors[k]), float(curvature[k]), 1.0)
    assert calibration.unclipped_scale == pytest.approx(3.0)
    assert calibration.scale == 1.25


def test_non_finite_windows_are_left_out():
    calibration = CurvatureCalibration(min_windows=1)
    calibration.update(float("nan"), 0.5, 1.0)
    calibration.update(0.1, float("inf"), 1.0)
    assert calibration.windows == 0 and calibration.scale == 1.0


def test_state_round_trips_through_json():
    calibration = CurvatureCalibration(min_windows=2, bounds=(0.7, 1.5))
    for error in (0.01, 0.03, -0.02):
        calibration.update(error, 0.2, 1.0)
    again = CurvatureCalibration.from_state(json.loads(json.dumps(calibration.state())))
    assert again == calibration and again.scale == calibration.scale


@pytest.mark.parametrize(
    "kwargs", [{"bounds": (1.1, 2.0)}, {"bounds": (0.0, 2.0)}, {"min_windows": 0}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"bounds|min_windows"):
        CurvatureCalibration(**kwargs)
