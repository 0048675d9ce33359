"""lint_model against TensorRT's Q/DQ rules (docs/tensorrt_rules.md#qdq-placement), no mocks.

Models are built here with onnx.helper: an FP32 Conv-Relu-Conv + residual Add + Gemm network
quantized by ONNX Runtime's quantize_static, and a hand-written TensorRT-style Q/DQ model
(ModelOpt's form) with one variant per finding code. Where TensorRT-RTX is installed, the
verdicts are checked against its real parser and builder.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from quantkit.qdq.lint import CODES, LintReport, lint_model
from tests.builders.fp8 import FP8_CASES, FP8_REJECTED

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
ORT_TRT_OPTIONS = {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QInt8,
                   "weight_type": QuantType.QInt8, "per_channel": True,
                   "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                     "QuantizeBias": False}}


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
            "w2": rng.standard_normal((8, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(8) * 0.1,
            "wf": rng.standard_normal((10, 8)) * 0.5, "bf": rng.standard_normal(10) * 0.1}


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], opset: int = 17,
           in_type: int = F32) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", in_type,
                                                                           [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("probs", in_type, [1, 10])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def fp32_cnn(*, weights_as_constant: bool = False) -> onnx.ModelProto:
    """x -> Conv -> Relu -> Conv -> Add(residual) -> Relu -> GAP -> Flatten -> Gemm -> Softmax.

    With ``weights_as_constant`` every weight is a Constant node (as paddle2onnx exports).
    """
    w = _weights()
    nodes, inits = [], []
    for name in ("w1", "w2", "wf"):
        t = numpy_helper.from_array(w[name].astype(np.float32), name)
        if weights_as_constant:
            nodes.append(helper.make_node("Constant", [], [name], name=f"{name}_const", value=t))
        else:
            inits.append(t)
    inits += [numpy_helper.from_array(w[b].astype(np.float32), b) for b in ("b1", "b2", "bf")]
    nodes += [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/conv1/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="/conv2/Conv", pads=[1] * 4),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="/add/Add"),
        helper.make_node("Relu", ["s"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="/gap/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="/fc/Gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax/Softmax", axis=1),
    ]
    model = _model(nodes, inits)
    onnx.checker.check_model(model)
    return model


class Reader(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.batches = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def ort_quantize(model: onnx.ModelProto, tmp_path: Path, **options: object) -> onnx.ModelProto:
    src, dst = tmp_path / "fp32.onnx", tmp_path / "ort.onnx"
    onnx.save(model, str(src))
    quantize_static(str(src), str(dst), Reader(), **options)  # type: ignore[arg-type]
    return onnx.load(str(dst))


class TrtStyle:
    """ModelOpt-style Q/DQ: int8 symmetric, zero point 0, per-tensor activations, INT8 weight
    initializers + DequantizeLinear with per-channel scales on axis 0, float biases."""

    def __init__(self, ftype: int = F32) -> None:
        self.ftype, self.nodes, self.inits = ftype, [], []
        self.np = np.float16 if ftype == F16 else np.float32

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def act(self, t: str, amax: float) -> str:
        s, z = self.init(f"{t}_s", np.array(amax / 127, self.np)), self.init(
            f"{t}_zp", np.array(0, np.int8))
        self.nodes += [helper.make_node("QuantizeLinear", [t, s, z], [f"{t}_q"], name=f"{t}_Q"),
                       helper.make_node("DequantizeLinear", [f"{t}_q", s, z], [f"{t}_dq"],
                                        name=f"{t}_DQ")]
        return f"{t}_dq"

    def weight(self, name: str, w: np.ndarray, *, float_weight: bool = False) -> str:
        amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        scale = (amax / 127).astype(self.np)
        q = np.clip(np.round(w / scale.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))),
                    -127, 127)
        s, z = self.init(f"{name}_s", scale), self.init(f"{name}_zp", np.zeros(len(scale), np.int8))
        if float_weight:  # pytorch-quantization's export: float weight -> Q -> DQ
            self.init(f"{name}_f", w.astype(self.np))
            self.nodes.append(helper.make_node("QuantizeLinear", [f"{name}_f", s, z],
                                               [f"{name}_q"], name=f"{name}_Q", axis=0))
        else:
            self.init(f"{name}_q", q.astype(np.int8))
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", s, z],
                                           [f"{name}_dq"], name=f"{name}_DQ", axis=0))
        return f"{name}_dq"


def trt_cnn(*, ftype: int = F32, opset: int = 17, float_weights: bool = False) -> onnx.ModelProto:
    """The same network, quantized as TensorRT expects (FP16 graph: Cast in/out, FP16 scales)."""
    b, w = TrtStyle(ftype), _weights()
    wq = {n: b.weight(n, w[n], float_weight=float_weights) for n in ("w1", "w2", "wf")}
    for n in ("b1", "b2", "bf"):
        b.init(n, w[n].astype(b.np))
    x = "x"
    if ftype == F16:
        b.nodes.append(helper.make_node("Cast", ["x"], ["x16"], name="/cast_in", to=F16))
        x = "x16"
    b.nodes.append(helper.make_node("Conv", [b.act(x, 4.0), wq["w1"], "b1"], ["c1"],
                                    name="/conv1/Conv", pads=[1] * 4))
    b.nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"))
    r1 = b.act("r1", 3.0)  # shared by conv2 and the residual branch that is not fused
    b.nodes += [helper.make_node("Conv", [r1, wq["w2"], "b2"], ["c2"], name="/conv2/Conv",
                                 pads=[1] * 4),
                helper.make_node("Add", ["c2", r1], ["s"], name="/add/Add"),
                helper.make_node("Relu", ["s"], ["r2"], name="/relu2/Relu"),
                helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="/gap/Pool"),
                helper.make_node("Flatten", ["gap"], ["flat"], name="/flatten/Flatten")]
    b.nodes.append(helper.make_node("Gemm", [b.act("flat", 2.0), wq["wf"], "bf"], ["logits"],
                                    name="/fc/Gemm", transB=1))
    out = "probs16" if ftype == F16 else "probs"
    b.nodes.append(helper.make_node("Softmax", ["logits"], [out], name="/softmax/Softmax"))
    if ftype == F16:
        b.nodes.append(helper.make_node("Cast", [out], ["probs"], name="/cast_out", to=F32))
    model = _model(b.nodes, b.inits, opset)
    if opset >= 13:
        onnx.checker.check_model(model, full_check=True)
    return model


# --- small graph edits --------------------------------------------------------------------
def node(m: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.name == name)


def set_init(m: onnx.ModelProto, name: str, arr: np.ndarray) -> None:
    next(i for i in m.graph.initializer if i.name == name).CopyFrom(
        numpy_helper.from_array(arr, name))


def insert_after(m: onnx.ModelProto, after: str, new: list[onnx.NodeProto]) -> None:
    nodes = list(m.graph.node)
    i = [n.name for n in nodes].index(after) + 1
    del m.graph.node[:]
    m.graph.node.extend(nodes[:i] + new + nodes[i:])


def rewire(m: onnx.ModelProto, name: str, old: str, new: str) -> None:
    n = node(m, name)
    n.input[list(n.input).index(old)] = new


def qdq_pair(m: onnx.ModelProto, t: str, scale: float = 0.02) -> list[onnx.NodeProto]:
    m.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{t}_s"),
                                numpy_helper.from_array(np.array(0, np.int8), f"{t}_zp")])
    return [helper.make_node("QuantizeLinear", [t, f"{t}_s", f"{t}_zp"], [f"{t}_q"],
                             name=f"{t}_Q"),
            helper.make_node("DequantizeLinear", [f"{t}_q", f"{t}_s", f"{t}_zp"], [f"{t}_dq"],
                             name=f"{t}_DQ")]


def codes(report: LintReport, severity: str | None = None) -> set[str]:
    return {f.code for f in report.findings if severity is None or f.severity == severity}


def precision(report: LintReport) -> dict[str, str]:
    return {n.name: n.precision for n in report.nodes if n.op_type in ("Conv", "Gemm")}


# --- (a), (b): ONNX Runtime's quantize_static ------------------------------------------------
@pytest.mark.parametrize("as_constant", [False, True], ids=["initializers", "constant-nodes"])
def test_ort_default_settings_are_flagged(tmp_path: Path, as_constant: bool) -> None:
    report = lint_model(ort_quantize(fp32_cnn(weights_as_constant=as_constant), tmp_path))
    errors = [f for f in report.findings if f.severity == "error"]
    bias = [f for f in errors if f.code == "QK101"]
    assert {f.node for f in bias} == {"b1_DequantizeLinear", "b2_DequantizeLinear",
                                      "bf_DequantizeLinear"}
    assert all("onnxruntime#14229" in f.message and "QuantizeBias" in f.message for f in bias)
    zero_points = [f for f in errors if f.code == "QK102"]
    assert zero_points and {f.tensor for f in zero_points} >= {"x_QuantizeLinear_Output"}
    assert "Non-zero zero point" in zero_points[0].message
    assert "QK105" in codes(report, "warning")  # ORT's default is per-tensor weights
    assert report.has_errors and report.summary()["errors"] == len(errors)
    if as_constant:  # Constant weights are quantized like activations: asymmetric, by a Q
        weight_zp = [f for f in zero_points if "weight" in f.message]
        assert weight_zp and "Constant node" in weight_zp[0].message


def test_ort_uint8_activations_are_flagged(tmp_path: Path) -> None:
    report = lint_model(ort_quantize(fp32_cnn(), tmp_path, activation_type=QuantType.QUInt8))
    assert {"QK101", "QK102"} <= codes(report, "error") and "QK104" in codes(report, "warning")
    uint8 = [f for f in report.findings if f.code == "QK104"]
    assert any(f.tensor == "x_QuantizeLinear_Output" for f in uint8)


@pytest.mark.parametrize("as_constant", [False, True], ids=["initializers", "constant-nodes"])
def test_ort_tensorrt_settings_remove_the_errors(tmp_path: Path, as_constant: bool) -> None:
    report = lint_model(ort_quantize(fp32_cnn(weights_as_constant=as_constant), tmp_path,
                                     **ORT_TRT_OPTIONS))
    assert not report.has_errors, report.findings
    assert not codes(report) & {"QK101", "QK102", "QK103", "QK104"}
    assert set(precision(report).values()) == {"int8"}
    # what remains are placement warnings: Q/DQ between Conv and Relu, both Add branches
    # quantized, Q/DQ in front of Softmax and on the graph output
    assert {"QK112", "QK113", "QK115"} <= codes(report, "warning")
    per_tensor = {f.tensor for f in report.findings if f.code == "QK105"}
    # Constant weights: ORT quantizes them per tensor, at run time
    # (docs/tensorrt_rules.md#weights-stored-as-constant-nodes)
    assert per_tensor == ({f"{w}_QuantizeLinear_Output" for w in ("w1", "w2", "wf")}
                          if as_constant else set())


# --- (c): the TensorRT-style model is clean ------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"float_weights": True}, {"ftype": F16, "opset": 19}],
                         ids=["int8-weights", "float-weights-q-dq", "fp16-graph"])
def test_tensorrt_style_model_is_clean(kwargs: dict) -> None:
    report = lint_model(trt_cnn(**kwargs))
    assert report.findings == []
    assert precision(report) == {"/conv1/Conv": "int8", "/conv2/Conv": "int8",
                                 "/fc/Gemm": "int8"}
    conv = next(n for n in report.nodes if n.name == "/conv1/Conv")
    assert conv.weights == "per-channel" and conv.weight_axis == 0
    assert [(s.kind, s.qtype, s.channels) for s in conv.scales] == [
        ("activation", "int8", 1), ("weight", "int8", 8)]
    assert conv.scales[0].scale_min == pytest.approx(4.0 / 127, rel=1e-3)
    floats = {n.precision for n in report.nodes if n.op_type in ("Relu", "Softmax")}
    assert floats == {"fp16" if kwargs.get("ftype") == F16 else "fp32"}
    assert report.summary() == {"errors": 0, "warnings": 0, "info": 0,
                                "opset": kwargs.get("opset", 17), "nodes": len(report.nodes),
                                "qdq_nodes": report.summary()["qdq_nodes"], "compute_ops": 3,
                                "compute_precision": {"int8": 3}}
    json.dumps(report.to_dict())  # JSON-ready


def test_unquantized_model_has_no_findings() -> None:
    report = lint_model(fp32_cnn(weights_as_constant=True))
    assert report.findings == [] and set(precision(report).values()) == {"fp32"}


# --- one model per finding code -------------------------------------------------------------
def _opset12() -> onnx.ModelProto:
    return trt_cnn(opset=12)


def _per_tensor() -> onnx.ModelProto:
    m = trt_cnn()
    del node(m, "w1_DQ").attribute[:]
    set_init(m, "w1_s", np.array(0.01, np.float32))
    set_init(m, "w1_zp", np.array(0, np.int8))
    return m


def _wrong_axis() -> onnx.ModelProto:
    m = trt_cnn()
    node(m, "w2_DQ").attribute[0].i = 1  # 8 in = 8 out channels: shapes still fit
    return m


def _int8_constant_used_by_cast() -> onnx.ModelProto:
    m = trt_cnn()
    m.graph.node.extend([helper.make_node("Cast", ["w2_q"], ["w2_f"], name="w2_cast", to=F32)])
    m.graph.output.append(helper.make_tensor_value_info("w2_f", F32, [8, 8, 3, 3]))
    return m


def _per_channel_activation() -> onnx.ModelProto:
    m = trt_cnn()
    set_init(m, "x_s", np.full(3, 0.03, np.float32))
    set_init(m, "x_zp", np.zeros(3, np.int8))
    for n in ("x_Q", "x_DQ"):
        node(m, n).attribute.append(helper.make_attribute("axis", 1))
    return m


def _conv_qdq_relu() -> onnx.ModelProto:
    m = trt_cnn()
    insert_after(m, "/conv1/Conv", qdq_pair(m, "c1"))
    rewire(m, "/relu1/Relu", "c1", "c1_dq")
    return m


def _residual_both() -> onnx.ModelProto:
    m = trt_cnn()
    insert_after(m, "/conv2/Conv", qdq_pair(m, "c2"))
    rewire(m, "/add/Add", "c2", "c2_dq")
    return m


def _residual_neither() -> onnx.ModelProto:
    m = trt_cnn()
    rewire(m, "/add/Add", "r1_dq", "r1")
    return m


def _dq_into_softmax() -> onnx.ModelProto:
    m = trt_cnn()
    insert_after(m, "/fc/Gemm", qdq_pair(m, "logits"))
    rewire(m, "/softmax/Softmax", "logits", "logits_dq")
    return m


def _q_without_dq() -> onnx.ModelProto:
    m = trt_cnn()
    m.graph.node.append(helper.make_node("QuantizeLinear", ["c2", "r1_s", "r1_zp"], ["c2_q"],
                                         name="c2_Q"))
    m.graph.output.append(helper.make_tensor_value_info("c2_q", TensorProto.INT8, [1, 8, 8, 8]))
    return m


def _weight_not_quantized() -> onnx.ModelProto:
    m = trt_cnn()
    m.graph.initializer.append(numpy_helper.from_array(_weights()["w1"].astype(np.float32), "w1"))
    rewire(m, "/conv1/Conv", "w1_dq", "w1")
    return m


def _float_gemm() -> onnx.ModelProto:
    m = trt_cnn()
    m.graph.initializer.append(numpy_helper.from_array(_weights()["wf"].astype(np.float32), "wf"))
    rewire(m, "/fc/Gemm", "wf_dq", "wf")
    rewire(m, "/fc/Gemm", "flat_dq", "flat")
    return m


def _fp16_cast_pair() -> onnx.ModelProto:
    m = trt_cnn(ftype=F16, opset=19)
    set_init(m, "r1_s", np.array(3.0 / 127, np.float32))
    insert_after(m, "/relu1/Relu", [helper.make_node("Cast", ["r1"], ["r1_32"], name="r1_to32",
                                                     to=F32)])
    rewire(m, "r1_Q", "r1", "r1_32")
    insert_after(m, "r1_DQ", [helper.make_node("Cast", ["r1_dq"], ["r1_16"], name="r1_to16",
                                               to=F16)])
    rewire(m, "/conv2/Conv", "r1_dq", "r1_16")
    rewire(m, "/add/Add", "r1_dq", "r1_16")
    return m


def _fp16_graph_fp32_scales() -> onnx.ModelProto:
    m = trt_cnn(ftype=F16, opset=19)
    for t in m.graph.initializer:  # every scale back to float32
        if t.name.endswith("_s"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32),
                                               t.name))
    return m


def _set(**arrays: np.ndarray) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        m = trt_cnn()
        for name, arr in arrays.items():
            set_init(m, name, arr)
        return m
    return build


def _uint8_weight() -> onnx.ModelProto:
    m = trt_cnn()
    w = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "w1_q"))
    set_init(m, "w1_q", w.astype(np.uint8))  # (values wrap; only the type matters here)
    set_init(m, "w1_zp", np.zeros(8, np.uint8))
    return m


def _pair_scale_mismatch() -> onnx.ModelProto:
    m = trt_cnn()
    node(m, "r1_DQ").input[1] = "x_s"
    return m


CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "QK100": _opset12,
    "QK102": _set(r1_zp=np.array(3, np.int8)),
    "QK103": _uint8_weight,
    "QK104": _set(x_zp=np.array(0, np.uint8)),
    "QK105": _per_tensor,
    "QK106": _wrong_axis,
    "QK107": _int8_constant_used_by_cast,
    "QK109": _per_channel_activation,
    "QK110": _opset12,
    "QK111": lambda: trt_cnn(opset=25),
    "QK112": _conv_qdq_relu,
    "QK113": _residual_both,
    "QK114": _residual_neither,
    "QK115": _dq_into_softmax,
    "QK116": _q_without_dq,
    "QK117": _weight_not_quantized,
    "QK118": _float_gemm,
    "QK119": _fp16_cast_pair,
    "QK120": _fp16_graph_fp32_scales,
    "QK121": _pair_scale_mismatch,
    "QK122": _set(r1_s=np.array(0.0, np.float32)),
}
CASES.update(FP8_CASES)
ORT_CASES = {"QK101": {}, "QK108": {"quant_format": QuantFormat.QOperator}}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_code_is_detected(code: str) -> None:
    report = lint_model(CASES[code]())
    found = [f for f in report.findings if f.code == code]
    assert found, f"{code} not found in {[f.code for f in report.findings]}"
    assert {f.severity for f in found} == {CODES[code][0]}
    assert all(f.message and "\n" not in f.message for f in found)
    # a finding on a node shows up in that node's notes
    names = {f.node for f in found if f.node}
    assert all(code in n.notes for n in report.nodes if n.name in names)


@pytest.mark.parametrize("code", sorted(ORT_CASES))
def test_ort_codes(tmp_path: Path, code: str) -> None:
    report = lint_model(ort_quantize(fp32_cnn(), tmp_path, **ORT_CASES[code]))
    assert code in codes(report, CODES[code][0])


def test_every_code_has_a_test() -> None:
    assert set(CASES) | set(ORT_CASES) == set(CODES)


def test_qoperator_model(tmp_path: Path) -> None:  # (d)
    report = lint_model(ort_quantize(fp32_cnn(), tmp_path, quant_format=QuantFormat.QOperator))
    qlinear = [f for f in report.findings if f.code == "QK108"]
    assert {f.node for f in qlinear} >= {"/conv1/Conv_quant", "/conv2/Conv_quant"}
    assert all(f.severity == "error" for f in qlinear)
    conv = next(n for n in report.nodes if n.op_type == "QLinearConv")
    assert conv.precision == "unsupported"


def test_per_tensor_weights_are_a_warning() -> None:  # (e)
    report = lint_model(_per_tensor())
    (f,) = [f for f in report.findings if f.code == "QK105"]
    assert f.severity == "warning" and f.node == "/conv1/Conv" and f.tensor == "w1_q"
    assert "per_channel=True" in f.message and not report.has_errors
    conv = next(n for n in report.nodes if n.name == "/conv1/Conv")
    assert conv.precision == "int8" and conv.weights == "per-tensor"


def test_opset12_per_channel() -> None:  # (f)
    report = lint_model(_opset12())
    assert {f.node for f in report.findings if f.code == "QK110"} == {"w1_DQ", "w2_DQ", "wf_DQ"}
    assert "opset 13" in next(f for f in report.findings if f.code == "QK110").message
    assert report.findings[0].code == "QK100" and report.findings[0].node is None


def test_fp16_graph_with_fp32_scales() -> None:  # (g)
    report = lint_model(_fp16_graph_fp32_scales())
    mismatch = [f for f in report.findings if f.code == "QK120"]
    assert {f.node for f in mismatch} >= {"x16_Q", "/conv1/Conv", "/conv2/Conv", "/fc/Gemm"}
    assert all(f.severity == "error" for f in mismatch)
    assert "fp16" in mismatch[0].message and "fp32" in mismatch[0].message


def test_fp32_scales_with_cast_pair_still_int8() -> None:
    # TensorRT folds DQ -> Cast(fp16) -> Conv into an INT8 kernel (verified on TensorRT-RTX)
    report = lint_model(_fp16_cast_pair())
    assert codes(report) == {"QK119"} and set(precision(report).values()) == {"int8"}


def test_wrong_axis_and_per_channel_activation_fall_back_to_float() -> None:
    assert precision(lint_model(_wrong_axis()))["/conv2/Conv"] == "fp32"
    assert precision(lint_model(_per_channel_activation()))["/conv1/Conv"] == "fp32"


def test_gemm_expected_axis_follows_transb() -> None:
    m = trt_cnn()
    g = node(m, "/fc/Gemm")
    g.attribute[0].i = 0  # transB=0: B is [K, N] and its output channels are axis 1
    w = _weights()["wf"].T.copy()  # [8, 10]
    amax = np.abs(w).max(axis=0)
    set_init(m, "wf_q", np.clip(np.round(w / (amax / 127)), -127, 127).astype(np.int8))
    set_init(m, "wf_s", (amax / 127).astype(np.float32))
    node(m, "wf_DQ").attribute[0].i = 1
    assert lint_model(m).findings == []
    node(m, "wf_DQ").attribute[0].i = 0
    set_init(m, "wf_s", np.full(8, 0.01, np.float32))
    set_init(m, "wf_zp", np.zeros(8, np.int8))
    assert "QK106" in codes(lint_model(m), "error")


def test_unnamed_nodes_and_subgraph_consumers() -> None:
    m = trt_cnn()
    for n in m.graph.node:
        if n.op_type == "Relu":
            n.name = ""
    # an If whose branch reads the Q output counts as its consumer
    then = helper.make_graph([helper.make_node("DequantizeLinear", ["c2_q", "r1_s", "r1_zp"],
                                               ["y"], name="inner_dq")], "then", [],
                             [helper.make_tensor_value_info("y", F32, None)])
    m.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    m.graph.node.extend([
        helper.make_node("QuantizeLinear", ["c2", "r1_s", "r1_zp"], ["c2_q"], name="c2_Q"),
        helper.make_node("If", ["cond"], ["y_out"], name="if", then_branch=then,
                         else_branch=then)])
    report = lint_model(m)
    relu = [i for i, n in enumerate(m.graph.node) if n.op_type == "Relu"]
    assert {f"Relu_{i}" for i in relu} <= {n.name for n in report.nodes}
    # the Q's only reader is the If (through its subgraph): reported, not crashed on
    assert [f.code for f in report.findings if f.node == "c2_Q"] == ["QK116"]


def test_lint_work_is_linear_in_graph_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph walks grow exactly with the number of blocks; only scales and zero points are
    decoded, each once, never a weight (counted, not timed: timings belong in benchmarks/)."""
    from quantkit.graph import index as graph_index

    def chain(blocks: int) -> onnx.ModelProto:
        b = TrtStyle()
        w = np.random.default_rng(0).standard_normal((4, 4, 1, 1))
        t = "x"
        for i in range(blocks):
            wq = b.weight(f"w{i}", w)
            b.nodes.append(helper.make_node("Conv", [b.act(t, 4.0), wq], [f"c{i}"],
                                            name=f"conv{i}"))
            b.nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
            t = f"r{i}"
        graph = helper.make_graph(b.nodes, "chain", [helper.make_tensor_value_info(
            "x", F32, [1, 4, 4, 4])], [helper.make_tensor_value_info(t, F32, [1, 4, 4, 4])],
            initializer=b.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    work: Counter[str] = Counter()
    decoded: list[str] = []
    cls = graph_index.GraphIndex
    real_walk, real_source = cls.final_consumers, cls.source
    real_decode = graph_index.numpy_helper.to_array

    def walk(self: Any, name: str) -> Any:
        work["walk"] += 1
        return real_walk(self, name)

    def source(self: Any, name: str) -> str:
        work["source"] += 1
        return real_source(self, name)

    def decode(tensor: onnx.TensorProto, *args: Any, **kwargs: Any) -> np.ndarray:
        decoded.append(tensor.name)
        return real_decode(tensor, *args, **kwargs)

    monkeypatch.setattr(cls, "final_consumers", walk)
    monkeypatch.setattr(cls, "source", source)
    monkeypatch.setattr(graph_index.numpy_helper, "to_array", decode)
    counts = []
    for blocks in (50, 200):
        work.clear()
        decoded.clear()
        m = chain(blocks)
        report = lint_model(m)
        assert report.findings == [] and len(report.nodes) == len(m.graph.node)
        # per block one activation and one weight (scale, zero point each), decoded once
        acts = ["x"] + [f"r{i}" for i in range(blocks - 1)]
        want = [f"{t}_{k}" for t in acts + [f"w{i}" for i in range(blocks)] for k in ("s", "zp")]
        assert sorted(decoded) == sorted(want)
        counts.append((work["walk"], work["source"]))
    (walk_small, src_small), (walk_big, src_big) = counts
    assert walk_big == 4 * walk_small and src_big == 4 * src_small  # linear, not quadratic


# --- cross-check with the real TensorRT-RTX parser and builder (CPU) --------------------------
REJECTED = {"QK101", "QK102", "QK103", "QK107", "QK108", "QK120", "QK122"} | FP8_REJECTED


def _rtx_builds(model: onnx.ModelProto, path: Path) -> bool:
    trt = pytest.importorskip("tensorrt_rtx_bindings")
    onnx.save(model, str(path))
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    if not trt.OnnxParser(network, logger).parse_from_file(str(path)):
        return False
    return builder.build_serialized_network(network, builder.create_builder_config()) is not None


@pytest.mark.parametrize("code", sorted(set(CASES) - {"QK100", "QK110", "QK111"}))
def test_rtx_agrees_with_lint(tmp_path: Path, code: str) -> None:
    """Errors meaning "TensorRT rejects it" fail in TensorRT-RTX; the other cases build."""
    assert _rtx_builds(CASES[code](), tmp_path / "m.onnx") == (code not in REJECTED)


@pytest.mark.parametrize("options", [{}, ORT_TRT_OPTIONS], ids=["ort-default", "ort-trt"])
def test_rtx_agrees_on_ort_models(tmp_path: Path, options: dict) -> None:
    report = lint_model(ort_quantize(fp32_cnn(), tmp_path, **options))
    assert _rtx_builds(ort_quantize(fp32_cnn(), tmp_path, **options),
                       tmp_path / "m.onnx") == (not report.has_errors)


@pytest.mark.parametrize("kwargs", [{}, {"ftype": F16, "opset": 19}], ids=["fp32", "fp16"])
def test_rtx_parsed_precision_matches(tmp_path: Path, kwargs: dict) -> None:
    rtx = pytest.importorskip("_rtx")
    model = trt_cnn(**kwargs)
    onnx.save(model, str(tmp_path / "m.onnx"))
    layers = rtx.parse_layers(tmp_path / "m.onnx")
    for name, prec in precision(lint_model(model)).items():
        assert rtx.layer_precision(layers[name]) == prec, name


def test_single_output_channel_needs_no_per_channel_scale() -> None:
    b = TrtStyle()
    w = np.random.default_rng(0).integers(-127, 128, (1, 3, 3, 3)).astype(np.int8)
    b.init("w_q", w)
    b.init("w_s", np.array(0.01, np.float32))
    b.init("w_zp", np.array(0, np.int8))
    b.nodes += [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="w_DQ"),
                helper.make_node("Conv", [b.act("x", 4.0), "w"], ["probs"], name="conv")]
    graph = helper.make_graph(b.nodes, "one", [helper.make_tensor_value_info(
        "x", F32, [1, 3, 8, 8])], [helper.make_tensor_value_info("probs", F32, [1, 1, 6, 6])],
        initializer=b.inits)
    report = lint_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert report.findings == [] and precision(report) == {"conv": "int8"}


def test_docs_list_every_code() -> None:
    from pathlib import Path

    from quantkit.qdq.lint import CODES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "lint.md").read_text()
    for code, (severity, _) in CODES.items():
        assert f"| {code} | {severity} |" in doc, code
