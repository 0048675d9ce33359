"""Fold inference-mode BatchNormalization into the Conv / ConvTranspose / Gemm before it.

``BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta`` is an affine map per channel, so for
``y = W x + b`` it is the layer with ``W' = W * k`` (``k = gamma / sqrt(var + eps)`` along the
output channel axis) and ``b' = (b - mean) * k + beta``. Exporters usually fold it already;
paddle2onnx models (PP-OCR) and some torch exports with training-mode graphs do not, and
cross-layer equalization (:mod:`quantkit.transforms.equalize`) needs it folded to see the pair.

A BatchNormalization is folded when its input comes from a Conv / ConvTranspose (``group ==
1``) / Gemm (``transB`` respected) whose output nothing else reads and is not a graph output,
with constant weights, and the BN's parameters are constants (opset 9+ inference form: one
output). The layer then writes the BN's output tensor, so every consumer is unchanged; the BN
node is removed and the layer keeps its name. The arithmetic runs in float64 and is stored in
the weights' dtype.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph import GraphIndex
from quantkit.transforms._common import TransformReport, record, use_count, working_copy

logger = logging.getLogger(__name__)

_LAYERS = ("Conv", "ConvTranspose", "Gemm")


def _attr(node: onnx.NodeProto, name: str, default: float | int) -> float | int:
    for a in node.attribute:
        if a.name == name:
            return float(a.f) if a.type == onnx.AttributeProto.FLOAT else int(a.i)
    return default


def _reason(bn: onnx.NodeProto, layer: onnx.NodeProto | None, index: GraphIndex,
            uses: dict[str, int], outputs: set[str]) -> str | None:
    if len(bn.output) > 1 and any(bn.output[1:]):
        return "training-mode BatchNormalization (running statistics as outputs)"
    if not all(index.is_initializer(t) for t in bn.input[1:5]):
        return "BatchNormalization parameters are not constants"
    if layer is None or layer.op_type not in _LAYERS:
        return "input does not come from a Conv, ConvTranspose or Gemm"
    if uses.get(layer.output[0], 0) != 1 or layer.output[0] in outputs:
        return f"{layer.name}'s output has other readers"
    if len(layer.input) < 2 or not index.is_initializer(layer.input[1]):
        return f"{layer.name}'s weight is not a constant"
    if uses.get(layer.input[1], 0) != 1:
        return f"{layer.name}'s weight is shared with another layer"
    if len(layer.input) > 2 and layer.input[2] and not index.is_initializer(layer.input[2]):
        return f"{layer.name}'s bias is not a constant"
    if layer.op_type == "ConvTranspose" and int(_attr(layer, "group", 1)) != 1:
        return "grouped ConvTranspose"
    if layer.op_type == "Gemm" and int(_attr(layer, "transA", 0)):
        return "Gemm with transA"
    return None


@dataclass(frozen=True)
class BatchNormStats:
    """What a folded BatchNormalization said about its output distribution, per channel.

    In inference form the BN output of channel ``i`` has mean ``beta[i]`` and standard
    deviation ``|gamma[i]|`` over the training data (the statistics high-bias absorption uses,
    Nagel et al. 2019 sec. 4.1.2). float64.
    """

    beta: np.ndarray
    gamma: np.ndarray


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, TransformReport]:
    """Fold every eligible BatchNormalization into its producer (``model`` is not modified).

    Returns:
        The folded model (report in its ``quantkit.transforms`` metadata) and the report: the
        folded ``(layer, batchnorm)`` pairs and, per BatchNormalization left, the reason.
    """
    out, report, _ = fold_batchnorm_with_stats(model)
    return out, report


def fold_batchnorm_with_stats(model: onnx.ModelProto,
                              ) -> tuple[onnx.ModelProto, TransformReport,
                                         dict[str, BatchNormStats]]:
    """:func:`fold_batchnorm`, also returning each folded BN's ``beta`` / ``gamma``.

    The third element maps the name of the layer a BN was folded into to its
    :class:`BatchNormStats` (they are gone from the folded model; the report keeps only
    names, to keep the model's metadata small).
    """
    stats: dict[str, BatchNormStats] = {}
    out = working_copy(model)
    index = GraphIndex(out)
    uses = use_count(out)
    graph_outputs = {o.name for o in out.graph.output}
    report = TransformReport("fold_batchnorm", {})
    drop: list[onnx.NodeProto] = []
    for bn in [n for n in out.graph.node if n.op_type == "BatchNormalization"]:
        layer = index.producer_node(bn.input[0])
        why = _reason(bn, layer, index, uses, graph_outputs)
        if why is not None or layer is None:
            report.skipped.append({"node": bn.name, "reason": why})
            continue
        gamma, beta, mean, var = (index.array(t).astype(np.float64) for t in bn.input[1:5])
        k = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        w_name = layer.input[1]
        w = index.array(w_name)
        w64 = w.astype(np.float64)
        if layer.op_type == "Conv":
            w64 = w64 * k.reshape(-1, *([1] * (w.ndim - 1)))
        elif layer.op_type == "ConvTranspose":  # [C_in, C_out, k...]
            w64 = w64 * k.reshape(1, -1, *([1] * (w.ndim - 2)))
        elif int(_attr(layer, "transB", 0)):  # Gemm, W [N, K]
            w64 = w64 * k.reshape(-1, 1)
        else:  # Gemm, W [K, N]
            w64 = w64 * k.reshape(1, -1)
        has_bias = len(layer.input) > 2 and bool(layer.input[2])
        b = index.array(layer.input[2]).astype(np.float64) if has_bias else np.zeros_like(k)
        b_new = (b - mean) * k + beta
        _set(out, index, w_name, w64.astype(w.dtype), uses)
        bias_name = f"{layer.name}/folded_bias"
        if has_bias and uses.get(layer.input[2], 0) == 1:
            _set(out, index, layer.input[2], b_new.astype(w.dtype), uses)
        else:  # no bias yet, or a shared one: a new initializer for this layer
            out.graph.initializer.append(numpy_helper.from_array(b_new.astype(w.dtype),
                                                                 bias_name))
            if has_bias:
                layer.input[2] = bias_name
            else:
                while len(layer.input) < 3:
                    layer.input.append("")
                layer.input[2] = bias_name
        old = layer.output[0]
        layer.output[0] = bn.output[0]
        for vi in [v for v in out.graph.value_info if v.name == old]:
            out.graph.value_info.remove(vi)
        drop.append(bn)
        report.changed.append({"layer": layer.name, "batchnorm": bn.name,
                               "channels": int(k.size)})
        stats[layer.name] = BatchNormStats(beta.copy(), gamma.copy())
    for bn in drop:
        out.graph.node.remove(bn)
    record(out, report)
    logger.info("%s", report.summary())
    return out, report, stats


def _set(model: onnx.ModelProto, index: GraphIndex, name: str, value: np.ndarray,
         uses: dict[str, int]) -> None:
    """Overwrite initializer ``name`` (read by this layer only) with ``value``."""
    if uses.get(name, 0) != 1:
        raise ValueError(f"{name} is shared")  # pragma: no cover - checked by the caller
    tensor = index.initializers[name]
    tensor.CopyFrom(numpy_helper.from_array(value, name))


__all__ = ["BatchNormStats", "fold_batchnorm", "fold_batchnorm_with_stats"]
