"""The ``auto`` method (the default): its error model and its choice, against math done here.

The reference error is computed from the raw samples (not from the histogram) with Python's
own ``round`` (half to even) in plain loops, so it can disagree with quantkit's vectorised,
histogram-based estimate.
"""

from __future__ import annotations

import numpy as np
import pytest

from quantkit.calibrators import AutoCalibrator, create_calibrator, expected_error
from quantkit.calibrators.auto import auto_choice, candidate_amaxes


def sample_error(values: np.ndarray, amax: float, clip_weight: float = 4.0) -> float:
    """Mean of (q(x) - x)^2 over the samples, INT8 symmetric with scale amax / 127; the error
    of a value beyond amax counted ``clip_weight`` times (docs/calibration_methods.md)."""
    step = amax / 127
    x = np.abs(values.astype(np.float64))
    q = np.clip(np.round(x / step), -127, 127) * step  # numpy rounds half to even
    sq = (q - x) ** 2
    return float(np.mean(np.where(x > amax, clip_weight * sq, sq)))


def calibrate_auto(values: np.ndarray) -> tuple[float, str, AutoCalibrator]:
    cal = create_calibrator("auto")
    assert isinstance(cal, AutoCalibrator)
    for chunk in np.array_split(values.astype(np.float32), 4):
        cal.update("t", chunk)
    return cal.compute_amax()["t"], cal.choices["t"], cal


def test_expected_error_by_hand() -> None:
    # width 1, amax 127 -> step 1. Bin 3 (points 3.0625 .. 3.9375) and bin 200 (beyond amax)
    counts = np.zeros(256, np.int64)
    counts[3], counts[200] = 3, 1
    points = [(k + 0.5) / 8 for k in range(8)]
    err3 = sum((round(3 + p) - (3 + p)) ** 2 for p in points) / 8
    err200 = sum((127 - (200 + p)) ** 2 for p in points) / 8
    # the clipped bin counts 4 times (CLIP_WEIGHT), the rounded one once
    want = (3 * err3 + 4 * err200) / 4
    assert expected_error(counts, 1.0, 127.0) == pytest.approx(want, rel=1e-6)
    assert expected_error(counts, 1.0, 127.0, clip_weight=1.0) == pytest.approx(
        (3 * err3 + err200) / 4, rel=1e-6)
    # amax beyond every value: only rounding error (step 2 -> points rounded to even grid)
    step = 260 / 127
    err = [sum((round((b + p) / step) * step - (b + p)) ** 2 for p in points) / 8
           for b in (3, 200)]
    assert expected_error(counts, 1.0, 260.0) == pytest.approx((3 * err[0] + err[1]) / 4,
                                                               rel=1e-5)


def test_heavy_tail_picks_a_clipping_amax_with_the_least_sample_error() -> None:
    # Laplace(b=1): the plain-MSE-optimal 8-bit clipping threshold is about 9.89 b (Banner et
    # al., "Post-training 4-bit quantization of convolution networks", table 1): a e^a =
    # 12 * 127^2. With clipped errors counted 4 times it solves a e^a = 4 * 12 * 127^2, about
    # 11.15 b; both well below the max of 400k samples (about ln(400k) = 12.9)
    x = np.random.default_rng(3).laplace(0, 1, 400_000)
    amax, choice, cal = calibrate_auto(x)
    top = float(np.abs(x).max())
    assert amax < 0.92 * top and choice != "max"
    grid = np.linspace(8.0, 13.0, 51)
    best = float(grid[np.argmin([sample_error(x, a) for a in grid])])
    assert best == pytest.approx(11.15, abs=0.4)
    assert best > float(grid[np.argmin([sample_error(x, a, 1.0) for a in grid])])
    hist = cal.histogram("t")
    cands = candidate_amaxes(hist.counts, hist.width)
    errors = {k: sample_error(x, v) for k, v in cands.items()}
    # the pick is as good as the best candidate measured on the samples themselves (slack for
    # the histogram's resolution and the 1 % tie rule)
    assert errors[choice] <= min(errors.values()) * 1.02
    assert errors[choice] < errors["max"]


def test_uniform_picks_about_the_max() -> None:
    x = np.random.default_rng(4).uniform(-3, 3, 50_000)
    amax, _, _ = calibrate_auto(x)
    top = float(np.abs(x).max())
    assert top * 0.99 <= amax <= top * 1.001
    # and no clipping threshold does better on the samples
    assert sample_error(x, amax) <= sample_error(x, 0.9 * top)


def test_saturated_activation_keeps_its_ceiling() -> None:
    # ReLU6: 20 % of the values sit exactly at 6; clipping them costs far more than rounding
    rng = np.random.default_rng(5)
    x = np.clip(rng.normal(2, 3, 40_000), 0, 6)
    amax, _, _ = calibrate_auto(x)
    assert amax == pytest.approx(6.0, rel=2e-3)


def test_ties_go_to_the_larger_amax() -> None:
    # the rule on quantkit's own estimates (checked by hand above): among the candidates
    # within 1 % of the least error, the largest amax is returned
    counts = np.zeros(2048, np.int64)
    counts[2040:] = 1000
    counts[:10] = 1000
    name, amax = auto_choice(counts, 1.0)
    errors = {k: expected_error(counts, 1.0, v) for k, v in
              candidate_amaxes(counts, 1.0).items()}
    assert errors[name] <= min(errors.values()) * 1.01
    tied = [v for k, v in candidate_amaxes(counts, 1.0).items()
            if errors[k] <= min(errors.values()) * 1.01]
    assert amax == max(tied)


def test_all_zero_tensor_and_method_name() -> None:
    cal = create_calibrator("auto")
    cal.update("z", np.zeros(100, np.float32))
    assert cal.compute_amax() == {"z": 0.0}
    assert cal.method == "auto" and cal.cache_algorithm == "EntropyCalibration2"
