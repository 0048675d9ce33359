"""Every Q/DQ model quantkit writes must parse and build with TensorRT-RTX, as planned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit.capture import calibrate
from quantkit.model import save_model
from quantkit.qdq.lint import lint_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from tests.builders.cnn import matmul_model, small_cnn

rtx = pytest.importorskip("_rtx")  # skips where tensorrt-rtx is not installed

X = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
CNN_SHAPES = {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))}

CONFIGS = {
    "int8-fp32": {},
    "int8-fp16": {"default_float": "fp16"},
    "mixed": {"default_float": "fp16", "overrides": [
        {"name": "/conv2/Conv", "precision": "fp32"},
        {"regex": "^/fc/", "precision": "fp16"},
        {"op_type": "Softmax", "precision": "fp32"}]},
    "fp16-only": {"default": "fp16", "default_float": "fp16"},
    "int8-with-fp16-island": {"overrides": [{"name": "/conv1/Conv", "precision": "fp16"}]},
}


@pytest.mark.parametrize("label", list(CONFIGS))
def test_cnn_parses_builds_and_matches_plan(tmp_path: Path, label: str) -> None:
    path = small_cnn(tmp_path / "m.onnx")
    scales = calibrate(path, [{"x": X}], method="entropy").scales
    res = quantize_model(onnx.load(str(path)), scales,
                         PrecisionConfig.from_mapping(CONFIGS[label]))
    save_model(res.model, tmp_path / "q.onnx")
    findings = [(f.code, f.severity, f.message) for f in lint_model(res.model).findings
                if f.severity != "info"]
    assert findings == []  # quantkit's own output lints clean
    layers = rtx.parse_layers(tmp_path / "q.onnx")
    checked = 0
    for node in res.plan.nodes.values():
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            assert rtx.layer_precision(layers[node.name]) == node.precision, (node, layers)
            checked += 1
        elif node.op_type in ("Softmax", "Relu", "Add"):
            want = "fp32" if res.plan.float_type(node.name) == "fp32" else "fp16"
            assert rtx.layer_precision(layers[node.name]) == want, node
            checked += 1
    assert checked >= 7
    assert rtx.build(tmp_path / "q.onnx", CNN_SHAPES) > 0


def test_matmul_and_convtranspose_model_builds(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "mm.onnx", convtranspose=True)
    x = np.random.default_rng(1).standard_normal((4, 4, 6, 6)).astype(np.float32)
    scales = calibrate(path, [{"x": x}], method="minmax").scales
    for cfg in ({}, {"default_float": "fp16"}):
        res = quantize_model(onnx.load(str(path)), scales, PrecisionConfig.from_mapping(cfg))
        save_model(res.model, tmp_path / "q.onnx")
        layers = rtx.parse_layers(tmp_path / "q.onnx")
        assert rtx.layer_precision(layers["/fc/MatMul"]) == "int8"
        assert rtx.layer_precision(layers["/up/ConvT"]) == "int8"
        assert rtx.build(tmp_path / "q.onnx", {"x": ((1, 4, 6, 6), (2, 4, 6, 6),
                                                     (4, 4, 6, 6))}) > 0
