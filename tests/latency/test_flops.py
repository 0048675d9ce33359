"""FLOPs per ONNX node at concrete shapes, against hand counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit.latency.flops import node_costs


def _save(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], path: Path,
          x_shape: list[object], y_shape: list[object]) -> Path:
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_shapes_computed_in_the_graph(tmp_path: Path) -> None:
    """A YOLO-style split: Shape -> Gather -> Div -> Slice feeds a Conv (ONNX's own shape
    inference cannot size the Slice; the Conv's FLOPs must still be counted)."""
    c, k, hw = 32, 24, 20
    w = np.zeros((k, c // 2, 3, 3), np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([0], np.int64), "zero")]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "one"], ["ch"], name="gather", axis=0),
        helper.make_node("Div", ["ch", "two"], ["half"], name="div"),
        helper.make_node("Slice", ["x", "zero", "half", "one"], ["xs"], name="slice"),
        helper.make_node("Conv", ["xs", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    path = _save(nodes, inits, tmp_path / "split.onnx", ["N", c, "H", "W"], ["N", k, "H", "W"])
    costs = node_costs(path, {"x": [2, c, hw, hw]})
    assert costs["conv"].matrix_flops == 2 * 2 * k * hw * hw * (c // 2) * 9
    assert costs["relu"].vector_flops == 2 * k * hw * hw
    assert costs["shape"].matrix_flops == costs["slice"].vector_flops == 0


def test_matmul_gemm_pool_softmax_and_folded_constants(tmp_path: Path) -> None:
    m, kd, n = 6, 10, 4
    inits = [numpy_helper.from_array(np.ones((kd, n), np.float32), "b"),
             numpy_helper.from_array(np.ones((n, 3), np.float32), "g"),
             numpy_helper.from_array(np.ones((kd, n), np.float32), "c0"),
             numpy_helper.from_array(np.ones((kd, n), np.float32), "c1")]
    nodes = [
        helper.make_node("Add", ["c0", "c1"], ["csum"], name="const_add"),  # folded
        helper.make_node("Add", ["b", "csum"], ["b2"], name="const_add2"),  # folded too
        helper.make_node("MatMul", ["x", "b2"], ["h"], name="matmul"),
        helper.make_node("Gemm", ["h", "g"], ["o"], name="gemm"),
        helper.make_node("Softmax", ["o"], ["y"], name="softmax", axis=-1),
    ]
    path = _save(nodes, inits, tmp_path / "mm.onnx", ["M", kd], ["M", 3])
    costs = node_costs(path, {"x": [m, kd]})
    assert costs["matmul"].matrix_flops == 2 * m * kd * n
    assert costs["gemm"].matrix_flops == 2 * m * n * 3
    assert costs["softmax"].vector_flops == 5 * m * 3
    assert costs["const_add"].vector_flops == costs["const_add2"].vector_flops == 0


def test_pooling_counts_its_window(tmp_path: Path) -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3, 3],
                              strides=[2, 2])]
    path = _save(nodes, [], tmp_path / "pool.onnx", ["N", 8, 15, 15], ["N", 8, 7, 7])
    assert node_costs(path, {"x": [1, 8, 15, 15]})["pool"].vector_flops == 8 * 7 * 7 * 9
