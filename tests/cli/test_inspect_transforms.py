"""`quantkit inspect` lists the transforms recorded in a model's `quantkit.transforms` metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit.cli.main import main
from quantkit.demo import asset


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo CNN equalized + bias-corrected + quantized, and plainly quantized."""
    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.writer import quantize_model
    from quantkit.transforms import bias_correct, equalize

    out = tmp_path_factory.mktemp("inspect")
    with np.load(asset("demo_data.npz")) as d:
        x = d["calibration"][:64].astype(np.float32)[:, None] / 255.0
    model = onnx.load(str(asset("demo_cnn.onnx")))
    scales = calibrate(asset("demo_cnn.onnx"), [{"input": x}], method="minmax").scales
    eq, _ = equalize(model)
    fixed, _ = bias_correct(eq, [{"input": x}], scales=scales, layers=["/conv1/Conv"])
    save_model(quantize_model(fixed, scales).model, out / "t.onnx")
    save_model(quantize_model(model, scales).model, out / "plain.onnx")
    return out / "t.onnx", out / "plain.onnx"


def test_inspect_lists_the_transforms(quantized: tuple[Path, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = quantized
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    section = out[out.index("transforms applied to the FP32 model"):]
    lines = [" ".join(x.split()) for x in section.splitlines()[1:]]
    text = " ".join(lines)
    assert text.startswith("equalize: 4 changed, 3 skipped (iterations=20, tolerance=0.0001")
    assert "bias_correction: 1 changed, 0 skipped (mode=independent, " \
           "activation_quantized=True" in text
    assert text.index("equalize:") < text.index("bias_correction:")

    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = [(t["transform"], t["changed"], t["skipped"]) for t in doc["transforms"]]
    assert got == [("equalize", 4, 3), ("bias_correction", 1, 0)]
    assert doc["transforms"][1]["changed_layers"] == ["/conv1/Conv"]
    assert doc["transforms"][1]["settings"]["scales_method"] == "minmax"
    assert doc["transforms"][0]["changed_layers"][:2] == ["/conv2/Conv", "/conv3/Conv"]


def test_inspect_without_or_with_broken_metadata(quantized: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, plain = quantized
    assert main(["inspect", str(plain)]) == 0
    assert "transforms applied" not in capsys.readouterr().out
    assert main(["inspect", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["transforms"] == []

    model = onnx.load(str(plain))
    model.metadata_props.append(onnx.StringStringEntryProto(key="quantkit.transforms",
                                                            value="{not json"))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    assert main(["inspect", str(tmp_path / "broken.onnx")]) == 0
    assert "unreadable quantkit.transforms metadata" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "broken.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["transforms"][0]["transform"] == "?"
