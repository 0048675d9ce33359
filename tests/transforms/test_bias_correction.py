"""Bias correction: the analytic weight-only shift, a smaller mean output shift of INT8 layers
on held-out data, names / metadata, streaming data, and a quantized result that lints, parses
and builds with TensorRT-RTX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.calibrators.cache import ScaleTable
from quantkit.qdq.writer import quantize_model, quantize_weight
from quantkit.transforms import applied_transforms, bias_correct, equalize
from tests.transforms.ortrun import run


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.fixture(scope="module")
def minmax(demo: dict[str, Any]) -> ScaleTable:
    from quantkit.capture import calibrate

    return calibrate(demo["path"], {"input": demo["cal"]}, method="minmax").scales


def test_weight_only_shift_is_dw_times_mean_input() -> None:
    """Without scales: b' = b - (Wq - W) @ E[x] exactly (Gemm, transB=1)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 5)) * np.array([0.01, 0.1, 1, 3, 7])).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="/fc/Gemm", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = (rng.standard_normal((40, 5)) + 2.0).astype(np.float32)
    # a generator: the independent mode reads the data once, batch by batch
    out, report = bias_correct(model, ({"x": x[i: i + 8]} for i in range(0, 40, 8)))
    q, s = quantize_weight(w, 0)
    dw = q.astype(np.float64) * s[:, None] - w
    want = b - dw @ x.astype(np.float64).mean(0)
    np.testing.assert_allclose(_init(out, "b"), want, rtol=1e-5, atol=1e-6)
    assert report.changed[0]["layer"] == "/fc/Gemm"
    assert report.settings["num_samples"] == 40
    assert not report.changed[0]["activation_quantized"]


def _layer_inputs(model: onnx.ModelProto, x: np.ndarray,
                  names: list[str]) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = {n.name: n for n in m.graph.node}
    for name in names:
        m.graph.output.append(onnx.ValueInfoProto(name=nodes[name].input[0]))
    outs = run(m, {"input": x}, [nodes[n].input[0] for n in names])
    return dict(zip(names, outs, strict=True))


def _one_layer(node: onnx.NodeProto, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    clone = helper.make_node(node.op_type, ["x", "w", "b"], ["y"], name="n")
    clone.attribute.extend(node.attribute)
    graph = helper.make_graph([clone], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(x.shape))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.astype(np.float32), "w"),
         numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return run(model, {"x": x})[0].astype(np.float64)


def _fake_quant(x: np.ndarray, scale: float) -> np.ndarray:
    return (np.clip(np.round(x / scale), -128, 127) * scale).astype(np.float32)


def test_mean_shift_of_int8_layers_is_reduced_on_held_out_data(
        demo: dict[str, Any], minmax: ScaleTable) -> None:
    """Per layer, INT8 (weights per channel + input per tensor) vs FP32 on the evaluation
    digits, which bias correction never saw: |mean output shift| per channel goes down."""
    model = demo["model"]
    out, report = bias_correct(model, {"input": demo["cal"]}, scales=minmax)
    layers = [c["layer"] for c in report.changed]
    assert len(layers) == 7 and all(c["activation_quantized"] for c in report.changed)
    inputs = _layer_inputs(model, demo["eval"], layers)
    before_total = after_total = 0.0
    for node in (n for n in model.graph.node if n.name in layers):
        w, b = _init(model, node.input[1]), _init(model, node.input[2])
        axis = 0
        for a in node.attribute:
            if a.name == "transB" and a.i == 0:
                axis = 1
        q, s = quantize_weight(w, axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        wq = q.astype(np.float32) * s.reshape(shape)
        x = inputs[node.name]
        xq = _fake_quant(x, minmax.scales[node.input[0]])
        ref = _one_layer(node, x, w, b)
        red = (0, 2, 3) if node.op_type == "Conv" else (0,)
        before = np.abs((_one_layer(node, xq, wq, b) - ref).mean(axis=red)).mean()
        after = np.abs((_one_layer(node, xq, wq, _init(out, node.input[2])) - ref)
                       .mean(axis=red)).mean()
        assert after <= before * 1.05 + 1e-6, (node.name, before, after)
        before_total += before
        after_total += after
    assert after_total < 0.5 * before_total, (before_total, after_total)


def test_sequential_mode_reduces_logit_shift(demo: dict[str, Any], minmax: ScaleTable) -> None:
    model = demo["model"]
    out, report = bias_correct(model, {"input": demo["cal"]}, scales=minmax, sequential=True)
    assert report.settings["mode"] == "sequential" and len(report.changed) == 7
    ev = demo["eval"]
    ref = run(model, {"input": ev}, [demo["logits"]])[0]
    plain = run(quantize_model(model, minmax).model, {"input": ev}, [demo["logits"]])[0]
    fixed = run(quantize_model(out, minmax).model, {"input": ev}, [demo["logits"]])[0]
    assert np.abs((fixed - ref).mean(0)).mean() < np.abs((plain - ref).mean(0)).mean()


def test_names_metadata_and_rtx_build(demo: dict[str, Any], minmax: ScaleTable,
                                      tmp_path: Path) -> None:
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model

    eq, _ = equalize(demo["model"])
    out, report = bias_correct(eq, {"input": demo["cal"]}, scales=minmax,
                               layers=["/conv2/Conv", "/fc2/Gemm"])
    assert [c["layer"] for c in report.changed] == ["/conv2/Conv", "/fc2/Gemm"]
    assert [(n.name, n.op_type, list(n.input)) for n in out.graph.node] == \
        [(n.name, n.op_type, list(n.input)) for n in demo["model"].graph.node]
    assert [t["transform"] for t in applied_transforms(out)] == ["equalize", "bias_correction"]
    np.testing.assert_array_equal(_init(out, "conv1.bias"), _init(eq, "conv1.bias"))
    assert not np.array_equal(_init(out, "conv2.bias"), _init(eq, "conv2.bias"))
    res = quantize_model(out, minmax)
    assert [t["transform"] for t in applied_transforms(res.model)] == \
        ["equalize", "bias_correction"]
    assert not [f for f in lint_model(res.model).findings if f.severity == "error"]
    rtx = pytest.importorskip("_rtx")
    path = tmp_path / "bc.int8.onnx"
    save_model(res.model, path)
    layers = rtx.parse_layers(path)
    assert all(rtx.layer_precision(layers[n]) == "int8"
               for n, e in res.plan.nodes.items() if e.precision == "int8")
    assert rtx.build(path, {"input": ((1, 1, 28, 28), (4, 1, 28, 28), (8, 1, 28, 28))}) > 0


def test_unknown_layer_is_an_input_error(demo: dict[str, Any]) -> None:
    from quantkit.errors import InputError

    with pytest.raises(InputError, match="no node named"):
        bias_correct(demo["model"], {"input": demo["cal"][:8]}, layers=["/nope/Conv"])


def test_a_transform_that_cannot_apply_warns_naming_the_nodes(
        demo: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    from quantkit.transforms import smoothquant

    name = demo["model"].graph.input[0].name
    data = [{name: demo["cal"][:32]}]
    relu = next(n.name for n in demo["model"].graph.node if n.op_type == "Relu")
    conv = next(n.name for n in demo["model"].graph.node if n.op_type == "Conv")
    with caplog.at_level("WARNING", logger="quantkit.transforms"):
        out, rep = bias_correct(demo["model"], data, layers=[relu])
    assert not rep.changed
    assert "bias_correction did not apply" in caplog.text and relu in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="quantkit.transforms"):
        out, rep = smoothquant(demo["model"], data, layers=[conv])
    assert not rep.changed
    assert "smoothquant did not apply" in caplog.text and conv in caplog.text
