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


def test_smoothquant_keeps_the_function(demo_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from quantkit._ort import session

    out = tmp_path / "s.onnx"
    code = main(["transform", str(demo_dir / "demo_cnn.onnx"), "--smoothquant", "--alpha",
                 "0.8", "--data", str(demo_dir / "data" / "calibration.npy"),
                 "--max-samples", "64", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "smoothquant: 2 changed" in text  # the demo's two Gemms
    rep = applied_transforms(onnx.load(str(out)))[-1]
    assert rep["transform"] == "smoothquant" and rep["settings"]["alpha"] == 0.8
    x = np.load(demo_dir / "data" / "calibration.npy")[:32]
    a, b = (session(str(p), providers=["CPUExecutionProvider"]) for p in
            (demo_dir / "demo_cnn.onnx", out))
    feeds = {a.get_inputs()[0].name: x.astype(np.float32)}
    np.testing.assert_allclose(b.run(None, feeds)[0], a.run(None, feeds)[0], atol=1e-5)


@pytest.mark.parametrize("args", [[], ["--bias-correct"], ["--smoothquant"]])
def test_bad_usage_exits_2_without_output(demo_dir: Path, tmp_path: Path, args: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.onnx"
    assert main(["transform", str(demo_dir / "demo_cnn.onnx"), *args, "-o", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
