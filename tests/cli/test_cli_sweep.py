"""`quantkit sensitivity` and `quantkit autotune` through the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from quantkit.cli.main import main
from tests.builders.cnn import small_cnn


@pytest.fixture()
def d(tmp_path: Path) -> Path:
    small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((48, 3, 8, 8)).astype(np.float32))
    return tmp_path


def test_sensitivity(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sensitivity", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--method",
                 "minmax", "-o", str(d / "sens")])
    out, err = capsys.readouterr()
    assert code == 0, err
    with open(d / "sens" / "sensitivity.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows] == ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]
    assert sorted(int(r["rank"]) for r in rows) == [1, 2, 3]
    assert "6 evaluations" in out or "7 evaluations" in out


def test_autotune_writes_an_editable_precision_file(d: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["autotune", str(d / "m.onnx"), "--data", str(d / "x.npy"),
                 "--max-accuracy-drop", "5", "-o", str(d / "p.yaml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = yaml.safe_load((d / "p.yaml").read_text())
    assert doc["default"] == "int8" and isinstance(doc["overrides"], list)
    assert "evaluations" in out
    # the written file is a valid precision file for quantize
    assert main(["quantize", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--precision",
                 str(d / "p.yaml"), "-o", str(d / "q.onnx")]) == 0
    code = main(["autotune", str(d / "m.onnx"), "--data", str(d / "x.npy"),
                 "--max-accuracy-drop", "-1", "-o", str(d / "p2.yaml")])
    assert code == 2 and not (d / "p2.yaml").exists()
