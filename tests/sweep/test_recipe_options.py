"""A recipe's data sets take every DataOptions field (here allow_cast), for calibration and
evaluation alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _models import small_cnn

from quantkit.errors import InputError
from quantkit.sweep import run_sweep

RECIPE = """
model: m.onnx
data:
  calibration: {{source: x.npy, batch_size: 8{cast}}}
configs:
  - {{name: fp32, precision: fp32}}
  - {{name: int8, precision: int8, method: minmax}}
latency: {{iterations: 0}}
"""


def test_allow_cast_in_a_recipe(tmp_path: Path) -> None:
    small_cnn(tmp_path / "m.onnx")
    pixels = np.random.default_rng(0).integers(0, 4, (16, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    (tmp_path / "refused.yaml").write_text(RECIPE.format(cast=""))
    with pytest.raises(InputError, match="allow_cast=True"):
        run_sweep(tmp_path / "refused.yaml", tmp_path / "out0")
    (tmp_path / "r.yaml").write_text(RECIPE.format(cast=", allow_cast: true"))
    res = run_sweep(tmp_path / "r.yaml", tmp_path / "out")
    assert res.failed == []
    int8 = next(r for r in res.rows if r["config"] == "int8")
    assert int8["int8_layers"] > 0
    scales = json.loads((tmp_path / "out" / "calibration" / "minmax.json").read_text())
    assert scales["tensors"]["x"]["amax"] == pytest.approx(float(pixels.max()))  # cast as is
