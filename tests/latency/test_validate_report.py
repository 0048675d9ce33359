"""The error arithmetic of benchmarks/latency/validate.py, on hand-made results."""

from __future__ import annotations

import math

import pytest
from _bench import load

validate = load("validate")


def _result(pid: str, half: str, pub: tuple[float, float], est: tuple[float, float],
            asbuilt: float | None = None) -> object:
    point = validate.Point(id=pid, source="s", where="w", model="resnet50", gpu="L4",
                           gpu_published="L4", batch=1, metric="latency_ms", int8=pub[0],
                           fp16=pub[1], half=half)
    return validate.Result(point, est_ms={"int8": est[0], "fp16": est[1]},
                           asbuilt_int8_ms=asbuilt)


def test_errors_of_one_point() -> None:
    r = _result("p", "A", (1.0, 2.0), (1.5, 2.0), asbuilt=3.0)
    assert r.latency_error("int8") == pytest.approx(0.5)
    assert r.latency_error("fp16") == pytest.approx(0.0)
    # published ratio 0.5, estimated 0.75 -> +50 %
    assert r.pub_ratio == pytest.approx(0.5) and r.est_ratio == pytest.approx(0.75)
    assert r.ratio_error == pytest.approx(0.5)
    # as built: 3.0 / 2.0 = 1.5 against 0.5 -> +200 %
    assert r.asbuilt_ratio_error == pytest.approx(2.0)
    assert r.asbuilt_latency_error == pytest.approx(2.0)


def test_summary_medians_and_worst() -> None:
    results = [
        _result("a", "A", (1.0, 1.0), (1.1, 0.8)),   # errors +10 %, -20 %; ratio 1.375 -> +37.5 %
        _result("b", "A", (2.0, 4.0), (2.0, 4.0)),   # 0 %, 0 %; ratio 0 %
        _result("c", "A", (1.0, 2.0), (3.0, 2.0)),   # +200 %, 0 %; ratio 1.5/0.5 -> +200 %
    ]
    s = validate.summary(results)
    assert s["points"] == 3
    # |latency errors|: 0.1, 0.2, 0, 0, 2.0, 0 -> median of six = (0 + 0.1) / 2
    assert s["median_abs_latency_error"] == pytest.approx(0.05)
    assert s["worst_abs_latency_error"] == (pytest.approx(2.0), "c int8")
    assert s["median_abs_ratio_error"] == pytest.approx(0.375)
    assert s["worst_abs_ratio_error"] == (pytest.approx(2.0), "c")
    # signed: 0.1, -0.2, 0, 0, 2.0, 0 -> median 0
    assert s["median_signed_latency_error"] == pytest.approx(0.0)


def test_failed_points_are_left_out() -> None:
    bad = validate.Result(_result("x", "A", (1.0, 1.0), (1.0, 1.0)).point, error="boom")
    assert not bad.ok
    assert validate.summary([bad]) == {"points": 0}
    assert validate.summary([bad, _result("y", "A", (1.0, 1.0), (2.0, 1.0))])["points"] == 1


def test_scale_fit_uses_half_a_only() -> None:
    results = [
        _result("a1", "A", (2.0, 2.0), (1.0, 1.0)),  # published / estimated = 2, 2
        _result("a2", "A", (8.0, 8.0), (1.0, 1.0)),  # 8, 8
        _result("b1", "B", (1.0, 1.0), (1.0, 1.0)),  # B must not move the fit
    ]
    fit = validate.scale_fit(results)
    # median of log ratios over {2, 2, 8, 8} = (log 2 + log 8) / 2 = log 4
    assert fit["multiplier"] == pytest.approx(4.0)
    # half A after x4: errors |4/2-1| = 1 and |4/8-1| = 0.5 -> median 0.75
    assert fit["A_before"] == pytest.approx((0.5 + 0.875) / 2)
    assert fit["A_after"] == pytest.approx(0.75)
    assert fit["B_before"] == pytest.approx(0.0) and fit["B_after"] == pytest.approx(3.0)
    assert math.isfinite(fit["multiplier"])
