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
* the next kernel on its stream runs no matrix math, reads a tensor of exactly that type and
  shape, and names the first kernel's matrix node among its ONNX layers.

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
    stream: int = 0
    event: int | None = None


def _tensor_bytes(dtype: str, dims: Sequence[int], sizes: Mapping[str, float]) -> float:
    return math.prod(dims) * sizes.get(dtype, 4)


def fold_epilogues(kernels: Sequence[Mapping[str, Any]], work: Sequence[Work],
                   sizes: Mapping[str, float]) -> list[Work]:
    """``work`` (one entry per kernel of ``kernels``) with INT8/FP8 epilogues folded in.

    The epilogue is the next kernel *on the same stream* (multi-stream engines interleave
    ``signal``/``wait`` entries and other streams' kernels). The folded kernel takes the
    epilogue's place in the order: it needs everything the epilogue waited for.

    Args:
        kernels: the sidecar's ``engine_layers`` entries (types and dims of the tensors).
        work: the per-kernel work, parallel to ``kernels``.
        sizes: bytes per element of each data type.
    """
    first_of: dict[int, int] = {}  # epilogue index -> matrix kernel index
    for i in range(len(work)):
        j = _next_on_stream(kernels, i)
        if j is not None and j not in first_of and _foldable(kernels[i], work[i], kernels[j],
                                                             work[j]):
            first_of[j] = i
    folded = set(first_of.values())
    out: list[Work] = []
    for j, second in enumerate(work):
        if j in folded:
            continue  # emitted at its epilogue's place
        if j not in first_of:
            out.append(second)
            continue
        i = first_of[j]
        first = work[i]
        between = _tensor_bytes(kernels[i]["outputs"][0], kernels[i]["output_dims"][0], sizes)
        layers = first.onnx_layers + tuple(n for n in second.onnx_layers
                                           if n not in first.onnx_layers)
        out.append(replace(first, vector_flops=first.vector_flops + second.vector_flops,
                           bytes=first.bytes + second.bytes - 2 * between, onnx_layers=layers,
                           fused=(*first.fused, second.name), stream=second.stream))
    return out


_SYNC = frozenset({"signal", "wait"})


def _next_on_stream(kernels: Sequence[Mapping[str, Any]], i: int) -> int | None:
    stream = kernels[i].get("stream", 0)
    for j in range(i + 1, len(kernels)):
        if kernels[j].get("stream", 0) == stream and kernels[j].get("type") not in _SYNC:
            return j
    return None


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
