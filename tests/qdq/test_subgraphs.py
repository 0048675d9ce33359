"""Quantizing models whose If / Loop bodies read top-level initializers, Constant outputs and
tensors: the result must be valid ONNX, keep everything a body reads, and compute what the FP32
model computes up to INT8 rounding. The bodies themselves stay float (with a warning)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.capture import calibrate
from quantkit.qdq.lint import lint_model
from quantkit.qdq.writer import quantize_model
from quantkit.transforms import fold_batchnorm
from tests.builders.subgraphs import if_model, loop_model

X = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
#: body-read tensors of each model, as top-level initializers (Constants become initializers)
BODY_READS = {"if": ("s_then", "w_else", "k_then"), "loop": ("w_loop", "b_loop")}


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    return np.asarray(ort.InferenceSession(src, providers=["CPUExecutionProvider"])
                      .run(None, {"x": x})[0])


def _values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


@pytest.mark.parametrize("kind", ["if", "loop"])
@pytest.mark.parametrize("fp16", [False, True])
def test_quantize_keeps_what_bodies_read(tmp_path: Path, kind: str, fp16: bool,
                                         caplog: pytest.LogCaptureFixture) -> None:
    path = (if_model if kind == "if" else loop_model)(tmp_path / "m.onnx")
    scales = calibrate(path, [{"x": X}], method="minmax").scales
    original = onnx.load(str(path))
    with caplog.at_level(logging.WARNING, logger="quantkit.qdq.writer"):
        res = quantize_model(original, scales, fp16=fp16)
    onnx.checker.check_model(res.model, full_check=True)
    # the main-graph Convs are INT8 (weights replaced by INT8 copies)...
    precision = {n.name: n.precision for n in lint_model(res.model).nodes}
    assert precision["/conv1/Conv"] == precision["/conv2/Conv"] == "int8"
    assert res.weight_qdq == ["w1", "w2"]
    after, before = _values(res.model), _values(original)
    assert "w1" not in after and "w2" not in after
    # ...and every tensor a body reads is still there, unchanged
    for name in BODY_READS[kind]:
        np.testing.assert_array_equal(after[name], before[name])
    # same outputs as FP32 within INT8 (and FP16) rounding, through both If branches
    for x in (X[:8], -X[:8]):
        want, got = _run(path, x), _run(res.model, x)
        assert got.shape == want.shape
        err = float(np.abs(got - want).max())
        assert 0 < err <= 0.05 * float(np.abs(want).max()), err
    inner = [r.getMessage() for r in caplog.records if "not quantized" in r.getMessage()]
    if kind == "if":  # else/Conv sits in a branch: it stays float, and the user is told
        assert len(inner) == 1 and "else/Conv" in inner[0]
        assert any("else/Conv" in w for w in res.warnings)
    else:
        assert not inner


def test_branches_see_the_outer_tensors_they_read_in_fp16(tmp_path: Path) -> None:
    # c2 is computed in FP16 in the main graph; the branches read it and must get FP32
    res = quantize_model(onnx.load(str(if_model(tmp_path / "m.onnx"))),
                         calibrate(tmp_path / "m.onnx", [{"x": X}], method="minmax").scales,
                         fp16=True)
    if_node = next(n for n in res.model.graph.node if n.op_type == "If")
    reads = {i for a in if_node.attribute for n in a.g.node for i in n.input}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(
        res.model).graph.value_info}
    outer = reads & set(types)
    assert outer and all(types[n] == TensorProto.FLOAT for n in outer), \
        {n: types[n] for n in outer}


def test_fold_batchnorm_leaves_a_weight_a_branch_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
          (("g", rng.uniform(0.5, 2, 4)), ("be", rng.standard_normal(4)),
           ("mu", rng.standard_normal(4)), ("var", rng.uniform(0.5, 2, 4)))]
    branch = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["t"], name="then/Conv")],
                               "then", [], [helper.make_tensor_value_info("t", 1, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="else/Neg")],
                              "else", [], [helper.make_tensor_value_info("e", 1, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv"),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["y"],
                              name="/bn"),
             helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(
                 np.array(True))),
             helper.make_node("If", ["cond"], ["z"], name="/if", then_branch=branch,
                              else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, [2, 4, 4, 4]),
                               helper.make_tensor_value_info("z", 1, None)],
                              initializer=[numpy_helper.from_array(w, "w"), *bn])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded, report = fold_batchnorm(model)
    assert not report.changed
    assert report.skipped == [{"node": "/bn",
                               "reason": "/conv/Conv's weight is shared with another layer"}]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, {"x": x}) for m in (model, folded)]
    for a, b in zip(*run, strict=True):
        np.testing.assert_array_equal(a, b)


def _edit_if_model(path: Path, *, else_weight: str = "w_else",
                   then_name: str = "t_mul") -> onnx.ModelProto:
    """The If model with the else-branch Conv reading ``else_weight`` and the then-branch's
    intermediate tensor renamed to ``then_name``."""
    model = onnx.load(str(if_model(path)))
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    for a in if_node.attribute:
        for node in a.g.node:
            node.input[:] = [else_weight if i == "w_else" else then_name if i == "t_mul" else i
                             for i in node.input]
            node.output[:] = [then_name if o == "t_mul" else o for o in node.output]
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


def test_weight_read_by_a_branch_and_a_quantized_conv(tmp_path: Path) -> None:
    # w2 feeds /conv2/Conv (quantized: it gets an INT8 copy) and else/Conv (stays FP32)
    model = _edit_if_model(tmp_path / "m.onnx", else_weight="w2")
    res = quantize_model(model, calibrate(tmp_path / "m.onnx", [{"x": X}],
                                          method="minmax").scales)
    onnx.checker.check_model(res.model, full_check=True)
    after = _values(res.model)
    np.testing.assert_array_equal(after["w2"], _values(model)["w2"])
    assert "w2_int8" in after and "w_else" not in after  # w_else is read by nobody now
    x = -X[:8]  # the else branch
    want, got = _run(tmp_path / "m.onnx", x), _run(res.model, x)
    assert 0 < float(np.abs(got - want).max()) <= 0.05 * float(np.abs(want).max())


def test_new_names_avoid_names_defined_in_bodies(tmp_path: Path) -> None:
    # a body defines 'x_scale', the name the writer would give the scale of input x
    model = _edit_if_model(tmp_path / "m.onnx", then_name="x_scale")
    res = quantize_model(model, calibrate(tmp_path / "m.onnx", [{"x": X}],
                                          method="minmax").scales)
    onnx.checker.check_model(res.model, full_check=True)
    q = next(n for n in res.model.graph.node if n.op_type == "QuantizeLinear"
             and n.input[0] == "x")
    assert q.input[1] == "x_scale_1"
    want, got = _run(tmp_path / "m.onnx", X[:8]), _run(res.model, X[:8])
    assert float(np.abs(got - want).max()) <= 0.05 * float(np.abs(want).max())
