"""A bias added after a bias-less Conv as ``Add(conv, Reshape(Constant))`` (found on the zoo's
PP-OCR direction classifier, exported by paddle2onnx).

The Q/DQ writer took that Add for a residual Add (two inputs that are not initializers or
``Constant`` outputs, one from a Conv) and planned Q/DQ on the reshaped bias; calibration,
rightly, captures no constant-derived tensor, so ``quantize`` stopped with "no scale for tensor
'Reshape@0'" on a valid model. A tensor computed only from constants is now a constant for the
residual rule too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from quantkit.capture import calibrate
from quantkit.graph import GraphIndex
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model, residual_adds


def bias_add_model(path: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    bias = helper.make_tensor("b", TensorProto.FLOAT, [4], [0.1, -0.2, 0.3, -0.4])
    shape = helper.make_tensor("s", TensorProto.INT64, [4], [1, 4, 1, 1])
    nodes = [
        helper.make_node("Constant", [], ["bias"], value=bias, name="Constant@0"),
        helper.make_node("Constant", [], ["shape"], value=shape, name="Constant@1"),
        helper.make_node("Reshape", ["bias", "shape"], ["Reshape@0"], name="Reshape@0"),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Add", ["c", "Reshape@0"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "bias_add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def test_constant_derived_bias_is_not_a_residual_input(tmp_path: Path) -> None:
    model = bias_add_model(tmp_path / "m.onnx")
    assert residual_adds(GraphIndex(model)) == []
    x = np.random.default_rng(1).normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    scales = calibrate(tmp_path / "m.onnx", {"x": x}, method="minmax").scales
    assert "Reshape@0" not in scales.scales  # not an activation
    res = quantize_model(model, scales, PrecisionConfig())
    onnx.checker.check_model(res.model)
    ops = [n.op_type for n in res.model.graph.node]
    assert ops.count("QuantizeLinear") == 1 and res.plan.nodes["conv"].precision == "int8"
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, want = sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
