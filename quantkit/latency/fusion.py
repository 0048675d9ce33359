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

An epilogue that names a row reduction (LayerNormalization, Softmax, a Reduce*) is not folded:
TensorRT's GEMM/convolution epilogues are element-wise, and a LayerNorm needs a whole row that
spans the GEMM's output tiles (TensorRT-RTX's own FP16 engines, and demoBERT's engines, run the
add + LayerNorm after a GEMM as a kernel of its own). The two kernels stay, but the tensor
between them is counted as TensorRT would write it from the GEMM's epilogue: quantized (1 byte
for INT8) where the graph quantizes the GEMM's output, else in the network's float type (the
epilogue kernel's float outputs), not as TensorRT-RTX's FP32 accumulator.

**Weight kernels** (:func:`fold_constant_kernels`). TensorRT-RTX 1.7.1 also compiles, for an INT8
weight that is rearranged before its GEMM (BERT's packed Q/K/V projection, whose output is
reshaped and transposed into heads), a kernel that reads only constants -- the INT8 weight and its
scales -- and writes the dequantized, rearranged weight in FP16 on every run
(``__myl_CastMulCastReshTranReshSlicSlicSlicConc``); the GEMM then reads that FP16 copy. The same
rearrangement of an FP16 weight is done at build time (the FP16 engine has no such kernel), and
TensorRT stores quantized weights in the engine and runs the GEMM on them
(docs/tensorrt_rules.md#weights-are-prepared-at-build-time). So a kernel with no runtime input
costs nothing, and the first kernel reading its output reads it at the stored quantized type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

_LOW_PRECISION = frozenset({"int8", "fp8", "int4", "fp4"})
_FLOAT = frozenset({"fp32", "fp16", "bf16"})
#: ops that reduce over a row: not part of a GEMM/convolution epilogue in TensorRT
REDUCTION_OPS = frozenset({"LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean",
                           "ReduceSum", "ReduceMax", "GroupNormalization",
                           "InstanceNormalization", "RMSNormalization",
                           "SkipLayerNormalization"})


def quantized_type(kernels: Sequence[Mapping[str, Any]], node: str) -> str:
    """The quantized input type of the kernel running matrix node ``node`` (INT8 or FP8)."""
    for k in kernels:
        if node in (k.get("onnx_layers") or []):
            low = [t for t in k.get("inputs") or [] if t in ("int8", "fp8")]
            if low:
                return str(low[0])
    return "int8"


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
                   sizes: Mapping[str, float], *, reductions: frozenset[str] = frozenset(),
                   quantized_outputs: Mapping[str, str] | None = None) -> list[Work]:
    """``work`` (one entry per kernel of ``kernels``) with INT8/FP8 epilogues folded in.

    The epilogue is the next kernel *on the same stream* (multi-stream engines interleave
    ``signal``/``wait`` entries and other streams' kernels). The folded kernel takes the
    epilogue's place in the order: it needs everything the epilogue waited for.

    Args:
        kernels: the sidecar's ``engine_layers`` entries (types and dims of the tensors).
        work: the per-kernel work, parallel to ``kernels``.
        sizes: bytes per element of each data type.
        reductions: ONNX nodes that reduce over a row (an epilogue naming one is not folded).
        quantized_outputs: matrix node -> the quantized type TensorRT writes its output in.
    """
    first_of: dict[int, int] = {}  # epilogue index -> matrix kernel index
    work = list(work)
    for i in range(len(work)):
        j = _next_on_stream(kernels, i)
        if j is None or j in first_of or not _foldable(kernels[i], work[i], kernels[j], work[j]):
            continue
        if any(n in reductions for n in work[j].onnx_layers):
            work[i], work[j] = _narrow_between(kernels[i], work[i], kernels[j], work[j], sizes,
                                               (quantized_outputs or {}).get(
                                                   work[i].matrix_node or ""))
            continue
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


def _narrow_between(k1: Mapping[str, Any], w1: Work, k2: Mapping[str, Any], w2: Work,
                    sizes: Mapping[str, float], quantized: str | None) -> tuple[Work, Work]:
    """Both kernels, with the tensor between them at the type TensorRT would write it in."""
    dtype, dims = k1["outputs"][0], k1["output_dims"][0]
    floats = [t for t in k2.get("outputs") or [] if t in _FLOAT]
    narrow = quantized or (floats[0] if floats else dtype)
    saved = _tensor_bytes(dtype, dims, sizes) - _tensor_bytes(narrow, dims, sizes)
    if saved <= 0:
        return w1, w2
    return (replace(w1, bytes=max(0.0, w1.bytes - saved)),
            replace(w2, bytes=max(0.0, w2.bytes - saved)))


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


def _is_constant_kernel(kernel: Mapping[str, Any]) -> bool:
    """A kernel that reads no runtime tensor, only constants, and writes something."""
    return (not kernel.get("inputs") and bool(kernel.get("constants"))
            and bool(kernel.get("outputs")) and kernel.get("type") not in _SYNC)


def fold_constant_kernels(kernels: Sequence[Mapping[str, Any]], work: Sequence[Work],
                          sizes: Mapping[str, float]) -> tuple[list[Work], set[str]]:
    """``work`` with each weight kernel (no runtime input) folded into its first reader.

    The weight kernel's work becomes zero (it is listed in its reader's ``fused``); the reader's
    bytes count the tensor at the weight kernel's quantized constant type (INT8, FP8...) where
    it has one, as TensorRT stores the weight. The result is still parallel to ``kernels``.

    Returns:
        ``(work, names of the weight kernels folded)``.
    """
    out = list(work)
    folded: set[str] = set()
    for i, k in enumerate(kernels):
        if not _is_constant_kernel(k) or not (k.get("output_dims") or [None])[0]:
            continue
        dtype, dims = k["outputs"][0], k["output_dims"][0]
        reader = next((j for j in range(i + 1, len(kernels))
                       if any(t == dtype and d == dims for t, d in
                              zip(kernels[j].get("inputs") or [],
                                  kernels[j].get("input_dims") or [], strict=False))), None)
        if reader is None:
            continue
        stored = [sizes.get(t, 4) for t in k["constants"] if t in _LOW_PRECISION]
        saved = (_tensor_bytes(dtype, dims, sizes) - math.prod(dims) * min(stored)
                 if stored else 0.0)
        out[reader] = replace(out[reader], bytes=max(0.0, out[reader].bytes - saved),
                              fused=(*out[reader].fused, out[i].name))
        out[i] = replace(out[i], matrix_flops=0.0, vector_flops=0.0, bytes=0.0)
        folded.add(out[i].name)
    return out, folded
