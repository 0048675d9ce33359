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

TensorRT quantizes weights per output channel (docs/tensorrt_rules.md#qdq-placement), so the
range imbalance of ``W1``'s output channels costs nothing there; what equalization still changes
is the spread of ``W2``'s input columns inside each per-channel scale, and the per-channel ranges
of the activation between the two layers (scaled by ``1 / s_i``), which is quantized per tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from quantkit.graph import GraphIndex
from quantkit.options import RunOptions
from quantkit.transforms._common import (
    Layer,
    TransformReport,
    as_layer,
    channel_range,
    data_run,
    first_batches,
    grouped_range,
    in_channel_map,
    int_attrs,
    record,
    set_initializer,
    use_count,
    verify_fp32,
    warn_skipped,
    working_copy,
)
from quantkit.transforms.fold_bn import fold_batchnorm as fold

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


#: decides whether one node may sit between two layers of a pair: None, or why not.
JoinCheck = Callable[[onnx.NodeProto, GraphIndex], "str | None"]


@dataclass
class _Pair:
    first: Layer
    second: Layer
    via: list[str]
    channels: int
    groups: np.ndarray  # input channel of each element of the second weight
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    via_nodes: list[onnx.NodeProto] = field(default_factory=list)


def _pad_ok(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    attrs = {a.name: a for a in node.attribute}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "constant"
    if mode != "constant":
        return f"Pad in {mode} mode is not homogeneous"
    if len(node.input) > 2 and node.input[2] and (
            not index.is_initializer(node.input[2]) or np.any(index.array(node.input[2]) != 0)):
        return "Pad with a non-zero (or non-constant) value"
    if "value" in attrs and attrs["value"].f != 0.0:
        return "Pad with a non-zero value"
    if "pads" in attrs:
        pads = list(attrs["pads"].ints)
    elif len(node.input) > 1 and index.is_initializer(node.input[1]):
        pads = [int(v) for v in index.array(node.input[1]).ravel()]
    else:
        return "Pad with non-constant pads (cannot check that channels are not padded)"
    if len(node.input) > 3 and node.input[3]:
        return "Pad with an axes input"
    half = len(pads) // 2
    if half < 2 or pads[1] or pads[half + 1]:
        return "Pad that pads the channel axis"
    return None


def homogeneous_join(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """Equalization's rule: None when ``f(s x) = s f(x)`` per channel for ``s > 0``."""
    op = node.op_type
    if op == "Pad":
        return _pad_ok(node, index)
    if op in HOMOGENEOUS or op == "LeakyRelu":
        return None
    if op == "PRelu":
        return None if index.is_initializer(node.input[1]) else "PRelu with a non-constant slope"
    return _WHY_NOT.get(op, f"{op} is not a positively homogeneous op quantkit knows to "
                            "commute with per-channel scaling")


def clip_bounds(node: onnx.NodeProto, index: GraphIndex) -> tuple[float, float] | None:
    """``(min, max)`` of a Clip with constant bounds (None otherwise; +-inf when absent)."""
    if node.op_type != "Clip":
        return None
    bounds = [float("-inf"), float("inf")]
    for a in node.attribute:  # opset < 11
        if a.name in ("min", "max"):
            bounds[a.name == "max"] = float(a.f)
    for k, name in enumerate(node.input[1:3]):
        if name:
            if not index.is_initializer(name) or index.array(name).size != 1:
                return None
            bounds[k] = float(index.array(name).ravel()[0])
    return bounds[0], bounds[1]


def _peek(tensor: str, index: GraphIndex) -> str | None:
    """The next layer along a chain of single readers from ``tensor`` (for reports)."""
    for _ in range(16):
        readers = index.consumer_nodes(tensor)
        if len(readers) != 1:
            return None
        layer = as_layer(readers[0], index)
        if layer is not None:
            return layer.name
        if not readers[0].output:
            return None
        tensor = readers[0].output[0]
    return None


def _follow(first: Layer, index: GraphIndex, uses: dict[str, int], outputs: set[str],
            join: JoinCheck) -> tuple[Layer | None, list[onnx.NodeProto], bool, str | None,
                                      str | None]:
    """Walk from ``first``'s output to the next layer.

    Returns ``(second, via, flattened, reason, next layer)``; ``next layer`` names the layer
    behind the node that stopped the walk (None when there is none or several readers).
    """
    tensor = first.node.output[0]
    via: list[onnx.NodeProto] = []
    flattened = False
    while True:
        readers = index.consumer_nodes(tensor)
        if tensor in outputs:
            return None, via, flattened, f"tensor '{tensor}' is a graph output", \
                _peek(tensor, index)
        if len(readers) != 1 or uses.get(tensor, 0) != 1:
            names = ", ".join(r.name for r in readers[:3])
            return None, via, flattened, (f"tensor '{tensor}' has {len(readers)} readers "
                                          f"({names}); rewriting it would change what the "
                                          "others read"), None
        node = readers[0]
        if node.input[0] != tensor:
            return None, via, flattened, f"'{tensor}' is not the data input of {node.name}", \
                None
        second = as_layer(node, index)
        if second is not None:
            return second, via, flattened, None, None
        if node.op_type == "Flatten":
            reason = None
            if int_attrs(node).get("axis", 1) != 1 or first.node.op_type != "Conv" or flattened:
                reason = "Flatten other than axis=1 after a Conv"
            flattened = True
        else:
            reason = join(node, index)
        via.append(node)
        if reason is not None:
            return None, via, flattened, reason, _peek(node.output[0], index) \
                if node.output else None
        tensor = node.output[0]


def find_pairs(model: onnx.ModelProto, join: JoinCheck = homogeneous_join,
               ) -> tuple[list[_Pair], list[dict[str, object]]]:
    """Layer pairs in graph order, and the candidates skipped (with reasons).

    ``join`` decides which ops may sit between the two layers (default: equalization's
    positively homogeneous ops). A skipped entry names the layer behind the blocking op as
    ``second`` when there is one, and is marked ``terminal`` when no layer follows at all.
    """
    index = GraphIndex(model)
    uses = use_count(model)
    outputs = {o.name for o in model.graph.output}
    pairs: list[_Pair] = []
    skipped: list[dict[str, object]] = []
    for node in model.graph.node:
        first = as_layer(node, index)
        if first is None:
            continue
        second, via_nodes, flat, reason, behind = _follow(first, index, uses, outputs, join)
        via = [n.op_type for n in via_nodes]
        entry: dict[str, object] = {"first": first.name,
                                    "second": second.name if second else behind, "via": via}
        if second is None and behind is None and "readers" not in str(reason):
            entry["terminal"] = True
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
        pairs.append(_Pair(first, second, via, channels, groups, np.ones(channels),
                           via_nodes))
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


def _relu6_join(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    if clip_bounds(node, index) == (0.0, 6.0):
        return None
    return homogeneous_join(node, index)


def relu6_to_relu_nodes(model: onnx.ModelProto) -> list[str]:
    """Replace each ``Clip(0, 6)`` that is the only obstacle of a pair by ``Relu``, in place.

    Node names are kept; returns the names replaced. Changes the FP32 function.
    """
    pairs, _ = find_pairs(model, _relu6_join)
    clips = {n.name: n for p in pairs for n in p.via_nodes if n.op_type == "Clip"}
    bounds = {i for n in clips.values() for i in n.input[1:] if i}
    for node in clips.values():
        node.op_type = "Relu"
        del node.input[1:]
        del node.attribute[:]
    used = use_count(model)
    unused = {b for b in bounds if not used.get(b)}
    for coll in (model.graph.initializer, model.graph.input):
        for t in [t for t in coll if t.name in unused]:
            coll.remove(t)
    return sorted(clips, key=[n.name for n in model.graph.node].index)


def equalize(model: onnx.ModelProto, *, iterations: int = 20, tolerance: float = 1e-4,
             fold_batchnorm: bool = True, relu6_to_relu: bool = False, data: Any = None,
             verify_samples: int = 32, options: RunOptions | None = None,
             **settings: Any) -> tuple[onnx.ModelProto, TransformReport]:
    """Cross-layer equalization of every eligible pair of ``model`` (not modified).

    Args:
        model: the FP32 model.
        iterations: at most this many sweeps over all pairs (chains need several).
        tolerance: stop when no scale of a sweep differs from 1 by more than this.
        fold_batchnorm: fold BatchNormalization into the layer before it first
            (:func:`quantkit.transforms.fold_bn.fold_batchnorm`, recorded as its own
            transform when it folds anything), as the paper does.
        relu6_to_relu: opt-in: replace each ``Clip(0, 6)`` (ReLU6) that joins a layer pair by
            ``Relu`` (node name kept) so the pair can be equalized. This **changes the FP32
            function** (values above 6 are no longer clipped); the replaced nodes are listed in
            the report (``settings["replaced_relu6"]``).
        data: optional calibration data (anything :func:`quantkit.data.open_source`
            accepts): the first ``verify_samples`` samples check that the equalized model's
            outputs equal the model's before equalization (after the ReLU6 replacement, whose
            own output change is measured and reported); a difference beyond float tolerance
            is refused.
        verify_samples: samples for that check.
        options: how the data is read (batch size, sample cap, reading options) and the
            ONNX Runtime providers (:class:`~quantkit.options.RunOptions`); or, as keywords,
            the option groups or their fields (``batch_size``, ``max_samples``,
            ``data_options``, ``providers``...), as for :func:`quantkit.capture.calibrate`.
        **settings: those keywords (any other is refused).

    Returns:
        The equalized model (weights rewritten, node names unchanged, the report stored in
        its ``quantkit.transforms`` metadata) and the report: per pair the scales' min / max /
        geometric mean and the channel-range spread (max/min) of both weights before and
        after; per skipped candidate the reason (also logged as a warning).

    Raises:
        PipelineError: with ``data``, the outputs changed beyond float tolerance.
    """
    run = data_run(options, settings, "equalize")
    batch_size, data_options, providers = run.batch_size, run.data_options, run.providers
    original = model
    if fold_batchnorm and any(n.op_type == "BatchNormalization" for n in model.graph.node):
        model, _ = fold(model)
    out = working_copy(model)
    replaced = relu6_to_relu_nodes(out) if relu6_to_relu else []
    reference = onnx.ModelProto()
    if data is not None:
        reference.CopyFrom(out)
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
    if relu6_to_relu:
        report.settings.update(relu6_to_relu=True, replaced_relu6=replaced)
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
    if data is not None:
        batches = first_batches(data, original, verify_samples, batch_size=batch_size,
                                data_options=data_options)
        if replaced:  # measured, not refused: the opt-in changes the function by design
            change = verify_fp32(original, reference, batches, atol=float("inf"),
                                 providers=providers, transform="equalize")
            report.settings["relu6_to_relu_output_change"] = {
                k: change[k] for k in ("samples", "output", "max_abs_diff", "max_rel_diff")}
        report.settings["verified"] = verify_fp32(reference, out, batches, providers=providers,
                                                  transform="equalize")
    record(out, report)
    logger.info("%s in %d sweep(s)", report.summary(), sweeps)
    if replaced:
        logger.info("equalize: replaced %d ReLU6 (Clip 0..6) by Relu: %s", len(replaced),
                    ", ".join(replaced[:8]) + (" ..." if len(replaced) > 8 else ""))
    clipped = any(str(s["reason"]).startswith("Clip") for s in report.skipped)
    warn_skipped(logger, report, hint="ReLU6 (Clip) joins are reached with "
                 "relu6_to_relu=True (changes the FP32 function; measure "
                 "it)." if clipped and not relu6_to_relu else "")
    return out, report


__all__ = ["HOMOGENEOUS", "JoinCheck", "clip_bounds", "equalization_scales", "equalize",
           "find_pairs", "homogeneous_join", "pair_ranges", "relu6_to_relu_nodes"]
