"""Models with If / Loop bodies that read outer initializers, Constant outputs and tensors.

Built in code with onnx.helper (opset 17). In every model the main graph has two Convs for the
writer to quantize; the bodies read top-level tensors by name (not as explicit inputs), which is
what unused-initializer removal and consumer counting must see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
RNG = np.random.default_rng(7)


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _const(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_Constant",
                            value=numpy_helper.from_array(np.asarray(arr, np.float32)))


def _convs(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x: str, out: str) -> None:
    """x -> Conv(w1, b1) -> Relu -> r1 -> Conv(w2, b2) -> out (4 channels, 3x3 then 1x1)."""
    inits += [_init("w1", RNG.standard_normal((4, 3, 3, 3)) * 0.3),
              _init("b1", RNG.standard_normal(4) * 0.1),
              _init("w2", RNG.standard_normal((4, 4, 1, 1)) * 0.5),
              _init("b2", RNG.standard_normal(4) * 0.1)]
    nodes += [helper.make_node("Conv", [x, "w1", "b1"], ["c1"], name="/conv1/Conv", pads=[1] * 4),
              helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
              helper.make_node("Conv", ["r1", "w2", "b2"], [out], name="/conv2/Conv")]


def if_model(path: Path) -> Path:
    """Two Convs, then an If on mean(c2) > zero.

    then: ``c2 * s_then + k_then`` -- ``s_then`` is a top-level initializer read only here,
    ``k_then`` the output of a top-level Constant node read only here.
    else: ``Conv(c2, w_else) + r1`` -- ``w_else`` a top-level initializer read only here (a
    compute node inside a branch) and ``r1`` an outer node output.
    ``zero`` (the threshold) is a top-level Constant read by the main graph.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    _convs(nodes, inits, "x", "c2")
    inits += [_init("s_then", RNG.uniform(0.5, 1.5, (1, 4, 1, 1))),
              _init("w_else", RNG.standard_normal((4, 4, 1, 1)) * 0.5)]
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["c2", "s_then"], ["t_mul"], name="then/Mul"),
         helper.make_node("Add", ["t_mul", "k_then"], ["t_out"], name="then/Add")],
        "then", [], [helper.make_tensor_value_info("t_out", F32, None)])
    else_g = helper.make_graph(
        [helper.make_node("Conv", ["c2", "w_else"], ["e_conv"], name="else/Conv"),
         helper.make_node("Add", ["e_conv", "r1"], ["e_out"], name="else/Add")],
        "else", [], [helper.make_tensor_value_info("e_out", F32, None)])
    nodes += [_const("zero", np.zeros((), np.float32)),
              _const("k_then", RNG.standard_normal((1, 4, 1, 1)) * 0.2),
              helper.make_node("ReduceMean", ["c2"], ["mean"], name="/mean", keepdims=0),
              helper.make_node("Greater", ["mean", "zero"], ["cond"], name="/cond"),
              helper.make_node("If", ["cond"], ["y"], name="/if", then_branch=then_g,
                               else_branch=else_g)]
    graph = helper.make_graph(nodes, "if_model",
                              [helper.make_tensor_value_info("x", F32, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", F32, ["N", 4, 8, 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def loop_model(path: Path) -> Path:
    """Conv -> Loop (3 iterations of ``acc * w_loop + b_loop + r1``) -> Conv.

    ``w_loop`` is a top-level initializer and ``b_loop`` a top-level Constant output, both read
    only in the body; ``r1`` (an outer node output) too; ``trip`` is a top-level Constant.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        _init("w1", RNG.standard_normal((4, 3, 3, 3)) * 0.3),
        _init("b1", RNG.standard_normal(4) * 0.1),
        _init("w2", RNG.standard_normal((4, 4, 1, 1)) * 0.5),
        _init("b2", RNG.standard_normal(4) * 0.1),
        _init("w_loop", RNG.uniform(0.2, 0.6, (1, 4, 1, 1)))]
    body = helper.make_graph(
        [helper.make_node("Mul", ["acc", "w_loop"], ["l_mul"], name="body/Mul"),
         helper.make_node("Add", ["l_mul", "b_loop"], ["l_add"], name="body/Add"),
         helper.make_node("Add", ["l_add", "r1"], ["acc_out"], name="body/AddOuter"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body/Cond")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc", F32, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F32, None)])
    nodes += [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/conv1/Conv",
                               pads=[1] * 4),
              helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
              helper.make_node("Constant", [], ["trip"], name="trip_Constant",
                               value=numpy_helper.from_array(np.array(3, np.int64))),
              _const("b_loop", RNG.standard_normal((1, 4, 1, 1)) * 0.1),
              helper.make_node("Constant", [], ["keep_going"], name="keep_going_Constant",
                               value=numpy_helper.from_array(np.array(True))),
              helper.make_node("Loop", ["trip", "keep_going", "r1"], ["looped"], name="/loop",
                               body=body),
              helper.make_node("Conv", ["looped", "w2", "b2"], ["y"], name="/conv2/Conv")]
    graph = helper.make_graph(nodes, "loop_model",
                              [helper.make_tensor_value_info("x", F32, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", F32, ["N", 4, 8, 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
