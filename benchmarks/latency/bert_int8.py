"""INT8 BERT as demoBERT's published INT8 engines run it: packed Q/K/V and residuals in INT8.

demoBERT's INT8 engines (``inference_benchmark.sh``: ``builder.py --int8 --fp16 --strict -iln
-imh`` for ``--gpu Ampere``, the setting its README names for the A100, L4 and L40S tables;
likewise for Turing/T4) run

* every GEMM with INT8 input and INT8 output;
* ``-imh``: the fused attention plugin with INT8 Q/K/V, probabilities and context;
* ``-iln``: the skip-LayerNorm plugin with INT8 inputs (the GEMM output and the residual) and an
  INT8 output, so the residual stream between layers is INT8 (one byte per element).

quantkit's writer already places Q/DQ on the inputs of every matrix product, the attention's
too (TensorRT-RTX compiles the attention as one INT8 ``_gemm_mha_v2`` kernel), but

* keeps the residual adds in FP16: each add + LayerNorm kernel then reads and writes the
  residual stream in FP16. :func:`quantize_residual_adds` adds what ``-iln`` does: Q/DQ on both
  inputs of every Add that feeds a LayerNormalization (reusing the Q/DQ a tensor already has),
  so TensorRT-RTX compiles each add + LayerNorm as a kernel reading and writing INT8;
* quantizes q, k and v each with its own scale after the packed projection is split into heads:
  the QKV GEMM then writes FP16, three kernels quantize and transpose the slices, and
  TensorRT-RTX dequantizes and rearranges the INT8 QKV weight at run time. demoBERT's QKV GEMM
  writes the packed output in INT8 with one dynamic range (the calibrated range of that tensor;
  in its QAT path the largest of the query, key and value ranges) and the attention plugin reads
  it. :func:`quantize_packed_qkv` does the same: Q/DQ on the packed output with its calibrated
  scale, and that scale for the q, k and v Q/DQ too. TensorRT-RTX then compiles an INT8 QKV GEMM
  on the INT8 weight and one kernel writing the three INT8 heads.

Scales come from the same calibration as the rest of the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.calibrators.cache import ScaleTable


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _dequantized(model: onnx.ModelProto, tensor: str) -> str | None:
    """The output of the Q -> DQ pair the writer put on ``tensor``, if it has one."""
    cons = _consumers(model)
    for q in cons.get(tensor, []):
        if q.op_type == "QuantizeLinear":
            for dq in cons.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return str(dq.output[0])
    return None


def quantize_residual_adds(model: onnx.ModelProto, scales: ScaleTable) -> int:
    """Q/DQ on both inputs of each Add feeding a LayerNormalization (in place); returns the count.

    Raises:
        ValueError: the model has no activation Q/DQ to copy the scale type from, or no
            calibrated scale for a residual tensor.
    """
    inits = {t.name: t for t in model.graph.initializer}
    like = next((n for n in model.graph.node if n.op_type == "QuantizeLinear"
                 and n.input[0] not in inits), None)
    if like is None:
        raise ValueError("the model has no activation QuantizeLinear to copy the scale type from")
    scale_type = numpy_helper.to_array(inits[like.input[1]]).dtype
    cons = _consumers(model)
    adds = [n.name for n in model.graph.node
            if n.op_type == "Add" and len(n.input) == 2
            and not any(i in inits for i in n.input)
            and any(c.op_type == "LayerNormalization" for c in cons.get(n.output[0], []))]
    by_name = {n.name: n for n in model.graph.node}
    tensors = list(dict.fromkeys(t for a in adds for t in by_name[a].input))
    new: dict[str, str] = {}
    for tensor in tensors:
        existing = _dequantized(model, tensor)
        if existing is not None:
            new[tensor] = existing
            continue
        if tensor not in scales.scales:
            raise ValueError(f"no calibrated scale for residual tensor '{tensor}'")
        new[tensor] = _insert_qdq(model, tensor, float(scales.scales[tensor]), scale_type)
    by_name = {n.name: n for n in model.graph.node}
    for add in adds:
        node = by_name[add]
        for i, tensor in enumerate(list(node.input)):
            node.input[i] = new[tensor]
    return len(adds)


def _insert_qdq(model: onnx.ModelProto, tensor: str, scale: float,
                scale_type: np.dtype) -> str:
    """A Q -> DQ pair on ``tensor`` right after its producer; returns the DQ output."""
    base = f"{tensor}_int8"
    s = numpy_helper.from_array(np.array(scale, dtype=scale_type), f"{base}_scale")
    z = numpy_helper.from_array(np.array(0, dtype=np.int8), f"{base}_zero_point")
    model.graph.initializer.extend([s, z])
    q = helper.make_node("QuantizeLinear", [tensor, s.name, z.name], [f"{base}_quantized"],
                         name=f"{base}_QuantizeLinear")
    dq = helper.make_node("DequantizeLinear", [f"{base}_quantized", s.name, z.name],
                          [f"{base}_dequantized"], name=f"{base}_DequantizeLinear")
    nodes = list(model.graph.node)
    at = next((i + 1 for i, n in enumerate(nodes) if tensor in n.output), 0)
    nodes[at:at] = [q, dq]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return str(dq.output[0])


#: ops that only move data: q, k and v reach their Q/DQ from the packed output through these
_SHAPE_OPS = frozenset({"Reshape", "Transpose", "Gather", "Squeeze", "Unsqueeze", "Split",
                        "Slice"})


def quantize_packed_qkv(model: onnx.ModelProto, scales: ScaleTable) -> int:
    """One Q/DQ, one scale for each packed Q/K/V output (in place); returns how many.

    A packed output is a tensor from which three or more activation QuantizeLinear nodes are
    reached through data-movement ops only (BERT's ``qkv`` bias Add: reshape, transpose,
    gather into q, k and v).

    Raises:
        ValueError: no calibrated scale for a packed tensor.
    """
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    slices: dict[str, list[onnx.NodeProto]] = {}
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        src = q.input[0]
        while src in producer and producer[src].op_type in _SHAPE_OPS:
            src = producer[src].input[0]
        if src != q.input[0]:
            slices.setdefault(src, []).append(q)
    done = 0
    for packed, qs in slices.items():
        if len(qs) < 3 or _dequantized(model, packed) is not None:
            continue
        if packed not in scales.scales:
            raise ValueError(f"no calibrated scale for the packed Q/K/V tensor '{packed}'")
        scale = float(scales.scales[packed])
        scale_type = numpy_helper.to_array(inits[qs[0].input[1]]).dtype
        for q in qs:  # one range for q, k and v, as the packed output's
            inits[q.input[1]].CopyFrom(numpy_helper.from_array(
                np.array(scale, dtype=scale_type), q.input[1]))
        readers = [n.name for n in model.graph.node if packed in n.input]
        dq = _insert_qdq(model, packed, scale, scale_type)
        by_name = {n.name: n for n in model.graph.node}
        for name in readers:
            node = by_name[name]
            for i, tensor in enumerate(node.input):
                if tensor == packed:
                    node.input[i] = dq
        done += 1
    return done
