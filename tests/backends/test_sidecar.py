"""Sidecar helpers without TensorRT: the builder-log parser, plan reading, comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from quantkit.backends import read_sidecar, sidecar_path
from quantkit.backends.engine_log import parse_engine_log
from quantkit.backends.sidecar import (
    compare,
    precision_counts,
    read_plan,
    split_metadata,
)
from quantkit.errors import InputError
from tests.builders.qdq import int8_cnn

US = "\x1f"
# Two kernel lines as TensorRT-RTX 1.7.1 logs them (shortened: one dimension list kept).
CONV = ("Name: /conv1/Conv_myl0_2, LayerType: correlation, Inputs: [ { Name: a, Dimensions: "
        "[-1,4,8,8], Strides: [256,1,32,4], StrideOrder: [3,0,2,1], Datatype: Int8, Format: "
        "(NHWC) Channel major format }], Constants: [ { Name: w, Datatype: Int8, Format: (NHWC) "
        "Channel major format }, { Name: s, Datatype: Float, Format: (Linear) Row major linear "
        "format }], Outputs: [ { Name: o, Datatype: Float, Format: (NHWC) Channel major format }],"
        " TacticName: __myelin_CASK_STUB, StreamId: 0, Metadata: [ONNX Layer: /conv1/Conv]"
        f"{US}[ONNX Layer: x_DequantizeLinear]")
ISLAND = ("Name: __mye198_myl0_4, LayerType: correlation, Inputs: [ { Name: r, Datatype: Half, "
          "Format: (NHWC) Channel major format }], Constants: [ { Name: w, Datatype: Half, "
          "Format: (NHWC) Channel major format }], Outputs: [ { Name: y, Datatype: Half, Format: "
          "(NHWC) Channel major format }], TacticName: __myelin_CASK_STUB, StreamId: 0, "
          f"Metadata: [ONNX Layer: /fp32/Conv]{US}[ONNX Layer: /island_in/Cast]{US}"
          "[ONNX Layer: /softmax]")
SHAPE = ("Name: __mye502_0_myl0_0, LayerType: shape_call, Inputs: [], Constants: [], "
         "Outputs: [], TacticName: , StreamId: 0, Metadata: ")


def log(*lines: str) -> list[str]:
    return ["Engine generation completed in 0.04 seconds.",
            "\n".join(["Layers:", *lines, "", "I/O Tensors:", " Name: x, IOMode: Input"])]


def test_split_metadata() -> None:
    assert split_metadata(f"[ONNX Layer: a]{US}[ONNX Layer: b[0]]") == ["a", "b[0]"]
    assert split_metadata("[ONNX Layer: /x/Conv]") == ["/x/Conv"]
    assert split_metadata("") == []


def test_parse_engine_log() -> None:
    kernels = parse_engine_log(log(SHAPE, CONV, ISLAND))
    assert kernels is not None and len(kernels) == 3
    shape, conv, island = kernels
    assert shape["precision"] is None and shape["onnx_layers"] == []
    assert conv["precision"] == "int8" and conv["constants"] == ["int8", "fp32"]
    assert conv["outputs"] == ["fp32"] and conv["type"] == "correlation"
    assert conv["onnx_layers"] == ["/conv1/Conv", "x_DequantizeLinear"]
    assert island["precision"] == "fp16" and island["onnx_layers"][0] == "/fp32/Conv"


def test_engine_log_is_all_or_nothing() -> None:
    assert parse_engine_log(["no table here"]) is None
    assert parse_engine_log(log(CONV, "Name: broken line without the fields")) is None
    assert parse_engine_log(["Layers:", ""]) is None


def test_compare_flags_engine_and_plan_disagreements() -> None:
    layers = [
        {"name": "/conv1/Conv", "type": "CONVOLUTION", "precision": "int8",
         "output_dtypes": ["fp32"], "onnx_node": "/conv1/Conv"},
        {"name": "/fp32/Conv", "type": "CONVOLUTION", "precision": "fp32",
         "output_dtypes": ["fp32"], "onnx_node": "/fp32/Conv"},
        {"name": "/softmax", "type": "SOFTMAX", "precision": "fp32",
         "output_dtypes": ["fp32"], "onnx_node": "/softmax"},
    ]
    kernels = parse_engine_log(log(CONV, ISLAND))
    plan = {"/conv1/Conv": "int8", "/fp32/Conv": "fp16", "/ghost/Conv": "int8"}
    found, stats = compare(layers, kernels, plan)
    kinds = {(d["layer"], d["kind"]) for d in found}
    assert kinds == {("/fp32/Conv", "engine"), ("/softmax", "engine"), ("/fp32/Conv", "plan")}
    assert layers[0]["engine_precision"] == "int8" and layers[0]["plan_precision"] == "int8"
    assert layers[1]["engine_precision"] == "fp16" and layers[1]["plan_precision"] == "fp16"
    assert stats == {"matched": 2, "unmatched": ["/ghost/Conv"]}


def test_shape_arithmetic_is_no_plan_disagreement() -> None:
    # an FP32 plan covers every node, also Shape/Gather/Equal on dims, which the parser types
    # int64 / bool: those are not precision disagreements (ViT-B/16 had 440 such warnings)
    layers = [
        {"name": "/Shape", "type": "SHAPE", "precision": "int64", "output_dtypes": ["int64"],
         "onnx_node": "/Shape"},
        {"name": "/Gather", "type": "GATHER", "precision": "int64", "output_dtypes": ["int64"],
         "onnx_node": "/Gather"},
        {"name": "/Equal", "type": "ELEMENTWISE", "precision": "bool", "output_dtypes": ["bool"],
         "onnx_node": "/Equal"},
        {"name": "/Softmax", "type": "SOFTMAX", "precision": "fp16", "output_dtypes": ["fp16"],
         "onnx_node": "/Softmax"},
    ]
    plan = {"/Shape": "fp32", "/Gather": "fp32", "/Equal": "fp32", "/Softmax": "fp32"}
    found, stats = compare(layers, None, plan)
    assert [(d["layer"], d["network"]) for d in found] == [("/Softmax", "fp16")]
    assert stats["matched"] == 4


def test_read_plan(tmp_path: Path) -> None:
    plain, _ = int8_cnn(tmp_path / "a.onnx")
    assert read_plan(plain) == (None, {"present": False})
    with_plan, _ = int8_cnn(tmp_path / "b.onnx", plan={"/conv1/Conv": "int8"})
    plan, info = read_plan(with_plan)
    assert plan == {"/conv1/Conv": "int8"} and info["nodes"] == 1
    model = onnx.load(str(with_plan))
    model.metadata_props[0].value = json.dumps({"format": "other/2", "nodes": {}})
    onnx.save(model, str(tmp_path / "c.onnx"))
    assert read_plan(tmp_path / "c.onnx")[0] is None


def test_read_sidecar_and_counts(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    assert sidecar_path(engine) == tmp_path / "m.engine.json"
    with pytest.raises(InputError, match="no such sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "nope"}))
    with pytest.raises(InputError, match="quantkit-engine/1"):
        read_sidecar(engine)
    doc = {"format": "quantkit-engine/1", "layers": [
        {"name": "q", "type": "QUANTIZE", "precision": "int8", "onnx_node": "q"},
        {"name": "c", "type": "CONVOLUTION", "precision": "int8", "onnx_node": "c"},
        {"name": "helper", "type": "SHAPE", "precision": "int64"},
        {"name": "r", "type": "ACTIVATION", "precision": "fp16", "onnx_node": "r"}]}
    sidecar_path(engine).write_text(json.dumps(doc))
    assert read_sidecar(engine) == doc
    assert precision_counts(doc) == {"fp16": 1, "int8": 1}


def _kernel(name: str, dtype: str, nodes: list[str]) -> str:
    return (f"Name: {name}, LayerType: gemm, Inputs: [ {{ Name: a, Datatype: {dtype}, Format: "
            "(Linear) Row major linear format }], Constants: [], Outputs: [ { Name: o, "
            f"Datatype: {dtype}, Format: (Linear) Row major linear format }}], TacticName: t, "
            "StreamId: 0, Metadata: " + US.join(f"[ONNX Layer: {n}]" for n in nodes))


def test_compare_accepts_fused_qkv_gemm_and_cast_fused_layernorm() -> None:
    """A fused Q/K/V INT8 gemm names value first; the fp16 bias kernel names query first. And a
    LayerNorm kernel with fused casts has half inputs/outputs but computes in FP32."""
    layers = [
        {"name": n, "type": "MATRIX_MULTIPLY", "precision": "int8", "output_dtypes": ["fp16"],
         "onnx_node": n} for n in ("/q/MatMul", "/k/MatMul", "/v/MatMul")
    ] + [{"name": "/ln", "type": "NORMALIZATION", "precision": "fp32",
          "output_dtypes": ["fp32"], "onnx_node": "/ln"},
         {"name": "/solo/MatMul", "type": "MATRIX_MULTIPLY", "precision": "int8",
          "output_dtypes": ["fp16"], "onnx_node": "/solo/MatMul"}]
    kernels = parse_engine_log(log(
        _kernel("qkv_gemm", "Int8", ["/v/MatMul", "/q/MatMul", "/k/MatMul"]),
        _kernel("bias_q", "Half", ["/q/MatMul", "/q/Add"]),
        _kernel("bias_k", "Half", ["/k/MatMul", "/k/Add"]),
        _kernel("__myl_CastMeanSubMulMeanAddSqrtDivMulMulAddCast", "Half", ["/ln"]),
        _kernel("solo_fp16", "Half", ["/solo/MatMul"]),
    ))
    found, _ = compare(layers, kernels, None)
    assert [(d["layer"], d["engine"]) for d in found] == [("/solo/MatMul", "fp16")]
    assert all(layer.get("engine_precision") == "int8" for layer in layers[:3])


def test_read_plan_reports_the_transforms_applied(tmp_path: Path) -> None:
    """A model from `quantkit transform` / `autotune --rescue` says so in the engine sidecar."""
    from quantkit.backends.sidecar import TRANSFORMS_KEY
    from quantkit.transforms._common import TRANSFORMS_METADATA_KEY

    assert TRANSFORMS_KEY == TRANSFORMS_METADATA_KEY
    path, _ = int8_cnn(tmp_path / "a.onnx", plan={"/conv1/Conv": "int8"})
    model = onnx.load(str(path))
    reports = [{"transform": "bias_correction", "settings": {"method": "minmax"},
                "changed": [{"layer": "/conv1/Conv"}, {"layer": "/conv2/Conv"}],
                "skipped": [{"layer": "/fc/Gemm", "reason": "no bias"}]}]
    model.metadata_props.append(onnx.StringStringEntryProto(key=TRANSFORMS_KEY,
                                                            value=json.dumps(reports)))
    onnx.save(model, str(tmp_path / "b.onnx"))
    plan, info = read_plan(tmp_path / "b.onnx")
    assert plan == {"/conv1/Conv": "int8"}
    assert info["transforms"] == [{"transform": "bias_correction",
                                   "settings": {"method": "minmax"}, "changed": 2,
                                   "skipped": 1}]
    assert "transforms" not in read_plan(path)[1]
