"""Tiny ONNX models for the latency estimator tests, built in code (no downloads).

Each builder writes a model with a fixed batch dimension named ``N`` so the tests can choose
the shape, and returns its path. Shapes are kept small: TensorRT-RTX builds them in about a
second on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
F16 = TensorProto.FLOAT16
FP8 = TensorProto.FLOAT8E4M3FN


def _save(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
          inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
          path: Path, opset: int = 19) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def conv_model(path: Path, *, c: int = 64, k: int = 64, hw: int = 56, r: int = 3,
               dtype: str = "fp32", qdq: bool = False) -> Path:
    """One Conv (C -> K channels, R x R, stride 1, 'same' padding) with a bias.

    ``dtype`` "fp16" makes every tensor FLOAT16 (strongly typed FP16); ``qdq`` puts INT8 Q/DQ on
    the data input (per tensor) and the weights (per channel, axis 0).
    """
    ft, npt = (F16, np.float16) if dtype == "fp16" else (F32, np.float32)
    rng = _rng()
    w = (rng.standard_normal((k, c, r, r)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(k) * 0.1).astype(npt)
    inits = [numpy_helper.from_array(b, "b")]
    nodes: list[onnx.NodeProto] = []
    x, wname = "x", "w"
    if qdq:
        scale = np.abs(w).reshape(k, -1).max(axis=1) / 127
        wq = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        inits += [numpy_helper.from_array(wq, "wq"),
                  numpy_helper.from_array(scale.astype(npt), "ws"),
                  numpy_helper.from_array(np.zeros(k, np.int8), "wz"),
                  numpy_helper.from_array(np.array(4.0 / 127, npt), "xs"),
                  numpy_helper.from_array(np.array(0, np.int8), "xz")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="x_Q"),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="x_DQ"),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="w_DQ",
                                   axis=0)]
        x, wname = "xd", "wd"
    else:
        inits.append(numpy_helper.from_array(w.astype(npt), "w"))
    pad = r // 2
    nodes.append(helper.make_node("Conv", [x, wname, "b"], ["y"], name="conv",
                                  pads=[pad] * 4, kernel_shape=[r, r]))
    return _save(nodes, inits, [helper.make_tensor_value_info("x", ft, ["N", c, hw, hw])],
                 [helper.make_tensor_value_info("y", ft, ["N", k, hw, hw])], path)


def matmul_model(path: Path, *, k: int = 256, n: int = 512, dtype: str = "fp32",
                 qdq: str | None = None) -> Path:
    """Y = X @ W for X of shape (N, M, K) and a constant W of shape (K, N_out).

    ``qdq``: None, "int8" or "fp8" (Q/DQ on X per tensor and on W per tensor).
    """
    ft, npt = (F16, np.float16) if dtype == "fp16" else (F32, np.float32)
    w = (_rng(1).standard_normal((k, n)) * 0.05).astype(np.float32)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x, wname = "x", "w"
    if qdq is None:
        inits.append(numpy_helper.from_array(w.astype(npt), "w"))
    else:
        qmax, zero_type = (127.0, TensorProto.INT8) if qdq == "int8" else (448.0, FP8)
        ws = float(np.abs(w).max() / qmax)
        inits += [numpy_helper.from_array(np.array(4.0 / qmax, npt), "xs"),
                  numpy_helper.from_array(np.array(ws, npt), "ws"),
                  helper.make_tensor("z", zero_type, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "z"], ["xq"], name="x_Q"),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xd"], name="x_DQ"),
                  helper.make_node("QuantizeLinear", ["w", "ws", "z"], ["wq"], name="w_Q"),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "z"], ["wd"], name="w_DQ")]
        inits.append(numpy_helper.from_array(w.astype(npt), "w"))
        x, wname = "xd", "wd"
    nodes.append(helper.make_node("MatMul", [x, wname], ["y"], name="matmul"))
    return _save(nodes, inits, [helper.make_tensor_value_info("x", ft, ["N", "M", k])],
                 [helper.make_tensor_value_info("y", ft, ["N", "M", n])], path)


def transformer_block(path: Path, *, d: int = 64, heads: int = 2, ff: int = 128,
                      dtype: str = "fp32") -> Path:
    """A pre-LayerNorm encoder block: attention (Q, K, V, softmax) + GELU MLP, residuals."""
    ft, npt = (F16, np.float16) if dtype == "fp16" else (F32, np.float32)
    rng = _rng(2)
    inits: list[onnx.TensorProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def weight(name: str, shape: tuple[int, ...]) -> str:
        return const(name, (rng.standard_normal(shape) * 0.05).astype(npt))

    dh = d // heads
    nodes = [
        helper.make_node("LayerNormalization", ["x", weight("ln1_g", (d,)), weight("ln1_b", (d,))],
                         ["h"], name="ln1", axis=-1),
    ]
    for t in ("q", "k", "v"):
        nodes += [
            helper.make_node("MatMul", ["h", weight(f"w{t}", (d, d))], [f"{t}0"], name=f"{t}_proj"),
            helper.make_node("Reshape", [f"{t}0", const(f"{t}_shape", np.array([0, 0, heads, dh]))],
                             [f"{t}1"], name=f"{t}_reshape"),
            helper.make_node("Transpose", [f"{t}1"], [f"{t}2"], name=f"{t}_transpose",
                             perm=[0, 2, 3, 1] if t == "k" else [0, 2, 1, 3]),
        ]
    nodes += [
        helper.make_node("MatMul", ["q2", "k2"], ["s0"], name="qk"),
        helper.make_node("Mul", ["s0", const("inv_sqrt", np.array(1 / np.sqrt(dh), npt))], ["s1"],
                         name="scale"),
        helper.make_node("Softmax", ["s1"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v2"], ["o0"], name="pv"),
        helper.make_node("Transpose", ["o0"], ["o1"], name="o_transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["o1", const("o_shape", np.array([0, 0, d]))], ["o2"],
                         name="o_reshape"),
        helper.make_node("MatMul", ["o2", weight("wo", (d, d))], ["o3"], name="o_proj"),
        helper.make_node("Add", ["x", "o3"], ["r1"], name="residual1"),
        helper.make_node("LayerNormalization", ["r1", weight("ln2_g", (d,)),
                                                weight("ln2_b", (d,))], ["h2"], name="ln2",
                         axis=-1),
        helper.make_node("MatMul", ["h2", weight("w1", (d, ff))], ["f0"], name="fc1"),
        helper.make_node("Gelu", ["f0"], ["f1"], name="gelu"),
        helper.make_node("MatMul", ["f1", weight("w2", (ff, d))], ["f2"], name="fc2"),
        helper.make_node("Add", ["r1", "f2"], ["y"], name="residual2"),
    ]
    return _save(nodes, inits, [helper.make_tensor_value_info("x", ft, ["N", "S", d])],
                 [helper.make_tensor_value_info("y", ft, ["N", "S", d])], path, opset=20)


def conv_chain(path: Path, *, channels: int = 128, hw: int = 28, depth: int = 3,
               dtype: str = "fp32", qdq: bool = False) -> Path:
    """``depth`` x (3x3 Conv C->C + ReLU); ``qdq`` puts INT8 Q/DQ on every conv's data input
    (per tensor) and weights (per channel), as ``quantkit quantize`` places them."""
    ft, npt = (F16, np.float16) if dtype == "fp16" else (F32, np.float32)
    rng = _rng(3)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x = "x"
    for i in range(depth):
        w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(np.zeros(channels, npt), f"b{i}"))
        wname = f"w{i}"
        if qdq:
            scale = np.abs(w).reshape(channels, -1).max(axis=1) / 127
            wq = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
            inits += [numpy_helper.from_array(wq, f"wq{i}"),
                      numpy_helper.from_array(scale.astype(npt), f"ws{i}"),
                      numpy_helper.from_array(np.zeros(channels, np.int8), f"wz{i}"),
                      numpy_helper.from_array(np.array(4.0 / 127, npt), f"xs{i}"),
                      numpy_helper.from_array(np.array(0, np.int8), f"xz{i}")]
            nodes += [
                helper.make_node("QuantizeLinear", [x, f"xs{i}", f"xz{i}"], [f"xq{i}"],
                                 name=f"x{i}_Q"),
                helper.make_node("DequantizeLinear", [f"xq{i}", f"xs{i}", f"xz{i}"],
                                 [f"xd{i}"], name=f"x{i}_DQ"),
                helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", f"wz{i}"], [wname],
                                 name=f"w{i}_DQ", axis=0)]
            x = f"xd{i}"
        else:
            inits.append(numpy_helper.from_array(w.astype(npt), wname))
        nodes += [helper.make_node("Conv", [x, wname, f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1] * 4, kernel_shape=[3, 3]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    return _save(nodes, inits, [helper.make_tensor_value_info("x", ft, ["N", channels, hw, hw])],
                 [helper.make_tensor_value_info("y", ft, ["N", channels, hw, hw])], path)


def bottleneck(path: Path, *, c: int = 64, mid: int = 32, out: int = 128,
               dtype: str = "fp16") -> Path:
    """A ResNet bottleneck with a strided projection shortcut: c1 (1x1) -> c2 (3x3, stride 2)
    -> c3 (1x1), down (1x1, stride 2) on the input, Add, ReLU."""
    ft, npt = (F16, np.float16) if dtype == "fp16" else (F32, np.float32)
    rng = _rng(4)
    inits: list[onnx.TensorProto] = []

    def conv(name: str, x: str, cin: int, cout: int, k: int, stride: int) -> onnx.NodeProto:
        w = (rng.standard_normal((cout, cin, k, k)) * 0.05).astype(npt)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"),
                      numpy_helper.from_array(np.zeros(cout, npt), f"{name}_b")])
        return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_y"],
                                name=name, kernel_shape=[k, k], strides=[stride, stride],
                                pads=[k // 2] * 4)

    nodes = [
        conv("c1", "x", c, mid, 1, 1),
        helper.make_node("Relu", ["c1_y"], ["r1"], name="relu1"),
        conv("c2", "r1", mid, mid, 3, 2),
        helper.make_node("Relu", ["c2_y"], ["r2"], name="relu2"),
        conv("c3", "r2", mid, out, 1, 1),
        conv("down", "x", c, out, 1, 2),
        helper.make_node("Add", ["c3_y", "down_y"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu3"),
    ]
    return _save(nodes, inits, [helper.make_tensor_value_info("x", ft, ["N", c, 28, 28])],
                 [helper.make_tensor_value_info("y", ft, ["N", out, 14, 14])], path)


def packed_qkv_attention(path: Path, *, d: int = 64, heads: int = 2) -> Path:
    """INT8 attention with one packed Q/K/V projection, as BERT exports it (FP16 rest).

    ``x -> Q/DQ -> MatMul(INT8 W [d, 3d] + DQ) + bias -> Reshape [N, S, 3, H, dh] ->
    Transpose (2, 0, 3, 1, 4) -> Gather 0/1/2 -> Q/DQ each -> softmax(q k^T) -> Q/DQ -> @ v``:
    the Q/DQ placement of quantkit's writer on a BERT encoder (the inputs of every matrix
    product quantized, the attention's too).
    """
    rng = _rng(3)
    dh = d // heads
    inits: list[onnx.TensorProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def qdq(tensor: str, scale: float) -> tuple[list[onnx.NodeProto], str]:
        s, z = const(f"{tensor}_s", np.array(scale, np.float16)), const(f"{tensor}_z",
                                                                        np.array(0, np.int8))
        return [helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"],
                                 name=f"{tensor}_Q"),
                helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"],
                                 name=f"{tensor}_DQ")], f"{tensor}_dq"

    w = rng.integers(-127, 128, (d, 3 * d)).astype(np.int8)
    wscale = const("w_scale", np.full(3 * d, 0.01, np.float16))
    nodes, xq = qdq("x", 0.05)
    nodes += [
        helper.make_node("DequantizeLinear", [const("w", w), wscale,
                                              const("w_zero", np.zeros(3 * d, np.int8))],
                         ["w_dq"], name="w_DQ", axis=1),
        helper.make_node("MatMul", [xq, "w_dq"], ["qkv0"], name="qkv_proj"),
        helper.make_node("Add", ["qkv0", const("b", np.zeros(3 * d, np.float16))], ["qkv1"],
                         name="qkv_bias"),
        helper.make_node("Reshape", ["qkv1", const("qkv_shape", np.array([0, 0, 3, heads, dh]))],
                         ["qkv2"], name="qkv_reshape"),
        helper.make_node("Transpose", ["qkv2"], ["qkv3"], name="qkv_transpose",
                         perm=[2, 0, 3, 1, 4]),
    ]
    parts = {}
    for i, t in enumerate("qkv"):
        nodes.append(helper.make_node("Gather", ["qkv3", const(f"i{t}", np.array(i))], [t],
                                      name=f"{t}_gather", axis=0))
        src = t
        if t == "k":
            nodes.append(helper.make_node("Transpose", ["k"], ["kt"], name="k_transpose",
                                          perm=[0, 1, 3, 2]))
            src = "kt"
        more, parts[t] = qdq(src, 0.05)
        nodes += more
    nodes.append(helper.make_node("MatMul", [parts["q"], parts["k"]], ["s0"], name="qk"))
    nodes.append(helper.make_node("Softmax", ["s0"], ["p"], name="softmax", axis=-1))
    more, pq = qdq("p", 1 / 127)
    nodes += more
    nodes += [
        helper.make_node("MatMul", [pq, parts["v"]], ["o0"], name="pv"),
        helper.make_node("Transpose", ["o0"], ["o1"], name="o_transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["o1", const("o_shape", np.array([0, 0, d]))], ["y"],
                         name="o_reshape"),
    ]
    return _save(nodes, inits, [helper.make_tensor_value_info("x", F16, ["N", "S", d])],
                 [helper.make_tensor_value_info("y", F16, ["N", "S", d])], path, opset=19)


def matmul_layernorm(path: Path, *, d: int = 256, quantize_output: bool = False) -> Path:
    """INT8 ``x @ W + b``, residual add of ``x``, LayerNorm (FP16 rest): a BERT sub-layer.

    ``quantize_output``: Q/DQ on the GEMM's output and on the residual as well (the residual
    stream in INT8, as demoBERT's ``-iln`` engines run it).
    """
    rng = _rng(4)
    inits: list[onnx.TensorProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def qdq(tensor: str) -> list[onnx.NodeProto]:
        s, z = const(f"{tensor}_s", np.array(0.05, np.float16)), const(f"{tensor}_z",
                                                                       np.array(0, np.int8))
        return [helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"],
                                 name=f"{tensor}_Q"),
                helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"],
                                 name=f"{tensor}_DQ")]

    nodes = qdq("x")
    nodes += [
        helper.make_node("DequantizeLinear", [
            const("w", rng.integers(-127, 128, (d, d)).astype(np.int8)),
            const("w_scale", np.full(d, 0.01, np.float16)), const("w_zero", np.zeros(d, np.int8))],
            ["w_dq"], name="w_DQ", axis=1),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["m"], name="fc"),
        helper.make_node("Add", ["m", const("b", np.zeros(d, np.float16))], ["mb"], name="bias"),
    ]
    if quantize_output:
        nodes += qdq("mb")
    nodes += [
        helper.make_node("Add", ["mb_dq" if quantize_output else "mb",
                                 "x_dq" if quantize_output else "x"], ["r"], name="residual"),
        helper.make_node("LayerNormalization", ["r", const("g", np.ones(d, np.float16)),
                                                const("beta", np.zeros(d, np.float16))],
                         ["y"], name="ln", axis=-1),
    ]
    return _save(nodes, inits, [helper.make_tensor_value_info("x", F16, ["N", "S", d])],
                 [helper.make_tensor_value_info("y", F16, ["N", "S", d])], path, opset=19)
