"""`quantkit demo` end to end, as the README runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from quantkit.calibrators import read_scales
from quantkit.cli.main import main
from quantkit.demo import METHODS


def test_demo_writes_every_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "wrote TensorRT caches" in stdout and "probs" in stdout
    x = np.load(out / "calib.npy")
    for method in METHODS:
        doc = json.loads((out / f"{method}.json").read_text())
        assert doc["num_samples"] == len(x) and doc["method"] == method
        assert read_scales(out / f"{method}.cache").scales == {
            k: v["scale"] for k, v in doc["tensors"].items()}
    minmax = json.loads((out / "minmax.json").read_text())["tensors"]
    assert minmax["input"]["amax"] == float(np.abs(x).max())
    rows = list(csv.reader((out / "amax_by_method.csv").open()))
    assert rows[0] == ["tensor", *METHODS] and len(rows) == 1 + len(minmax)
