"""`quantkit quantize` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit.cli.main import main
from tests.builders.cnn import small_cnn


@pytest.fixture()
def d(tmp_path: Path) -> Path:
    small_cnn(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy",
            np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    return tmp_path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_quantize_from_data_and_from_scales(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (d / "p.yaml").write_text("default_float: fp16\noverrides:\n  - op_type: Softmax\n"
                              "    precision: fp32\n")
    code, out, err = run(["quantize", d / "m.onnx", "--data", d / "x.npy", "--precision",
                          d / "p.yaml", "-o", d / "q.onnx"], capsys)
    assert code == 0, err
    assert "3 int8, 5 fp16, 1 fp32 nodes" in out and "/softmax/Softmax" in out
    onnx.checker.check_model(onnx.load(str(d / "q.onnx")))
    assert run(["calibrate", d / "m.onnx", "--data", d / "x.npy", "--cache", d / "s.cache"],
               capsys)[0] == 0
    code, out, err = run(["quantize", d / "m.onnx", "--scales", d / "s.cache", "--fp16",
                          "-o", d / "q2.onnx", "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["format"] == "quantkit-plan/1" and plan["default_float"] == "fp16"


BAD = [
    ("precision syntax", "overrides:\n  - name: [x\n", "p.yaml:3:1: YAML syntax error"),
    ("unknown precision", "default: int4\n", "Input should be 'int8', 'fp8', 'fp16' or 'fp32'"),
    ("rule matches nothing", "overrides:\n  - name: /conv3/Conv\n    precision: fp32\n",
     "closest node names: /conv2/Conv, /conv1/Conv"),
]


@pytest.mark.parametrize("label, text, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_precision_files(d: Path, capsys: pytest.CaptureFixture[str], label: str,
                             text: str, needle: str) -> None:
    (d / "p.yaml").write_text(text)
    code, _, err = run(["quantize", d / "m.onnx", "--data", d / "x.npy", "--precision",
                        d / "p.yaml", "-o", d / "q.onnx"], capsys)
    assert code == 2 and needle in " ".join(err.split()) and "Traceback" not in err
    assert not (d / "q.onnx").exists()


def test_other_bad_inputs(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (d / "partial.json").write_text(json.dumps({"format": "quantkit-scales/1", "tensors": {
        "x": {"amax": 3.0, "scale": 3.0 / 127}}}))
    cases = [
        (["--scales", d / "partial.json"], "no scale for tensor 'r1'"),
        ([], "exactly one of --data"),
        (["--data", d / "x.npy", "--scales", d / "partial.json"], "exactly one of --data"),
    ]
    for extra, needle in cases:
        code, _, err = run(["quantize", d / "m.onnx", *extra, "-o", d / "q.onnx"], capsys)
        assert code == 2 and needle in " ".join(err.split()), err
        assert not (d / "q.onnx").exists()
    code, _, err = run(["quantize", d / "m.onnx", "--data", d / "x.npy", "-o", d / "m.onnx"],
                       capsys)
    assert code == 2 and "same file as the input" in " ".join(err.split())
    assert sorted(p.name for p in d.iterdir()) == ["m.onnx", "partial.json", "x.npy"]


def test_quantize_refuses_integer_pixels_unless_allowed(d: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    np.save(d / "px.npy", np.full((4, 3, 8, 8), 17, np.uint8))
    code, _, err = run(["quantize", d / "m.onnx", "--data", d / "px.npy", "-o", d / "q.onnx"],
                       capsys)
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    text = " ".join(err.split())
    assert "holds uint8 values" in text and "unnormalised pixels" in text
    assert "--allow-cast" in text and "allow_cast=True" not in text
    assert not (d / "q.onnx").exists()
    code, _, err = run(["quantize", d / "m.onnx", "--data", d / "px.npy", "--allow-cast",
                        "--method", "MSE", "-o", d / "q.onnx"], capsys)
    assert code == 0, err
    assert (d / "q.onnx").exists()
