"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", section 4.1).

For two layers joined by positively homogeneous ops, ``y = W2 f(W1 x + b1) + b2`` with
``f(s x) = s f(x)`` for ``s > 0``, scaling output channel ``i`` of the first layer (weights and
bias) by ``1 / s_i`` and input channel ``i`` of the second by ``s_i`` leaves ``y`` unchanged.
With ``r1_i`` the range (max |w|) of output channel ``i`` of ``W1`` and ``r2_i`` that of input
channel ``i`` of ``W2``, the paper's choice ``s_i = sqrt(r1_i * r2_i) / r2_i`` makes both
ranges ``sqrt(r1_i * r2_i)``: equal, which maximises the per-tensor precision of the pair.
Chains (``L1 -> L2 -> L3``) are iterated until the scales stop changing.

What joins a pair (each intermediate tensor must have exactly one reader and not be a graph
output): ``Relu``, ``LeakyRelu``, ``PRelu``, ``Identity``, ``Dropout``, ``MaxPool``,
``AveragePool``, ``GlobalAveragePool``, ``GlobalMaxPool``, a zero-constant ``Pad`` that does not
pad channels, and ``Flatten(axis=1)`` between a Conv and a Gemm/MatMul. Not homogeneous, so
those pairs are skipped and reported: ``Clip`` (ReLU6: ``min(x / s, 6) != min(x, 6) / s``),
``HardSwish``, ``HardSigmoid``, ``Sigmoid``, ``Tanh``, ``Gelu``... ``BatchNormalization`` is
folded into the layer before it first (:mod:`quantkit.transforms.fold_bn`; exporters usually
have done it). Node names never change; only weight and bias initializers are rewritten.

TensorRT quantizes weights per output channel (TENSORRT_FACTS.md, Q/DQ placement), so the
range imbalance of ``W1``'s output channels costs nothing there; what equalization still changes
is the spread of ``W2``'s input columns inside each per-channel scale, and the per-channel ranges
of the activation between the two layers (scaled by ``1 / s_i``), which is quantized per tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx

from quantkit.qdq._model import GraphIndex
from quantkit.transforms._common import (
    Layer,
    TransformReport,
    as_layer,
    channel_range,
    grouped_range,
    in_channel_map,
    int_attrs,
    record,
    set_initializer,
    use_count,
    working_copy,
)

logger = logging.getLogger(__name__)

#: ops with ``f(s x) = s f(x)`` per channel for ``s > 0`` (channel axis unchanged).
HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "PRelu", "Identity", "Dropout", "MaxPool",
                         "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
_WHY_NOT = {
    "Clip": "Clip (ReLU6) is not positively homogeneous: min(x/s, 6) != min(x, 6)/s",
    "HardSwish": "HardSwish is not positively homogeneous (x * relu6(x + 3) / 6)",
    "HardSigmoid": "HardSigmoid is not positively homogeneous",
    "Sigmoid": "Sigmoid is not positively homogeneous",
    "Tanh": "Tanh is not positively homogeneous",
    "Gelu": "Gelu is not positively homogeneous",
    "Add": "Add joins another branch (or adds a constant): scaling one input would change "
           "the sum",
    "Softmax": "Softmax is not positively homogeneous",
    "BatchNormalization": "BatchNormalization between the layers that could not be folded "
                          "into the layer before it (see the fold_batchnorm report)",
}


@dataclass
class _Pair:
    first: Layer
    second: Layer
    via: list[str]
    channels: int
    groups: np.ndarray  # input channel of each element of the second weight
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))


def _pad_ok(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    attrs = {a.name: a for a in node.attribute}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "constant"
    if mode != "constant":
        return f"Pad in {mode} mode is not homogeneous"
    if len(node.input) > 2 and node.input[2] and (
            not index.is_constant(node.input[2]) or np.any(index.array(node.input[2]) != 0)):
        return "Pad with a non-zero (or non-constant) value"
    if "value" in attrs and attrs["value"].f != 0.0:
        return "Pad with a non-zero value"
    if "pads" in attrs:
        pads = list(attrs["pads"].ints)
    elif len(node.input) > 1 and index.is_constant(node.input[1]):
        pads = [int(v) for v in index.array(node.input[1]).ravel()]
    else:
        return "Pad with non-constant pads (cannot check that channels are not padded)"
    if len(node.input) > 3 and node.input[3]:
        return "Pad with an axes input"
    half = len(pads) // 2
    if half < 2 or pads[1] or pads[half + 1]:
        return "Pad that pads the channel axis"
    return None


def _follow(first: Layer, index: GraphIndex, uses: dict[str, int],
            outputs: set[str]) -> tuple[Layer | None, list[str], bool, str | None]:
    """Walk from ``first``'s output to the next layer: ``(second, via, flattened, reason)``."""
    tensor = first.node.output[0]
    via: list[str] = []
    flattened = False
    while True:
        readers = index.consumers.get(tensor, [])
        if tensor in outputs:
            return None, via, flattened, f"tensor '{tensor}' is a graph output"
        if len(readers) != 1 or uses.get(tensor, 0) != 1:
            names = ", ".join(r.name for r in readers[:3])
            return None, via, flattened, (f"tensor '{tensor}' has {len(readers)} readers "
                                          f"({names}); scaling it would change the others")
        node = readers[0]
        if node.input[0] != tensor:
            return None, via, flattened, f"'{tensor}' is not the data input of {node.name}"
        second = as_layer(node, index)
        if second is not None:
            return second, via, flattened, None
        op = node.op_type
        reason = None
        if op == "Pad":
            reason = _pad_ok(node, index)
        elif op == "Flatten":
            if int_attrs(node).get("axis", 1) != 1 or first.node.op_type != "Conv" or flattened:
                reason = "Flatten other than axis=1 after a Conv"
            flattened = True
        elif op == "PRelu" or op == "LeakyRelu" or op in HOMOGENEOUS:
            if op == "PRelu" and not index.is_constant(node.input[1]):
                reason = "PRelu with a non-constant slope"
        else:
            reason = _WHY_NOT.get(op, f"{op} is not a positively homogeneous op quantkit "
                                      "knows to commute with per-channel scaling")
        via.append(op)
        if reason is not None:
            return None, via, flattened, reason
        tensor = node.output[0]


def find_pairs(model: onnx.ModelProto) -> tuple[list[_Pair], list[dict[str, object]]]:
    """Equalizable pairs in graph order, and the candidates skipped (with reasons)."""
    index = GraphIndex(model)
    uses = use_count(model)
    outputs = {o.name for o in model.graph.output}
    pairs: list[_Pair] = []
    skipped: list[dict[str, object]] = []
    for node in model.graph.node:
        first = as_layer(node, index)
        if first is None:
            continue
        second, via, flat, reason = _follow(first, index, uses, outputs)
        entry: dict[str, object] = {"first": first.name,
                                    "second": second.name if second else None, "via": via}
        if reason is None and second is not None:
            reason = first.reason or second.reason
            if reason is None and second.node.op_type == "Conv" and flat:
                reason = "Flatten before a Conv"
            for lay in (first, second):
                for t in (lay.weight, lay.bias):
                    if reason is None and t is not None and uses.get(t, 0) != 1:
                        reason = f"initializer '{t}' of {lay.name} is shared with other nodes"
        if reason is not None or second is None:
            skipped.append({**entry, "reason": reason})
            continue
        w1, w2 = index.array(first.weight), index.array(second.weight)
        channels = int(w1.shape[first.out_axis])
        groups = in_channel_map(second, w2, channels)
        if groups is None:
            skipped.append({**entry, "reason": f"{second.name} does not read the "
                                               f"{channels} channels of {first.name}"})
            continue
        if first.bias is not None and index.array(first.bias).size != channels:
            skipped.append({**entry, "reason": f"bias of {first.name} is not per channel"})
            continue
        pairs.append(_Pair(first, second, via, channels, groups, np.ones(channels)))
    return pairs, skipped


def pair_ranges(index: GraphIndex, pair: _Pair) -> tuple[np.ndarray, np.ndarray]:
    """``(r1, r2)``: ranges of the first layer's output and second layer's input channels."""
    r1 = channel_range(index.array(pair.first.weight), pair.first.out_axis)
    r2 = grouped_range(index.array(pair.second.weight), pair.groups, pair.channels)
    return r1, r2


def equalization_scales(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """The paper's ``s_i = sqrt(r1_i * r2_i) / r2_i``; 1 where either range is 0."""
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1, dtype=np.float64)
    s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
    return s


def _apply(index: GraphIndex, pair: _Pair, s: np.ndarray) -> None:
    f, g = pair.first, pair.second
    w1 = index.array(f.weight).astype(np.float64)
    shape = [1] * w1.ndim
    shape[f.out_axis] = -1
    set_initializer(index, f.weight, w1 / s.reshape(shape))
    if f.bias is not None:
        b = index.array(f.bias)
        set_initializer(index, f.bias, (b.astype(np.float64).reshape(-1) / s).reshape(b.shape))
    w2 = index.array(g.weight).astype(np.float64)
    set_initializer(index, g.weight, w2 * s[pair.groups])


def _spread(r: np.ndarray) -> float:
    """Max / min of the non-zero channel ranges (1 = balanced)."""
    nz = r[r > 0]
    return float(nz.max() / nz.min()) if nz.size else 1.0


def equalize(model: onnx.ModelProto, *, iterations: int = 20, tolerance: float = 1e-4,
             fold_batchnorm: bool = True) -> tuple[onnx.ModelProto, TransformReport]:
    """Cross-layer equalization of every eligible pair of ``model`` (not modified).

    Args:
        model: the FP32 model.
        iterations: at most this many sweeps over all pairs (chains need several).
        tolerance: stop when no scale of a sweep differs from 1 by more than this.
        fold_batchnorm: fold BatchNormalization into the layer before it first
            (:func:`quantkit.transforms.fold_bn.fold_batchnorm`, recorded as its own
            transform when it folds anything), as the paper does.

    Returns:
        The equalized model (weights rewritten, node names unchanged, the report stored in
        its ``quantkit.transforms`` metadata) and the report: per pair the scales' min / max /
        geometric mean and the channel-range spread (max/min) of both weights before and
        after; per skipped candidate the reason.
    """
    if fold_batchnorm and any(n.op_type == "BatchNormalization" for n in model.graph.node):
        from quantkit.transforms.fold_bn import fold_batchnorm as fold

        model, _ = fold(model)
    out = working_copy(model)
    pairs, skipped = find_pairs(out)
    index = GraphIndex(out)
    before = [pair_ranges(index, p) for p in pairs]
    sweeps = 0
    for sweeps in range(1, iterations + 1):  # noqa: B007 (reported below)
        worst = 0.0
        for p in pairs:
            s = equalization_scales(*pair_ranges(index, p))
            _apply(index, p, s)
            p.scale = p.scale * s
            worst = max(worst, float(np.abs(s - 1).max(initial=0.0)))
        if worst <= tolerance:
            break
    report = TransformReport("equalize", {"iterations": iterations, "tolerance": tolerance,
                                          "sweeps": sweeps if pairs else 0})
    for p, (r1, r2) in zip(pairs, before, strict=True):
        a1, a2 = pair_ranges(index, p)
        logs = np.log(p.scale)
        report.changed.append({
            "first": p.first.name, "second": p.second.name, "via": p.via,
            "channels": p.channels,
            "scale_min": float(p.scale.min()), "scale_max": float(p.scale.max()),
            "scale_geomean": float(np.exp(logs.mean())),
            "first_range_spread": [_spread(r1), _spread(a1)],
            "second_range_spread": [_spread(r2), _spread(a2)],
            "max_range_mismatch": float(np.max(np.abs(a1 - a2) / np.maximum(a1, 1e-30),
                                               initial=0.0)),
        })
    report.skipped.extend(skipped)
    record(out, report)
    logger.info("%s in %d sweep(s)", report.summary(), sweeps)
    return out, report


__all__ = ["HOMOGENEOUS", "equalization_scales", "equalize", "find_pairs", "pair_ranges"]
