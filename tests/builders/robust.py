"""Minimal graphs, built in code, for each class of model that used to crash or mislead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path, opset: list[onnx.OperatorSetIdProto] = OPSET,
          ) -> Path:
    model = helper.make_model(graph, opset_imports=opset)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def ids_model(path: Path, vocab: int = 50, width: int = 8, tokens: int = 6) -> Path:
    """``ids`` (int64 [N, T]) -> Gather(embedding) -> Flatten -> Gemm (bias) -> Relu -> MatMul
    -> Add."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, width)).astype(np.float32),
                                     "emb"),
             numpy_helper.from_array(
                 rng.standard_normal((width, tokens * width)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((width, 4)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
             helper.make_node("Flatten", ["e"], ["ef"], name="flatten", axis=1),
             helper.make_node("Gemm", ["ef", "w1", "b1"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "w2"], ["y0"], name="fc2"),
             helper.make_node("Add", ["y0", "b2"], ["y"], name="fc2_bias")]
    graph = helper.make_graph(
        nodes, "ids", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", tokens])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return _save(graph, path)


def integer_quantized_model(path: Path) -> Path:
    """A QOperator model: DynamicQuantizeLinear + MatMulInteger (what dynamic quantization
    writes)."""
    w = np.arange(12, dtype=np.uint8).reshape(4, 3)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dq_x"),
             helper.make_node("MatMulInteger", ["xq", "w", "xz"], ["acc"], name="mm_int"),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["accf", "xs"], ["y"], name="rescale")]
    graph = helper.make_graph(
        nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w")])
    return _save(graph, path)


def if_model(path: Path) -> Path:
    """The compute sits in the branches of an If on a bool input; the branches read an outer
    initializer and the outer tensor ``h``."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "w")

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["h", "w"], [f"{name}_mm"], name=f"{name}/MatMul"),
             helper.make_node(op, [f"{name}_mm"], [f"{name}_out"], name=f"{name}/act")],
            name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])

    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("If", ["flag"], ["y"], name="branchy",
                              then_branch=branch("then", "Relu"),
                              else_branch=branch("else", "Sigmoid"))]
    graph = helper.make_graph(
        nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                      helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    return _save(graph, path)


def scalar_input_model(path: Path) -> Path:
    """``x`` [N, 4] times a rank-0 ``gain`` (a sample rate-like scalar), then a MatMul."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 10, "w")
    nodes = [helper.make_node("Mul", ["x", "gain"], ["xs"], name="scale"),
             helper.make_node("MatMul", ["xs", "w"], ["y"], name="fc")]
    graph = helper.make_graph(
        nodes, "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                          helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    return _save(graph, path)


def state_model(path: Path, batch: int | str = "N", state_dims: tuple[int | str, ...] | None
                = None) -> Path:
    """``x`` [batch, 4] and a recurrent ``state`` [2, batch, 4] (batch on axis 1):
    ``y = (x + state[0] - state[1]) @ w`` and ``new_state = state * 0.5``."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 10, "w")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    sel = [numpy_helper.from_array(np.array(i, np.int64), f"i{i}") for i in (0, 1)]
    nodes = [helper.make_node("Gather", ["state", "i0"], ["s0"], name="s0", axis=0),
             helper.make_node("Gather", ["state", "i1"], ["s1"], name="s1", axis=0),
             helper.make_node("Sub", ["s0", "s1"], ["d"], name="diff"),
             helper.make_node("Add", ["x", "d"], ["h"], name="add"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="fc"),
             helper.make_node("Mul", ["state", "half"], ["new_state"], name="decay")]
    dims = state_dims or (2, batch, 4)
    graph = helper.make_graph(
        nodes, "state", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4]),
                         helper.make_tensor_value_info("state", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, list(dims))],
        [w, half, *sel])
    return _save(graph, path)
