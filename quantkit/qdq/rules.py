"""Which ops TensorRT runs in INT8 and which of their inputs get Q/DQ.

From docs/tensorrt_rules.md#qdq-placement: symmetric INT8 with zero
point 0; activations per tensor; weights per channel on the output-channel axis (axis 0 for
Conv and Gemm with ``transB=1``, axis 1 for ConvTranspose, the last axis of a MatMul weight);
biases are never quantized; for a residual Add only the branch that is not fused into the
preceding convolution is quantized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: compute ops whose inputs are quantized when the plan says int8.
QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: compute ops TensorRT-RTX 1.7 compiles as FP8 kernels (SM89/SM120): an FP8 ConvTranspose is
#: parsed but compiled as an FP32 kernel on dequantized weights (docs/tensorrt_rules.md#fp8).
FP8_OPS = frozenset({"Conv", "Gemm", "MatMul"})
#: the quantized precisions of a precision plan.
QUANTIZED_PRECISIONS = frozenset({"int8", "fp8"})
#: ops that can absorb a residual Add (the Add's other branch is quantized instead).
FUSES_RESIDUAL = frozenset({"Conv", "ConvTranspose"})

InputKind = Literal["activation", "weight"]


@dataclass(frozen=True)
class QuantInput:
    """One input of a quantized node.

    Attributes:
        index: input position.
        kind: ``activation`` (per-tensor scale from calibration) or ``weight`` (per-channel
            scale computed from the constant).
        axis: per-channel axis for weights.
    """

    index: int
    kind: InputKind
    axis: int | None = None


def quantized_inputs(op_type: str, attrs: dict[str, int], is_constant: list[bool],
                     ranks: list[int | None]) -> list[QuantInput]:
    """The inputs of a quantizable node that get Q/DQ.

    Args:
        op_type: the node's op type.
        attrs: integer attributes of the node (``transB`` for Gemm).
        is_constant: per input, whether it is a constant (initializer or Constant node).
        ranks: per input, its rank if known.
    """
    if op_type in ("Conv", "ConvTranspose"):
        out = [QuantInput(0, "activation")]
        if len(is_constant) > 1:
            axis = 1 if op_type == "ConvTranspose" else 0
            out.append(QuantInput(1, "weight", axis) if is_constant[1]
                       else QuantInput(1, "activation"))
        return out
    if op_type == "Gemm":
        b_axis = 0 if attrs.get("transB", 0) else 1
        a = (QuantInput(0, "weight", 1 if attrs.get("transA", 0) else 0) if is_constant[0]
             else QuantInput(0, "activation"))
        b = QuantInput(1, "weight", b_axis) if is_constant[1] else QuantInput(1, "activation")
        return [a, b]
    if op_type == "MatMul":
        out = []
        for i in (0, 1):
            if is_constant[i]:
                rank = ranks[i] or 2
                # output channels of B are its last axis; A as a constant is per tensor
                out.append(QuantInput(i, "weight", rank - 1 if i == 1 and rank >= 2 else None))
            else:
                out.append(QuantInput(i, "activation"))
        return out
    return []
