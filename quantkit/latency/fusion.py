"""Fold INT8/FP8 epilogue kernels into their convolution/GEMM, as TensorRT compiles them.

TensorRT-RTX 1.7.1 compiles an INT8 (or FP8) convolution or GEMM as two kernels: the tensor-core
kernel writes its accumulator as FP32, and a separate element-wise kernel reads it back to apply
the scale, bias, activation, residual add and the next layer's Quantize (observed in every Q/DQ
model built here: ``conv_myl0_1`` -> ``__myl_MulAddReluMulMinMaxRounCast_myl0_2``, the second
kernel naming the convolution's ONNX node again). TensorRT fuses that epilogue into the INT8
kernel itself (its Q/DQ fusion: a convolution with a following Quantize writes INT8), so the
FP32 round trip and one launch do not exist in a TensorRT engine. FP16/FP32 convolutions are
already compiled with their epilogue by TensorRT-RTX.

A pair is folded when, in engine order,

* the first kernel runs matrix math in ``int8``/``fp8`` and writes a floating-point tensor,
* the next kernel runs no matrix math, reads a tensor of exactly that type and shape, and names
  the first kernel's matrix node among its ONNX layers.

The folded kernel keeps the first kernel's name and precision, adds the FLOPs and ONNX layers of
both, and moves the bytes of both minus the intermediate tensor written and read back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

_LOW_PRECISION = frozenset({"int8", "fp8", "int4", "fp4"})
_FLOAT = frozenset({"fp32", "fp16", "bf16"})


@dataclass(frozen=True)
class Work:
    """What one (possibly folded) kernel computes and moves, before timing."""

    name: str
    type: str
    precision: str
    matrix_flops: float
    vector_flops: float
    bytes: float
    onnx_layers: tuple[str, ...]
    matrix_node: str | None = None
    fused: tuple[str, ...] = ()


def _tensor_bytes(dtype: str, dims: Sequence[int], sizes: Mapping[str, float]) -> float:
    return math.prod(dims) * sizes.get(dtype, 4)


def fold_epilogues(kernels: Sequence[Mapping[str, Any]], work: Sequence[Work],
                   sizes: Mapping[str, float]) -> list[Work]:
    """``work`` (one entry per kernel of ``kernels``) with INT8/FP8 epilogues folded in.

    Args:
        kernels: the sidecar's ``engine_layers`` entries (types and dims of the tensors).
        work: the per-kernel work, parallel to ``kernels``.
        sizes: bytes per element of each data type.
    """
    out: list[Work] = []
    i = 0
    while i < len(work):
        first = work[i]
        if i + 1 < len(work) and _foldable(kernels[i], first, kernels[i + 1], work[i + 1]):
            second = work[i + 1]
            dtype = kernels[i]["outputs"][0]
            between = _tensor_bytes(dtype, kernels[i]["output_dims"][0], sizes)
            layers = first.onnx_layers + tuple(n for n in second.onnx_layers
                                               if n not in first.onnx_layers)
            out.append(replace(first, vector_flops=first.vector_flops + second.vector_flops,
                               bytes=first.bytes + second.bytes - 2 * between,
                               onnx_layers=layers, fused=(*first.fused, second.name)))
            i += 2
            continue
        out.append(first)
        i += 1
    return out


def _foldable(k1: Mapping[str, Any], w1: Work, k2: Mapping[str, Any], w2: Work) -> bool:
    if w1.precision not in _LOW_PRECISION or w1.matrix_flops <= 0 or w2.matrix_flops > 0:
        return False
    outputs, out_dims = k1.get("outputs") or [], k1.get("output_dims") or []
    if len(outputs) != 1 or outputs[0] not in _FLOAT or not out_dims or out_dims[0] is None:
        return False
    if w1.matrix_node is None or w1.matrix_node not in w2.onnx_layers:
        return False
    reads = zip(k2.get("inputs") or [], k2.get("input_dims") or [], strict=False)
    return any(dtype == outputs[0] and dims == out_dims[0] for dtype, dims in reads)
