"""``quantkit transform``: exit codes, no partial output, the reports in the model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from quantkit.cli.main import main
from quantkit.demo import prepare_demo
from quantkit.transforms import applied_transforms


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    prepare_demo(out)
    return out


def test_equalize_and_bias_correct(demo_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.onnx"
    code = main(["transform", str(demo_dir / "demo_cnn.onnx"), "--equalize", "--bias-correct",
                 "--data", str(demo_dir / "data" / "calibration.npy"), "--method", "minmax",
                 "--max-samples", "64", "-o", str(out), "--json"])
    assert code == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["transform"] for r in reports] == ["equalize", "bias_correction"]
    assert applied_transforms(onnx.load(str(out))) == reports
    assert reports[1]["settings"]["num_samples"] == 64


@pytest.mark.parametrize("args", [[], ["--bias-correct"]])
def test_bad_usage_exits_2_without_output(demo_dir: Path, tmp_path: Path, args: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.onnx"
    assert main(["transform", str(demo_dir / "demo_cnn.onnx"), *args, "-o", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
