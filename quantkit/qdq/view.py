"""The Q/DQ view of a graph: every QuantizeLinear/DequantizeLinear and what it quantizes.

:class:`QDQGraph` is :class:`quantkit.graph.GraphIndex` (one index, one notion of constants,
subgraph-aware consumers) plus what the linter asks about Q/DQ nodes: their scales, zero points
and axes, the DequantizeLinear behind a node input, the weight behind a Q/DQ chain and the
branches of a residual Add. Constant values are decoded only for scales and zero points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from quantkit.graph import FLOAT_TYPES, GraphIndex, attr

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: ONNX Runtime QOperator-format / integer ops that TensorRT does not parse (besides QLinear*).
QOPERATOR_OPS = frozenset({"ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeLinear",
                           "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                           "DynamicQuantizeLSTM"})
#: DequantizeLinear input types the TensorRT parser accepts ("must have type FP8, FP4, Int4,
#: Int8, or UInt8", verified on TensorRT-RTX 1.7); uint8 weights are still rejected.
ACCEPTED_QTYPES = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT8E4M3FN,
                             TensorProto.INT4, TensorProto.FLOAT4E2M1})
#: quantized types of INT8/FP8 kernels, with the precision name reported for them.
LOW_PRECISION: dict[int, str] = {TensorProto.INT8: "int8", TensorProto.FLOAT8E4M3FN: "fp8"}
#: constant types TensorRT treats as quantized constants (only allowed before a DQ).
QUANT_CONST_TYPES = frozenset({TensorProto.INT8, TensorProto.INT4, TensorProto.FLOAT8E4M3FN})
#: ops TensorRT fuses into a preceding Conv/Gemm (activations, BatchNormalization).
FUSED_AFTER_OPS = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                             "HardSwish", "Elu", "Selu", "Softplus", "PRelu",
                             "BatchNormalization"})
#: ops with no INT8 implementation to use a dequantized input for.
FLOAT_ONLY_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization",
                            "InstanceNormalization", "GroupNormalization", "Exp", "Log", "Erf",
                            "Pow", "Sqrt", "Reciprocal", "Tanh", "Sigmoid", "Gelu", "TopK",
                            "ArgMax", "ArgMin", "NonMaxSuppression"})
#: ops whose float inputs must all have one element type.
SAME_TYPE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul",
                           "Div", "Sum", "Max", "Min", "Mean", "Concat", "PRelu"})


def is_qoperator(node: onnx.NodeProto) -> bool:
    """Whether a node is a QOperator-format op (QLinearConv, ConvInteger...) or a contrib Q/DQ."""
    return (node.op_type.startswith("QLinear") or node.op_type in QOPERATOR_OPS
            or node.op_type in QDQ_OPS and node.domain not in ("", "ai.onnx"))


@dataclass(frozen=True)
class QDQ:
    """A QuantizeLinear / DequantizeLinear node of the default domain.

    Attributes:
        idx: node index.
        is_q: QuantizeLinear (True) or DequantizeLinear.
        x: input tensor; y: output tensor.
        scale: scale value (None when not a constant); scale_type: its element type.
        zp: zero point value (None when absent or not a constant).
        qtype: the quantized element type (Q output / DQ input).
        channels: number of scales (1 = per tensor).
        axis: normalised per-channel axis (None when per tensor or block-quantized).
        weight: whether it quantizes a constant (directly or through a Q of a constant).
    """

    idx: int
    is_q: bool
    x: str
    y: str
    scale: np.ndarray | None
    scale_type: int | None
    zp: np.ndarray | None
    qtype: int
    channels: int
    axis: int | None
    weight: bool


def minmax(scale: np.ndarray | None) -> tuple[float | None, float | None]:
    """Smallest and largest value of a scale array (None, None if unknown)."""
    if scale is None or not scale.size:
        return None, None
    return float(np.min(scale)), float(np.max(scale))


def fmt_array(arr: np.ndarray | None) -> str:
    """A short text for a scale or zero point: the value, or a count and range."""
    if arr is None:
        return "?"
    flat = np.asarray(arr).ravel()
    if flat.size == 1:
        return f"{flat[0]:.6g}"
    return f"[{flat.size} values {flat.min():.4g}..{flat.max():.4g}]"


class QDQGraph(GraphIndex):
    """A :class:`~quantkit.graph.GraphIndex` with the model's Q/DQ nodes described.

    Attributes:
        qdq: node index -> :class:`QDQ` for every QuantizeLinear/DequantizeLinear node of the
            default domain.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.qdq: dict[int, QDQ] = {i: self._describe(i, n) for i, n in enumerate(self.nodes)
                                    if n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx")}

    # --- Q/DQ ---------------------------------------------------------------------------------
    def _describe(self, i: int, node: onnx.NodeProto) -> QDQ:
        is_q = node.op_type == "QuantizeLinear"
        x, y = (node.input[0] if node.input else ""), (node.output[0] if node.output else "")
        s_name = node.input[1] if len(node.input) > 1 else ""
        scale = self.const_array(s_name) if s_name else None
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zp = self.const_array(zp_name) if zp_name else None
        src = self.weight_source(x)
        weight = self.is_constant(src)
        channels = 1 if scale is None else int(scale.size)
        axis = None
        if channels > 1 and attr(node, "block_size", 0) == 0:
            axis = int(attr(node, "axis", 1))
            dims = self.const_dims(src) if weight else None
            if axis < 0 and dims is not None:
                axis += len(dims)
        return QDQ(i, is_q, x, y, scale, self.elem_type(s_name), zp,
                   self.elem_type(y if is_q else x) or 0, channels, axis, weight)

    def weight_source(self, name: str) -> str:
        """The tensor behind a Q/DQ input, through data-movement ops and a Q of a constant.

        A float weight -> Q -> DQ chain (pytorch-quantization's export) yields the float weight.
        """
        src = self.source(name)
        p = self.producer_node(src)
        if p is not None and p.op_type == "QuantizeLinear":
            inner = self.source(p.input[0])
            if self.is_constant(inner):
                return inner
        return src

    def input_dq(self, name: str) -> QDQ | None:
        """The DequantizeLinear a node input comes from (through data-movement ops), if any.

        A float-to-float Cast after the DQ is looked through: TensorRT folds it (verified with
        TensorRT-RTX 1.7: DQ(fp32) -> Cast(fp16) -> Conv builds an INT8 kernel).
        """
        src = self.source(name) if name else ""
        cast = self.producer_node(src)
        if cast is not None and cast.op_type == "Cast" and \
                self.elem_type(cast.input[0]) in FLOAT_TYPES:
            src = self.source(cast.input[0])
        p = self.producer.get(src)
        q = self.qdq.get(p) if p is not None else None
        return q if q is not None and not q.is_q else None

    def weight_rank(self, dq: QDQ | None, name: str) -> int | None:
        """Rank of the constant behind a node input (through its DQ), if known."""
        dims = self.const_dims(self.weight_source(dq.x if dq is not None else name))
        return None if dims is None else len(dims)

    def branch(self, name: str, fuses: frozenset[str]) -> tuple[bool, int | None, QDQ | None]:
        """Trace an Add input back to an op that could absorb the Add.

        Returns:
            whether the input is quantized; the index of the op of ``fuses`` producing it
            (possibly through its Q/DQ pair and a BatchNormalization) or None; the Q of the pair.
        """
        dq = self.input_dq(name)
        q = None
        if dq is not None:
            p = self.producer.get(self.source(dq.x))
            q = self.qdq.get(p) if p is not None else None
            name = q.x if q is not None else dq.x
        p = self.producer.get(name)
        if p is not None and self.nodes[p].op_type == "BatchNormalization":
            p = self.producer.get(self.nodes[p].input[0])
        if p is not None and self.nodes[p].op_type in fuses:
            return dq is not None, p, q
        return dq is not None, None, q


__all__ = ["ACCEPTED_QTYPES", "FLOAT_ONLY_OPS", "FUSED_AFTER_OPS", "LOW_PRECISION", "QDQ",
           "QDQ_OPS", "QOPERATOR_OPS", "QUANT_CONST_TYPES", "SAME_TYPE_OPS", "QDQGraph",
           "fmt_array", "is_qoperator", "minmax"]
