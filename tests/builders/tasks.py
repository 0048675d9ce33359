"""Tiny task models built in code: a detector-like head whose class scores INT8 wrecks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ANCHORS = 64


def detector(path: Path) -> Path:
    """x [N, 8, 1, A] -> Conv -> Conv(identity) -> [N, 6, A]: boxes (cx, cy, w, h), 2 scores.

    The box rows reach ~600 while the class logits stay within +-2, so one per-tensor INT8 scale
    for the second Conv's input (~600 / 127) rounds every logit to 0: the class scores all
    become 0.5 -- while the boxes, which dominate the flattened output, barely move.
    """
    w1 = np.zeros((6, 8, 1, 1), np.float32)
    b1 = np.zeros(6, np.float32)
    for row, (gain, bias) in enumerate([(600, 0), (600, 0), (40, 20), (40, 20), (4, -2),
                                        (4, -2)]):
        w1[row, row, 0, 0], b1[row] = gain, bias
    w2 = np.eye(6, dtype=np.float32).reshape(6, 6, 1, 1)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "w1"), (b1, "b1"), (w2, "w2"), (np.zeros(6, np.float32), "b2"),
              (np.array([0, 6, ANCHORS], np.int64), "shape"),
              (np.array([0], np.int64), "s0"), (np.array([4], np.int64), "s4"),
              (np.array([6], np.int64), "s6"), (np.array([1], np.int64), "ax")]]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/head/conv1/Conv"),
        helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], name="/head/conv2/Conv"),
        helper.make_node("Reshape", ["c2", "shape"], ["flat"], name="/head/Reshape"),
        helper.make_node("Slice", ["flat", "s0", "s4", "ax"], ["box"], name="/head/box"),
        helper.make_node("Slice", ["flat", "s4", "s6", "ax"], ["cls"], name="/head/cls"),
        helper.make_node("Sigmoid", ["cls"], ["prob"], name="/head/Sigmoid"),
        helper.make_node("Concat", ["box", "prob"], ["output0"], name="/head/Concat", axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 1, ANCHORS])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 6, ANCHORS])
    model = helper.make_model(helper.make_graph(nodes, "det", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
