"""Real TensorRT-RTX builds on the CPU (no GPU needed, no mocks): precision, profiles, errors.

TensorRT-RTX builds ahead of time without a GPU when no compute capability (or an explicit one)
is set (docs/tensorrt_rules.md#building-on-a-cpu-only-machine). Each build takes well under
a second on these tiny models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from quantkit.backends import BuildOptions, get_backend
from quantkit.errors import InputError, PipelineError
from tests.builders.qdq import fp16_cnn, int8_cnn, matmul_model, mixed_cnn, unsupported_model

RTX = get_backend("tensorrt-rtx")
pytestmark = pytest.mark.skipif(not RTX.available(),
                                reason="needs TensorRT-RTX: pip install 'quantkit[rtx]'")


def by_name(doc: dict) -> dict[str, dict]:
    return {layer["name"]: layer for layer in doc["layers"]}


def assert_precisions(doc: dict, expected: dict[str, str]) -> None:
    layers = by_name(doc)
    assert {n: layers[n]["precision"] for n in expected} == expected


def test_int8_model_dynamic_batch(tmp_path: Path) -> None:
    model, expected = int8_cnn(tmp_path / "m.onnx")
    result = RTX.build(model, tmp_path / "m.engine",
                       BuildOptions(shapes={"x": (2, 3, 8, 8)}, min_shapes={"x": (1, 3, 8, 8)},
                                    max_shapes={"x": (8, 3, 8, 8)}))
    doc = json.loads((tmp_path / "m.engine.json").read_text())
    assert doc == json.loads(json.dumps(result.sidecar))
    assert doc["format"] == "quantkit-engine/1" and doc["backend"] == "tensorrt-rtx"
    assert doc["backend_version"] == RTX.version()
    assert doc["engine_bytes"] == (tmp_path / "m.engine").stat().st_size > 0
    assert doc["build_time_s"] > 0 and doc["model"] == str(model)
    assert doc["shapes"] == {"x": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8],
                                   "max": [8, 3, 8, 8]}}
    assert doc["inputs"] == [{"name": "x", "dtype": "fp32", "shape": [-1, 3, 8, 8]}]
    assert_precisions(doc, expected)
    layers = by_name(doc)
    # Q/DQ layers keep their type and are reported as int8; Gemm's bias Add stays fp32.
    assert layers["x_QuantizeLinear"]["type"] == "QUANTIZE"
    assert layers["conv1_w_DequantizeLinear"] == {
        "name": "conv1_w_DequantizeLinear", "type": "DEQUANTIZE", "precision": "int8",
        "output_dtypes": ["fp32"], "onnx_node": "conv1_w_DequantizeLinear"}
    assert layers["/conv1/Conv"]["output_dtypes"] == ["fp32"]  # INT8 math, FLOAT output
    assert layers["/fc/Gemm"]["type"] == "MATRIX_MULTIPLY"
    assert all(x["type"] != "CONSTANT" for x in doc["layers"]) and doc["constant_layers"] > 0
    # The engine view from the builder's log agrees: INT8 kernels for the three compute ops.
    assert doc["engine_log"]["parsed"] and doc["engine_layers"]
    for name in ("/conv1/Conv", "/conv2/Conv", "/fc/Gemm"):
        assert layers[name]["engine_precision"] == "int8"
    assert doc["disagreements"] == []
    assert doc["builder"]["opt_level"] == 3 and doc["builder"]["strongly_typed"]
    assert doc["builder"]["compute_capabilities"] == "default"


def test_fp16_model(tmp_path: Path) -> None:
    model, expected = fp16_cnn(tmp_path / "m.onnx")
    doc = RTX.build(model, tmp_path / "m.engine").sidecar
    assert_precisions(doc, expected)
    layers = by_name(doc)
    assert layers["/cast_in/Cast"]["output_dtypes"] == ["fp16"]
    assert layers["/cast_out/Cast"]["precision"] == "fp32"
    assert layers["/conv1/Conv"]["engine_precision"] == "fp16"
    assert doc["shapes"] == {"x": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8],
                                   "max": [1, 3, 8, 8]}}


def test_mixed_model_and_the_fp32_island(tmp_path: Path) -> None:
    model, expected = mixed_cnn(tmp_path / "m.onnx")
    doc = RTX.build(model, tmp_path / "m.engine").sidecar
    assert_precisions(doc, expected)
    layers = by_name(doc)
    assert layers["/int8/Conv"]["output_dtypes"] == ["fp16"]  # INT8 conv inside an FP16 graph
    assert layers["/int8/Conv"]["engine_precision"] == "int8"
    assert layers["/fp16/Conv"]["engine_precision"] == "fp16"
    # TensorRT-RTX 1.7 compiles the FP32 island (Cast -> Conv -> Cast) as a Half kernel
    # (docs/tensorrt_rules.md#precision-as-the-builder-sees-it); whatever a version does, the
    # sidecar must say so consistently.
    island = layers["/fp32/Conv"]
    engine_says = [d for d in doc["disagreements"] if d["layer"] == "/fp32/Conv"]
    if island["engine_precision"] == "fp32":
        assert engine_says == []
    else:
        assert engine_says == [{
            "layer": "/fp32/Conv", "kind": "engine", "network": "fp32",
            "engine": island["engine_precision"], "kernel": island["engine_kernel"],
            "message": engine_says[0]["message"]}]


def test_plan_in_model_metadata_is_compared(tmp_path: Path) -> None:
    plan = {"/int8/Conv": "int8", "/fp16/Conv": "int8", "/fp32/Conv": "fp32",
            "/relu1/Relu": "fp16", "/removed/Conv": "int8"}
    model, _ = mixed_cnn(tmp_path / "m.onnx", plan=plan)
    doc = RTX.build(model, tmp_path / "m.engine").sidecar
    layers = by_name(doc)
    assert {n: layers[n]["plan_precision"] for n in plan if n in layers} == {
        "/int8/Conv": "int8", "/fp16/Conv": "int8", "/fp32/Conv": "fp32", "/relu1/Relu": "fp16"}
    assert "plan_precision" not in layers["/relu2/Relu"]
    plan_issues = [d for d in doc["disagreements"] if d["kind"] == "plan"]
    assert plan_issues == [{
        "layer": "/fp16/Conv", "kind": "plan", "plan": "int8", "network": "fp16",
        "message": "/fp16/Conv: the precision plan says int8, the parsed network has fp16"}]
    assert doc["plan"] == {"present": True, "format": "quantkit-plan/1", "nodes": 5,
                           "matched": 4, "unmatched": ["/removed/Conv"]}


def test_two_dynamic_dims_and_builder_options(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    model, expected = matmul_model(tmp_path / "m.onnx")
    options = BuildOptions(shapes={"x": (2, 5, 16)}, min_shapes={"x": (1, 1, 16)},
                           max_shapes={"x": (8, 64, 16)}, workspace_mib=256, opt_level=1,
                           compute_capabilities=("SM89", "sm_120"),
                           timing_cache=tmp_path / "t.cache")
    with caplog.at_level(logging.WARNING):
        doc = RTX.build(model, tmp_path / "m.engine", options).sidecar
    assert_precisions(doc, expected)  # MatMul INT8 through the weight's Transpose
    assert doc["shapes"]["x"] == {"min": [1, 1, 16], "opt": [2, 5, 16], "max": [8, 64, 16]}
    builder = doc["builder"]
    assert builder["workspace_mib"] == 256 and builder["opt_level"] == 1
    assert builder["compute_capabilities"] == ["SM89", "SM120"]
    # TensorRT-RTX has no timing cache: said clearly, and the file is not written.
    assert builder["timing_cache"]["status"] == "unsupported by TensorRT-RTX"
    assert "does not use timing caches" in caplog.text
    assert not (tmp_path / "t.cache").exists()


@pytest.mark.parametrize(("options", "match"), [
    (BuildOptions(shapes={"y": (1, 3, 8, 8)}), "no input named 'y'"),
    (BuildOptions(shapes={"x": (4, 3, 8, 8)}, max_shapes={"x": (2, 3, 8, 8)}), "min .* max"),
    (BuildOptions(), "input 'x' has dynamic dimensions .*--shapes x:1x3x8x8"),
    (BuildOptions(shapes={"x": (1, 3, 9, 8)}), "dimension 2 of input 'x' is fixed to 8"),
    (BuildOptions(shapes={"x": (1, 3, 8, 8)}, compute_capabilities=("SM90",)),
     "--compute-capability SM90: .*SM89"),
])
def test_bad_shapes_and_options_leave_nothing(tmp_path: Path, options: BuildOptions,
                                              match: str) -> None:
    model, _ = int8_cnn(tmp_path / "m.onnx")
    with pytest.raises(InputError, match=match):
        RTX.build(model, tmp_path / "m.engine", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_parser_errors_name_the_node(tmp_path: Path) -> None:
    model = unsupported_model(tmp_path / "bad.onnx")
    with pytest.raises(InputError) as info:
        RTX.build(model, tmp_path / "bad.engine")
    text = str(info.value)
    assert "ONNX parser rejected the model" in text
    assert "node '/conv/bias_DequantizeLinear' (DequantizeLinear)" in text
    assert "Int32" in text and "cudaError" not in text  # driver-less noise is dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_build_failure_is_a_pipeline_error(tmp_path: Path) -> None:
    # CURRENT asks the driver which GPU is present: on a machine without one the build fails.
    model, _ = fp16_cnn(tmp_path / "m.onnx")
    try:
        result = RTX.build(model, tmp_path / "m.engine",
                           BuildOptions(compute_capabilities=("CURRENT",)))
    except PipelineError as err:
        assert "could not build an engine" in str(err) and "CURRENT needs a GPU" in str(err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    else:  # a machine with a supported GPU and driver
        assert result.engine_path.exists()


def test_refuses_to_overwrite_the_model(tmp_path: Path) -> None:
    model, _ = fp16_cnn(tmp_path / "m.onnx")
    before = model.read_bytes()
    with pytest.raises(InputError, match="same file as the input"):
        RTX.build(model, model)
    with pytest.raises(InputError, match="no such file"):
        RTX.build(tmp_path / "missing.onnx", tmp_path / "m.engine")
    assert model.read_bytes() == before


def test_repeated_builds_each_capture_their_own_log(tmp_path: Path) -> None:
    # TensorRT keeps the first logger a process registers; every build must still see its own
    # builder log (engine view) and nothing of the previous build.
    model, _ = fp16_cnn(tmp_path / "m.onnx")
    first = RTX.build(model, tmp_path / "a.engine").sidecar
    second = RTX.build(model, tmp_path / "b.engine").sidecar
    assert first["engine_layers"] == second["engine_layers"] != []
