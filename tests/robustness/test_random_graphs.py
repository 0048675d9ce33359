"""Property test: random small valid graphs -- MatMul/Gemm/Conv-free chains with an optional
If whose branches read an outer initializer and an outer tensor -- calibrate (one pass and
staged, identical), quantize to a model that passes onnx.checker's full check and that ONNX
Runtime runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from quantkit.capture import calibrate
from quantkit.qdq.writer import quantize_model

OPS = ["MatMul", "Relu", "Sigmoid", "AddBias", "Gemm"]


def _graph(ops: list[str], width: int, with_if: bool, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for k, op in enumerate(ops):
        out = f"t{k}"
        if op in ("MatMul", "Gemm"):
            w = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32),
                                        f"w{k}")
            inits.append(w)
            if op == "Gemm":
                b = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32),
                                            f"b{k}")
                inits.append(b)
                nodes.append(helper.make_node("Gemm", [cur, w.name, b.name], [out],
                                              name=f"n{k}"))
            else:
                nodes.append(helper.make_node("MatMul", [cur, w.name], [out], name=f"n{k}"))
        elif op == "AddBias":
            b = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), f"b{k}")
            inits.append(b)
            nodes.append(helper.make_node("Add", [cur, b.name], [out], name=f"n{k}"))
        else:
            nodes.append(helper.make_node(op, [cur], [out], name=f"n{k}"))
        cur = out
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])]
    if with_if:
        shared = numpy_helper.from_array(np.eye(width, dtype=np.float32) * 0.5, "shared")
        inits.append(shared)

        def branch(tag: str, op: str) -> onnx.GraphProto:
            return helper.make_graph(
                [helper.make_node("MatMul", [cur, "shared"], [f"{tag}_mm"], name=f"{tag}/mm"),
                 helper.make_node(op, [f"{tag}_mm"], [f"{tag}_out"], name=f"{tag}/act")],
                tag, [], [helper.make_tensor_value_info(f"{tag}_out", TensorProto.FLOAT, None)])

        nodes.append(helper.make_node("If", ["c"], ["branched"], name="if",
                                      then_branch=branch("then", "Relu"),
                                      else_branch=branch("else", "Tanh")))
        # the main graph reads the initializer the branches read, too
        nodes.append(helper.make_node("MatMul", ["branched", "shared"], ["y"], name="tail"))
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    graph = helper.make_graph(nodes, "random", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=6),
       width=st.integers(2, 6), with_if=st.booleans(), flag=st.booleans(),
       seed=st.integers(0, 1000))
def test_random_graph_quantizes_to_a_valid_runnable_model(ops: list[str], width: int,
                                                          with_if: bool, flag: bool,
                                                          seed: int) -> None:
    model = _graph(ops, width, with_if, seed)
    x = np.random.default_rng(seed).standard_normal((10, width)).astype(np.float32)
    opts = {"constants": {"c": flag}} if with_if else {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, str(path))
        one = calibrate(path, {"x": x}, method="minmax", batch_size=4, data_options=opts)
        staged = calibrate(path, {"x": x}, method="minmax", batch_size=4, data_options=opts,
                           memory_budget=64)
        assert staged.scales.amaxes == one.scales.amaxes
        assert one.scales.amaxes["x"] == float(np.abs(x).max())  # the input, by hand
        result = quantize_model(model, one.scales, source=str(path))
        onnx.checker.check_model(result.model, full_check=True)
        sess = ort.InferenceSession(result.model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        feeds = {"x": x[:3]}
        if with_if:
            feeds["c"] = np.array(flag)
        y = sess.run(None, feeds)[0]
        assert y.shape == (3, width) and np.isfinite(y).all()
