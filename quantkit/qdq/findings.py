"""What :func:`quantkit.qdq.lint.lint_model` reports: finding codes, findings, per-node info."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from quantkit.qdq.rules import QUANTIZABLE_OPS
from quantkit.qdq.view import QDQ_OPS

Severity = Literal["error", "warning", "info"]

#: code -> (severity, meaning).
CODES: dict[str, tuple[Severity, str]] = {
    "QK100": ("error", "the model fails onnx.checker (invalid ONNX)"),
    "QK101": ("error", "int32 DequantizeLinear (quantized bias, ONNX Runtime's default)"),
    "QK102": ("error", "non-zero zero point (asymmetric quantization)"),
    "QK103": ("error", "quantized type TensorRT rejects (uint8 weights, int16, int32 Q...)"),
    "QK104": ("warning", "uint8 activation quantization instead of symmetric int8"),
    "QK105": ("warning", "per-tensor weight scale where per-channel is expected"),
    "QK106": ("error", "per-channel weight scale on the wrong axis (node runs in float)"),
    "QK107": ("error", "quantized (int8) constant not consumed by DequantizeLinear"),
    "QK108": ("error", "QOperator / integer op TensorRT does not support (QLinearConv...)"),
    "QK109": ("error", "per-channel activation quantization (consumer runs in float)"),
    "QK110": ("error", "per-channel Q/DQ in a model with opset < 13"),
    "QK111": ("warning", "opset outside the TensorRT ONNX parser's range 9-24"),
    "QK112": ("warning", "Q/DQ between a compute op and the activation/BN fused into it"),
    "QK113": ("warning", "residual Add with both branches quantized"),
    "QK114": ("info", "residual Add with neither branch quantized next to an INT8 conv"),
    "QK115": ("warning", "DequantizeLinear feeding only float ops or graph outputs"),
    "QK116": ("warning", "QuantizeLinear without a following DequantizeLinear"),
    "QK117": ("warning", "compute op with only one of data/weight quantized"),
    "QK118": ("info", "compute op left in float while most compute ops are INT8"),
    "QK119": ("warning", "Q/DQ scale type differs from the float type around it (Cast pair)"),
    "QK120": ("error", "element type mismatch at a Q/DQ (scale type vs data type)"),
    "QK121": ("warning", "Q and DQ of a pair use different scales or zero points"),
    "QK122": ("error", "zero, negative or non-finite scale"),
    "QK123": ("error", "FP8 Q/DQ in a model with opset < 19"),
    "QK124": ("error", "compute op with FP8 on one input and INT8 on the other"),
    "QK125": ("error", "FP8 Q/DQ on an op TensorRT does not run in FP8 (ConvTranspose...)"),
    "QK126": ("error", "FP8 type other than E4M3FN (E5M2, FNUZ)"),
}


@dataclass(frozen=True)
class Finding:
    """One lint finding.

    Attributes:
        code: ``QK1xx`` (see :data:`CODES`).
        severity: ``error``, ``warning`` or ``info``.
        node: name of the node at fault (None for model-level findings and initializers).
        tensor: the tensor concerned, if any.
        message: what is wrong for TensorRT and how to fix it.
    """

    code: str
    severity: Severity
    node: str | None
    tensor: str | None
    message: str


@dataclass(frozen=True)
class ScaleInfo:
    """The Q/DQ scale on one input of a compute node.

    Attributes:
        input: input position on the node; tensor: the (dequantized) tensor it reads.
        kind: ``weight`` (quantizes a constant) or ``activation``.
        qtype: quantized type (``int8``, ``uint8``...).
        channels: number of scales (1 = per tensor); axis: their axis when per channel.
        scale_min, scale_max: smallest and largest scale (None when not a constant).
    """

    input: int
    tensor: str
    kind: Literal["weight", "activation"]
    qtype: str
    channels: int
    axis: int | None
    scale_min: float | None
    scale_max: float | None


@dataclass(frozen=True)
class NodeInfo:
    """Precision and quantization of one node, as TensorRT would see it.

    Attributes:
        name: node name (``op_type_index`` when the node has none).
        op_type: ONNX op type.
        precision: ``int8`` (``fp8``) for a compute op whose data and weight inputs are both
            dequantized from that type and usable by TensorRT; otherwise the float type it
            computes in (``fp32``, ``fp16``, ``bf16``); for Q/DQ nodes the quantized type;
            ``unsupported`` for QOperator ops; ``-`` when unknown.
        weights: ``per-channel`` / ``per-tensor`` for compute ops with a quantized weight;
            weight_axis: the axis of per-channel weight scales.
        scales: Q/DQ scales of the node's inputs (compute ops).
        notes: short remarks, then the codes of the findings on this node.
    """

    name: str
    op_type: str
    precision: str
    weights: str | None = None
    weight_axis: int | None = None
    scales: tuple[ScaleInfo, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class LintReport:
    """Result of :func:`lint_model`: findings (errors first) and per-node precision."""

    source: str
    opset: int
    findings: list[Finding] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)

    def count(self, severity: Severity) -> int:
        """Number of findings of one severity."""
        return sum(f.severity == severity for f in self.findings)

    @property
    def has_errors(self) -> bool:
        """Whether any finding is an error."""
        return self.count("error") > 0

    def summary(self) -> dict[str, Any]:
        """Counts: findings by severity, nodes, Q/DQ nodes, compute ops by precision."""
        compute = Counter(n.precision for n in self.nodes if n.op_type in QUANTIZABLE_OPS)
        return {"errors": self.count("error"), "warnings": self.count("warning"),
                "info": self.count("info"), "opset": self.opset, "nodes": len(self.nodes),
                "qdq_nodes": sum(n.op_type in QDQ_OPS for n in self.nodes),
                "compute_ops": sum(compute.values()), "compute_precision": dict(compute)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``nodes``, ``findings`` and ``summary``."""
        return {"nodes": [asdict(n) for n in self.nodes],
                "findings": [asdict(f) for f in self.findings], "summary": self.summary()}


__all__ = ["CODES", "Finding", "LintReport", "NodeInfo", "ScaleInfo", "Severity"]
