"""`quantkit calibrate` without `--method` does what docs/calibration_methods.md says.

The rule (``auto``): per tensor, of the four candidates entropy / percentile 99.99 / mse /
max, the amax with the least expected INT8 quantize-dequantize error, a clipped value's
squared error counted 4 times; errors within 1 % count as equal and the largest amax among
them wins. Here the candidates come from the command line
itself (`--method entropy`, `percentile`, `mse`, `minmax`) and the errors are measured on the
raw calibration samples with numpy in this file, not on quantkit's histograms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _models import small_cnn

from quantkit.cli.main import main


def sample_error(values: np.ndarray, amax: float) -> float:
    """Mean of (q(x) - x)^2 over the samples, symmetric INT8 with scale amax / 127, the error
    of a value beyond amax counted 4 times (the docs' clipping weight)."""
    step = amax / 127
    x = np.abs(values.astype(np.float64))
    sq = (np.clip(np.round(x / step), -127, 127) * step - x) ** 2
    return float(np.mean(np.where(x > amax, 4 * sq, sq)))


def calibrate(d: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, float]:
    out = d / f"s{len(list(d.glob('s*.json')))}.json"
    code = main(["calibrate", str(d / "m.onnx"), "--data", str(d / "x.npy"), *extra,
                 "--scales", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out.read_text())
    return {name: float(v["amax"]) for name, v in doc["tensors"].items()} | {
        "__method__": doc["method"]}  # type: ignore[dict-item]


@pytest.mark.parametrize("kind", ["laplace", "saturated", "uniform"])
def test_default_picks_the_candidate_with_the_least_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(11)
    shape = (96, 3, 8, 8)
    x = {"laplace": lambda: rng.laplace(0, 1, shape),
         "saturated": lambda: np.clip(rng.normal(2, 3, shape), -6, 6),  # keep the ceiling
         "uniform": lambda: rng.uniform(-3, 3, shape)}[kind]().astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    default = calibrate(tmp_path, capsys)
    assert default["__method__"] == "auto"
    assert calibrate(tmp_path, capsys, "--method", "auto") == default
    cands = {m: calibrate(tmp_path, capsys, "--method", m)["x"]
             for m in ("entropy", "percentile", "mse", "minmax")}
    errors = {m: sample_error(x, a) for m, a in cands.items()}
    least = min(errors.values())
    got = default["x"]
    # the default took one of the candidates (max: the histogram's top edge, within one bin
    # of the exact maximum that minmax reports)
    match = [m for m, a in cands.items()
             if got == pytest.approx(a, rel=1 / 2048 if m == "minmax" else 1e-6)]
    assert match, (got, cands)
    # ... one whose error, measured on the samples, is the least (1 % tie margin, plus 1 %
    # for the histogram's resolution)
    assert sample_error(x, got) <= least * 1.02, (got, cands, errors)
    # and no candidate with a larger amax and the least error was passed over
    assert not [m for m, a in cands.items() if a > got * 1.001 and errors[m] <= least]
    # (laplace: 18k samples reach about ln(18k) = 9.8, below the weighted optimum of about
    # 11.2 (tests/calibrators/test_auto.py), so the tail is kept or clipped only slightly)
    if kind == "saturated":  # the values at 6 are not clipped
        assert got == pytest.approx(6.0, rel=2e-3)
    else:  # no tail to clip: within 1 % of the maximum
        assert got >= 0.99 * cands["minmax"]
