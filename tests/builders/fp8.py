"""Hand-made FP8 (E4M3) Q/DQ models, good and bad, for the linter, writer and build tests.

The good model follows TensorRT's FP8 form: opset 19, QuantizeLinear/DequantizeLinear with a
float32 scale and a FLOAT8E4M3FN zero point of 0, per-tensor activation and weight scales
(amax / 448). Each bad variant breaks one rule; ``FP8_CASES`` maps a lint code to its model.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
E4M3 = TensorProto.FLOAT8E4M3FN


def _fp8(arr: np.ndarray, name: str, dtype: type = ml_dtypes.float8_e4m3fn) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, np.float32).astype(dtype), name)


def fp8_cnn(*, opset: int = 19, int8_weight: bool = False, conv_transpose: bool = False,
            e5m2: bool = False, seed: int = 0) -> onnx.ModelProto:
    """``x -> Q/DQ -> Conv(w1) -> Relu -> Q/DQ -> Conv(w2) -> GAP -> Flatten -> Q/DQ -> Gemm``.

    Args:
        opset: the model's opset (FP8 needs 19).
        int8_weight: give conv1 an INT8 per-channel weight next to its FP8 activation.
        conv_transpose: make conv2 a ConvTranspose (stride 1, same shape).
        e5m2: store every FP8 tensor as FLOAT8E5M2 instead of E4M3FN.
        seed: weight seed.
    """
    rng = np.random.default_rng(seed)
    dtype = ml_dtypes.float8_e5m2 if e5m2 else ml_dtypes.float8_e4m3fn
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def act(x: str, amax: float) -> str:
        inits.append(numpy_helper.from_array(np.array(amax / 448, np.float32), f"{x}_s"))
        inits.append(_fp8(np.zeros(()), f"{x}_zp", dtype))
        nodes.append(helper.make_node("QuantizeLinear", [x, f"{x}_s", f"{x}_zp"], [f"{x}_q"],
                                      name=f"{x}_QuantizeLinear"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{x}_q", f"{x}_s", f"{x}_zp"],
                                      [f"{x}_dq"], name=f"{x}_DequantizeLinear"))
        return f"{x}_dq"

    def weight(w: np.ndarray, name: str, int8: bool = False) -> str:
        if int8:
            scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127).astype(np.float32)
            q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127)
            inits.append(numpy_helper.from_array(q.astype(np.int8), f"{name}_q"))
            inits.append(numpy_helper.from_array(scale, f"{name}_s"))
            inits.append(numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{name}_zp"))
            attrs = {"axis": 0}
        else:
            scale = np.array(np.abs(w).max() / 448, np.float32)
            inits.append(_fp8(w / scale, f"{name}_q", dtype))
            inits.append(numpy_helper.from_array(scale, f"{name}_s"))
            inits.append(_fp8(np.zeros(()), f"{name}_zp", dtype))
            attrs = {}
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s",
                                                           f"{name}_zp"], [f"{name}_dq"],
                                      name=f"{name}_DequantizeLinear", **attrs))
        return f"{name}_dq"

    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    wf = (rng.standard_normal((10, 8)) * 0.5).astype(np.float32)
    nodes.append(helper.make_node("Conv", [act("x", 3.0), weight(w1, "w1", int8_weight)], ["c1"],
                                  name="conv1", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    if conv_transpose:
        nodes.append(helper.make_node("ConvTranspose", [act("r1", 4.0),
                                                        weight(w2.transpose(1, 0, 2, 3), "w2")],
                                      ["c2"], name="conv2", pads=[1, 1, 1, 1]))
    else:
        nodes.append(helper.make_node("Conv", [act("r1", 4.0), weight(w2, "w2")], ["c2"],
                                      name="conv2", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["g"], ["f"], name="flatten"))
    nodes.append(helper.make_node("Gemm", [act("f", 4.0), weight(wf, "wf")], ["y"],
                                  name="fc", transB=1))
    graph = helper.make_graph(nodes, "fp8_cnn", [helper.make_tensor_value_info(
        "x", F32, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", F32, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


#: lint code -> a model that triggers it.
FP8_CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "QK123": lambda: fp8_cnn(opset=18),
    "QK124": lambda: fp8_cnn(int8_weight=True),
    "QK125": lambda: fp8_cnn(conv_transpose=True),
    "QK126": lambda: fp8_cnn(e5m2=True),
}
#: codes whose model TensorRT-RTX 1.7 refuses to parse or build (verified).
FP8_REJECTED = frozenset({"QK124", "QK126"})
