"""Tiny explicitly quantized / FP16 / mixed ONNX models for backend tests, built in code.

Every model follows TensorRT's Q/DQ placement rules (docs/tensorrt_rules.md#qdq-placement):
symmetric INT8, zero point 0, activations per tensor, weights per channel on axis 0, biases not
quantized. The expected per-node precision is returned next to the path so tests can compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
F16 = TensorProto.FLOAT16


class _Graph:
    """A small builder: nodes + initializers with unique names."""

    def __init__(self, seed: int = 0, float_type: int = F32) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.ftype = float_type

    @property
    def np_float(self) -> type[np.floating]:
        return np.float16 if self.ftype == F16 else np.float32

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def qdq(self, x: str, name: str, amax: float = 4.0, ftype: int | None = None) -> str:
        """Per-tensor activation Q/DQ (scale in the given float type, int8 zero point 0)."""
        dt = np.float16 if (ftype or self.ftype) == F16 else np.float32
        s = self.init(f"{name}_scale", np.array(amax / 127, dtype=dt))
        z = self.init(f"{name}_zp", np.array(0, dtype=np.int8))
        q = self.node("QuantizeLinear", [x, s, z], f"{name}_q", f"{name}_QuantizeLinear")
        return self.node("DequantizeLinear", [q, s, z], f"{name}_dq", f"{name}_DequantizeLinear")

    def qweight(self, w: np.ndarray, name: str, ftype: int | None = None) -> str:
        """Per-channel (axis 0) INT8 weight initializer + DequantizeLinear."""
        dt = np.float16 if (ftype or self.ftype) == F16 else np.float32
        amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        scale = (amax / 127).astype(dt)
        shape = (-1,) + (1,) * (w.ndim - 1)
        wq = np.clip(np.round(w / scale.astype(np.float32).reshape(shape)), -127, 127)
        self.init(f"{name}_wq", wq.astype(np.int8))
        self.init(f"{name}_wscale", scale)
        self.init(f"{name}_wzp", np.zeros(w.shape[0], dtype=np.int8))
        return self.node("DequantizeLinear", [f"{name}_wq", f"{name}_wscale", f"{name}_wzp"],
                         f"{name}_w", f"{name}_w_DequantizeLinear", axis=0)

    def weight(self, shape: tuple[int, ...], scale: float = 0.3) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              plan: dict[str, str] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 9
        if plan is not None:
            write_plan(model, plan)
        onnx.checker.check_model(model)
        return model


def write_plan(model: onnx.ModelProto, precisions: dict[str, str]) -> None:
    """Store a ``quantkit-plan/1`` document in ``metadata_props["quantkit.plan"]``."""
    ops = {n.name: n.op_type for n in model.graph.node}
    doc = {"format": "quantkit-plan/1",
           "nodes": {n: {"op_type": ops.get(n, "?"), "precision": p}
                     for n, p in precisions.items()}}
    del model.metadata_props[:]
    helper.set_model_props(model, {"quantkit.plan": json.dumps(doc)})


def int8_cnn(path: Path, *, batch: int | str = "N", plan: dict[str, str] | None = None
             ) -> tuple[Path, dict[str, str]]:
    """FP32 Conv -> Relu -> Conv -> Relu -> GAP -> Flatten -> Gemm, every compute op INT8.

    Input ``x``: float32[batch, 3, 8, 8]; output ``logits``: float32[batch, 10].
    """
    g = _Graph()
    x = g.qdq("x", "x")
    w1 = g.qweight(g.weight((8, 3, 3, 3)), "conv1")
    b1 = g.init("conv1_b", g.weight((8,), 0.1))
    c1 = g.node("Conv", [x, w1, b1], "c1", "/conv1/Conv", pads=[1] * 4)
    r1 = g.node("Relu", [c1], "r1", "/relu1/Relu")
    w2 = g.qweight(g.weight((8, 8, 3, 3)), "conv2")
    b2 = g.init("conv2_b", g.weight((8,), 0.1))
    c2 = g.node("Conv", [g.qdq(r1, "r1"), w2, b2], "c2", "/conv2/Conv", pads=[1] * 4)
    r2 = g.node("Relu", [c2], "r2", "/relu2/Relu")
    gap = g.node("GlobalAveragePool", [r2], "gap", "/gap/GlobalAveragePool")
    flat = g.node("Flatten", [gap], "flat", "/flatten/Flatten")
    wf = g.qweight(g.weight((10, 8)), "fc")
    bf = g.init("fc_b", g.weight((10,), 0.1))
    g.node("Gemm", [g.qdq(flat, "flat"), wf, bf], "logits", "/fc/Gemm", transB=1)
    xi = helper.make_tensor_value_info("x", F32, [batch, 3, 8, 8])
    yo = helper.make_tensor_value_info("logits", F32, [batch, 10])
    onnx.save(g.model([xi], [yo], plan), str(path))
    expected = {"/conv1/Conv": "int8", "/conv2/Conv": "int8", "/fc/Gemm": "int8",
                "/relu1/Relu": "fp32", "/relu2/Relu": "fp32", "/gap/GlobalAveragePool": "fp32"}
    return path, expected


def fp16_cnn(path: Path, *, batch: int | str = 1) -> tuple[Path, dict[str, str]]:
    """Cast(fp16) -> Conv -> Relu -> Conv -> Relu -> GAP -> Flatten -> Gemm -> Cast(fp32).

    FP16 initializers and tensors, FP32 model I/O. Input ``x``: float32[batch, 3, 8, 8].
    """
    g = _Graph(seed=1, float_type=F16)
    x = g.node("Cast", ["x"], "x16", "/cast_in/Cast", to=F16)
    w1 = g.init("w1", g.weight((8, 3, 3, 3)).astype(np.float16))
    c1 = g.node("Conv", [x, w1], "c1", "/conv1/Conv", pads=[1] * 4)
    r1 = g.node("Relu", [c1], "r1", "/relu1/Relu")
    w2 = g.init("w2", g.weight((8, 8, 3, 3)).astype(np.float16))
    c2 = g.node("Conv", [r1, w2], "c2", "/conv2/Conv", pads=[1] * 4)
    r2 = g.node("Relu", [c2], "r2", "/relu2/Relu")
    gap = g.node("GlobalAveragePool", [r2], "gap", "/gap/GlobalAveragePool")
    flat = g.node("Flatten", [gap], "flat", "/flatten/Flatten")
    wf = g.init("wf", g.weight((10, 8)).astype(np.float16))
    y16 = g.node("Gemm", [flat, wf], "y16", "/fc/Gemm", transB=1)
    g.node("Cast", [y16], "logits", "/cast_out/Cast", to=F32)
    xi = helper.make_tensor_value_info("x", F32, [batch, 3, 8, 8])
    yo = helper.make_tensor_value_info("logits", F32, [batch, 10])
    onnx.save(g.model([xi], [yo]), str(path))
    expected = {"/conv1/Conv": "fp16", "/conv2/Conv": "fp16", "/fc/Gemm": "fp16",
                "/relu1/Relu": "fp16", "/relu2/Relu": "fp16", "/gap/GlobalAveragePool": "fp16"}
    return path, expected


def mixed_cnn(path: Path, *, plan: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    """An FP16 graph with one INT8 conv (FP16 Q/DQ scales), one FP16 conv and one FP32 island.

    ``x`` float32[1, 4, 8, 8] -> Cast fp16 -> Q/DQ -> /int8/Conv -> Relu -> /fp16/Conv -> Relu
    -> Cast fp32 -> /fp32/Conv -> Cast fp16 -> Relu -> Cast fp32 -> ``y``.
    """
    g = _Graph(seed=2, float_type=F16)
    x = g.node("Cast", ["x"], "x16", "/cast_in/Cast", to=F16)
    w1 = g.qweight(g.weight((8, 4, 3, 3)), "int8conv")
    c1 = g.node("Conv", [g.qdq(x, "x16"), w1], "c1", "/int8/Conv", pads=[1] * 4)
    r1 = g.node("Relu", [c1], "r1", "/relu1/Relu")
    w2 = g.init("w2", g.weight((8, 8, 3, 3)).astype(np.float16))
    c2 = g.node("Conv", [r1, w2], "c2", "/fp16/Conv", pads=[1] * 4)
    r2 = g.node("Relu", [c2], "r2", "/relu2/Relu")
    r2f = g.node("Cast", [r2], "r2f", "/island_in/Cast", to=F32)
    w3 = g.init("w3", g.weight((8, 8, 3, 3)))
    c3 = g.node("Conv", [r2f, w3], "c3", "/fp32/Conv", pads=[1] * 4)
    c3h = g.node("Cast", [c3], "c3h", "/island_out/Cast", to=F16)
    r3 = g.node("Relu", [c3h], "r3", "/relu3/Relu")
    g.node("Cast", [r3], "y", "/cast_out/Cast", to=F32)
    xi = helper.make_tensor_value_info("x", F32, [1, 4, 8, 8])
    yo = helper.make_tensor_value_info("y", F32, [1, 8, 8, 8])
    onnx.save(g.model([xi], [yo], plan), str(path))
    expected = {"/int8/Conv": "int8", "/fp16/Conv": "fp16", "/fp32/Conv": "fp32",
                "/relu1/Relu": "fp16", "/relu2/Relu": "fp16", "/relu3/Relu": "fp16"}
    return path, expected


def matmul_model(path: Path) -> tuple[Path, dict[str, str]]:
    """Dynamic [B, S, 16] input -> INT8 MatMul (Q/DQ both sides) -> Softmax, FP32.

    Two dynamic dims (``B``, ``S``), used for optimisation-profile tests.
    """
    g = _Graph(seed=3)
    w = g.qweight(g.weight((16, 8)).T.copy(), "mm")  # stored [8, 16]: axis 0 = output channels
    wt = g.node("Transpose", [w], "wt", "/mm/Transpose", perm=[1, 0])
    m = g.node("MatMul", [g.qdq("x", "x"), wt], "m", "/mm/MatMul")
    g.node("Softmax", [m], "y", "/softmax/Softmax", axis=-1)
    xi = helper.make_tensor_value_info("x", F32, ["B", "S", 16])
    yo = helper.make_tensor_value_info("y", F32, ["B", "S", 8])
    onnx.save(g.model([xi], [yo]), str(path))
    return path, {"/mm/MatMul": "int8", "/softmax/Softmax": "fp32"}


def unsupported_model(path: Path) -> Path:
    """A model the TensorRT ONNX parser rejects: a DequantizeLinear with an INT32 input (a
    quantized bias as ONNX Runtime writes it, docs/tensorrt_rules.md#rejected-qdq-forms)."""
    g = _Graph(seed=4)
    x = g.qdq("x", "x")
    w = g.qweight(g.weight((4, 3, 1, 1)), "conv")
    g.init("bias_q", np.array([1, 2, 3, 4], dtype=np.int32))
    g.init("bias_scale", np.array(0.001, dtype=np.float32))
    g.init("bias_zp", np.array(0, dtype=np.int32))
    b = g.node("DequantizeLinear", ["bias_q", "bias_scale", "bias_zp"], "bias",
               "/conv/bias_DequantizeLinear")
    g.node("Conv", [x, w, b], "y", "/conv/Conv")
    xi = helper.make_tensor_value_info("x", F32, [1, 3, 4, 4])
    yo = helper.make_tensor_value_info("y", F32, [1, 4, 4, 4])
    onnx.save(g.model([xi], [yo]), str(path))
    return path
