"""Tiny ONNX models built in code for tests (no binary blobs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def small_cnn(path: Path, *, batch: int | str = "N", spatial: int | str = 8,
              channels: int = 3, weights_as_constant: bool = False, seed: int = 0) -> Path:
    """Conv-Relu-Conv + residual Add, GlobalAveragePool, Gemm, Softmax.

    Input ``x``: [batch, channels, spatial, spatial]; output ``probs``: [batch, 10].
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, channels, 3, 3)) * 0.3
    b1 = rng.standard_normal(8) * 0.1
    w2 = rng.standard_normal((8, 8, 3, 3)) * 0.2
    b2 = rng.standard_normal(8) * 0.1
    wf = rng.standard_normal((10, 8)) * 0.5
    bf = rng.standard_normal(10) * 0.1
    inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2),
             _init("wf", wf), _init("bf", bf)]
    nodes = []
    if weights_as_constant:
        nodes.append(helper.make_node("Constant", [], ["w1c"], name="w1_const",
                                      value=inits.pop(0)))
        w1_name = "w1c"
    else:
        w1_name = "w1"
    nodes += [
        helper.make_node("Conv", ["x", w1_name, "b1"], ["c1"], name="/conv1/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="/conv2/Conv", pads=[1] * 4),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="/add/Add"),
        helper.make_node("Relu", ["s"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="/gap/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="/fc/Gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax/Softmax", axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, spatial, spatial])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])
    graph = helper.make_graph(nodes, "small_cnn", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def two_input_model(path: Path) -> Path:
    """``y = relu(a) * b`` with inputs a: float32[N, 4], b: float32[N, 4]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("Relu", ["a"], ["ra"], name="relu"),
             helper.make_node("Mul", ["ra", "b"], ["y"], name="mul")]
    model = helper.make_model(helper.make_graph(nodes, "two", [a, b], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def matmul_model(path: Path, *, convtranspose: bool = False, opset: int = 17) -> Path:
    """x[N,4,6,6] -> (ConvTranspose) -> Flatten -> MatMul(W[.., 5]) -> MatMul(x2 activation)."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []
    src = "x"
    if convtranspose:
        inits.append(_init("wt", rng.standard_normal((4, 3, 3, 3)) * 0.3))  # [Cin, Cout, k, k]
        nodes.append(helper.make_node("ConvTranspose", ["x", "wt"], ["ct"], name="/up/ConvT"))
        src = "ct"
    nodes.append(helper.make_node("ReduceMean", [src], ["m"], name="/pool/ReduceMean",
                                  axes=[2, 3], keepdims=0) if opset < 18 else
                 helper.make_node("GlobalAveragePool", [src], ["m4"], name="/pool/GAP"))
    if opset >= 18:
        nodes.append(helper.make_node("Flatten", ["m4"], ["m"], name="/pool/Flatten"))
    c = 3 if convtranspose else 4
    inits.append(_init("wm", rng.standard_normal((c, 5))))
    nodes.append(helper.make_node("MatMul", ["m", "wm"], ["h"], name="/fc/MatMul"))
    nodes.append(helper.make_node("Transpose", ["h"], ["ht"], name="/t/Transpose"))
    nodes.append(helper.make_node("MatMul", ["h", "ht"], ["y"], name="/gram/MatMul"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "N"])
    model = helper.make_model(helper.make_graph(nodes, "mm", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def demo_digits(path: Path, copies: int) -> Path:
    """``copies`` x 256 demo digits as the demo CNN's float input [N, 1, 28, 28], saved to
    ``path``: the shipped calibration digits, shifted by up to 3 pixels and scaled by 0.6-1.4
    (seeded), so a run has many batches with ranges that grow."""
    from quantkit.demo import asset

    with np.load(asset("demo_data.npz"), allow_pickle=False) as d:
        x = d["calibration"].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    views = [np.roll(x, (int(dy), int(dx)), axis=(1, 2)) * rng.uniform(0.6, 1.4)
             for dy, dx in rng.integers(-3, 4, size=(copies, 2))]
    np.save(path, np.concatenate(views)[:, None].astype(np.float32))
    return path
