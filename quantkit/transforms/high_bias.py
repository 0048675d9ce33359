"""High-bias absorption (Nagel et al. 2019, "Data-Free Quantization", section 4.1.2).

For ``y = W2 f(W1 x + b1) + b2`` with ``f`` = ReLU: when channel ``i`` of the pre-activation
``h = W1 x + b1`` is always at least ``c_i >= 0``, ``f(h - c) = f(h) - c`` and so

    y = W2 f(W1 x + b1 - c) + (b2 + W2 c)

The activation between the layers (quantized per tensor by TensorRT) loses the constant
offset ``c`` it carried; its range shrinks by ``c_i`` per channel. ``W2 c`` sums over the
kernel taps of a Conv (every tap reads the same channel constant), which is exact only where
the second layer never reads padding: a zero-padded border would see ``0`` instead of
``-c``.

Where ``c`` comes from:

* with ``data``: ``c_i = max(0, min h_i)`` over the calibration data (per channel, over batch
  and spatial positions), measured in one streaming pass (an auxiliary graph reduces ``-h``
  to its per-channel max inside ONNX Runtime, the helper smoothquant uses). Exact on that
  data; the first samples then verify that the outputs are unchanged
  (:func:`~quantkit.transforms._common.verify_fp32`), a difference is refused;
* without data, from the BatchNormalization folded into the first layer (the paper's form):
  ``c_i = max(0, beta_i - 3 |gamma_i|)``. Approximate: exact where ``h_i >= c_i`` (99.87 % of
  a Gaussian channel); not verified (no data).

Pairs come from the same finder as cross-layer equalization, with the joins through which a
per-channel constant shift passes exactly: ``Relu``, ``Identity``, ``Dropout``, ``MaxPool``,
``GlobalMaxPool``, ``GlobalAveragePool`` and ``Flatten(axis=1)`` (a Conv's channel owns its
block of features). Everything else is skipped with the reason in the report (and a
warning): ``Clip`` / ReLU6, ``LeakyRelu``, ``Pad``, a padded second Conv, a MatMul (no bias
input), an intermediate tensor with other readers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.data.base import check_batch_args
from quantkit.errors import InputError
from quantkit.graph import GraphIndex, UniqueNames
from quantkit.transforms._common import (
    Layer,
    TransformReport,
    record,
    set_initializer,
    verify_fp32,
    warn_skipped,
    working_copy,
)
from quantkit.transforms.equalize import _Pair, find_pairs
from quantkit.transforms.fold_bn import BatchNormStats, fold_batchnorm_with_stats
from quantkit.transforms.statistics import ActivationStatistics, ChannelStat

logger = logging.getLogger(__name__)

#: ops through which a per-channel constant shift passes unchanged: g(h - c) = g(h) - c
#: (for ReLU where h >= c). MaxPool padding never wins the max in ONNX.
SHIFT_JOINS = frozenset({"Relu", "Identity", "Dropout", "MaxPool", "GlobalMaxPool",
                         "GlobalAveragePool"})
_WHY_NOT = {
    "Clip": "Clip (ReLU6): Clip(h - c, 0, 6) != Clip(h, 0, 6) - c where h > 6 (turn ReLU6 "
            "joins into Relu with equalize(relu6_to_relu=True) first, if that is acceptable)",
    "LeakyRelu": "LeakyRelu: only Relu joins are handled",
    "PRelu": "PRelu: only Relu joins are handled",
    "Pad": "Pad: the padded border would see 0 instead of -c",
    "AveragePool": "AveragePool: its zero padding / border windows would not shift by c",
    "BatchNormalization": "BatchNormalization that could not be folded into the layer before "
                          "it",
}
#: samples (the first ones of the statistics pass) on which the outputs are verified.
VERIFY_SAMPLES = 32
#: BN form: c = beta - _SIGMAS * |gamma| (the paper's 3 standard deviations).
_SIGMAS = 3.0


def shift_join(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """None when a per-channel constant shift passes exactly through ``node``; else why not."""
    if node.op_type in SHIFT_JOINS:
        return None
    return _WHY_NOT.get(node.op_type, f"{node.op_type} between the layers: a constant shift "
                                      "does not pass through it exactly")


def _gemm_float(node: onnx.NodeProto, name: str) -> float:
    return next((float(a.f) for a in node.attribute if a.name == name), 1.0)


def _pair_reason(p: _Pair, index: GraphIndex) -> str | None:
    f, g = p.first, p.second
    if f.node.op_type == "MatMul":
        return "the first layer is a MatMul: no bias input to absorb the shift into"
    if g.node.op_type == "MatMul":
        return "the second layer is a MatMul: no bias input to absorb W2 c into"
    for lay in (f, g):
        if lay.node.op_type == "Gemm" and _gemm_float(lay.node, "beta") == 0.0:
            return "Gemm with beta=0 ignores its bias"
    if g.node.op_type == "Conv":
        attrs = {a.name: a for a in g.node.attribute}
        auto = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        if auto in ("SAME_UPPER", "SAME_LOWER") or any(pads):
            return ("the second layer pads its input with zeros: the border would read 0 "
                    "instead of -c (only unpadded Conv, or Gemm, second layers are exact)")
    n_out = int(index.array(g.weight).shape[g.out_axis])
    if g.bias is not None and index.array(g.bias).size != n_out:
        return "the second layer's bias is not per output channel"
    return None


def _ensure_bias(model: onnx.ModelProto, index: GraphIndex, layer: Layer, size: int,
                 unique: UniqueNames) -> str:
    """The layer's bias initializer, added (zeros) when it has none."""
    if layer.bias is not None:
        return layer.bias
    name = unique(f"{layer.name}/high_bias/bias")
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(size, np.float32), name))
    index.initializers[name] = model.graph.initializer[-1]
    while len(layer.node.input) < 3:
        layer.node.input.append("")
    layer.node.input[2] = name
    layer.bias = name
    return name


def _add_to_bias(index: GraphIndex, layer: Layer, delta: np.ndarray) -> None:
    assert layer.bias is not None
    beta = _gemm_float(layer.node, "beta") if layer.node.op_type == "Gemm" else 1.0
    b = index.array(layer.bias)
    set_initializer(index, layer.bias,
                    (b.astype(np.float64).reshape(-1) + delta / beta).reshape(b.shape))


def absorb(model: onnx.ModelProto, index: GraphIndex, p: _Pair, c: np.ndarray,
           unique: UniqueNames) -> None:
    """``b1 -= c``, ``b2 += W2 c`` (summed over kernel taps / flattened features)."""
    w2 = index.array(p.second.weight).astype(np.float64)
    n_out = w2.shape[p.second.out_axis]
    delta = np.moveaxis(w2 * c[p.groups], p.second.out_axis, 0).reshape(n_out, -1).sum(1)
    if p.second.node.op_type == "Gemm":
        delta = delta * _gemm_float(p.second.node, "alpha")
    _ensure_bias(model, index, p.first, p.channels, unique)
    _ensure_bias(model, index, p.second, n_out, unique)
    _add_to_bias(index, p.first, -c)
    _add_to_bias(index, p.second, delta)


def absorb_high_bias(model: onnx.ModelProto, data: Any = None, *, batch_size: int = 32,
                     max_samples: int | None = None,
                     data_options: Mapping[str, Any] | None = None,
                     providers: Sequence[str] | None = None,
                     layers: Sequence[str] | None = None,
                     ) -> tuple[onnx.ModelProto, TransformReport]:
    """Absorb the always-positive part of ReLU inputs into the next layer's bias.

    Args:
        model: the FP32 model (not modified). BatchNormalization is folded first (recorded
            as its own transform); its ``beta`` / ``gamma`` give ``c`` when there is no data.
        data: calibration data (anything :func:`quantkit.data.open_source` accepts; read
            once): ``c_i = max(0, min h_i)`` measured on it, then the outputs on its first
            samples are verified. Without data only layers that had a BatchNormalization are
            handled, with ``c_i = max(0, beta_i - 3 |gamma_i|)``.
        batch_size: samples per batch.
        max_samples: stop the statistics after this many samples.
        data_options: options for ``open_source``.
        providers: ONNX Runtime execution providers.
        layers: only pairs with one of these layers (node names; e.g. the plan's INT8
            layers).

    Returns:
        The model (biases rewritten; biases added where a layer had none; node names
        unchanged; the report in its ``quantkit.transforms`` metadata) and the report: per
        pair the source of ``c``, the number of channels absorbed and ``c``'s max / mean;
        per skipped candidate the reason (also logged as a warning).

    Raises:
        InputError: no data and no BatchNormalization in the model; an unknown layer name.
        PipelineError: the outputs changed beyond float tolerance on the data (refused).
    """
    check_batch_args(batch_size, max_samples)
    prep = prepare(model, data is not None, layers)
    stats = ActivationStatistics(data, batch_size=batch_size, max_samples=max_samples,
                                 data_options=data_options, providers=providers,
                                 keep=VERIFY_SAMPLES)
    out, report, _ = absorb_pairs(model, prep, stats)
    return out, report


@dataclass
class Prepared:
    """The working copy high-bias absorption edits and the pairs it will absorb.

    Attributes:
        model: BatchNormalization folded, nodes named (:func:`working_copy`).
        folded: the tensors whose values folding changed (the folded layers' outputs).
    """

    model: onnx.ModelProto
    index: GraphIndex
    todo: list[_Pair]
    skipped: list[dict[str, Any]]
    bn_stats: dict[str, BatchNormStats]
    with_data: bool
    folded: set[str] = field(default_factory=set)

    def requests(self) -> list[ChannelStat]:
        """The statistics it reads: min (as max of -h) per channel of each first layer's output."""
        if not self.with_data:
            return []
        return [ChannelStat(p.first.node.output[0], "neg_max", p.channels,
                            len(self.index.initializers[p.first.weight].dims)
                            if p.first.node.op_type == "Conv" else 2) for p in self.todo]


def prepare(model: onnx.ModelProto, with_data: bool,
            layers: Sequence[str] | None = None) -> Prepared:
    """Fold BatchNormalization, find the pairs (see :func:`absorb_high_bias`)."""
    has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
    if not with_data and not has_bn:
        raise InputError("high-bias absorption: no data and no BatchNormalization in the "
                         "model (exporters fold it), so nothing says how large the ReLU "
                         "inputs stay: give calibration data (--data D).")
    stats: dict[str, BatchNormStats] = {}
    folded = model
    if has_bn:
        folded, _, stats = fold_batchnorm_with_stats(model)
    out = working_copy(folded)
    bn_out = {n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"}
    changed = bn_out - {n.output[0] for n in out.graph.node
                        if n.op_type == "BatchNormalization"}
    if layers is not None:
        missing = set(layers) - {n.name for n in out.graph.node}
        if missing:
            raise InputError(f"high-bias absorption: no node named {sorted(missing)[:5]} in "
                             "the model; give node names as `quantkit inspect` lists them.")
    index = GraphIndex(out)
    found, skipped = find_pairs(out, shift_join)
    wanted = set(layers) if layers is not None else None
    todo: list[_Pair] = []
    for p in found:
        entry = {"first": p.first.name, "second": p.second.name, "via": p.via}
        if wanted is not None and not {p.first.name, p.second.name} & wanted:
            continue
        why = _pair_reason(p, index)
        if why is None and not with_data and p.first.name not in stats:
            why = (f"no BatchNormalization statistics for {p.first.name} and no data: give "
                   "calibration data")
        if why is not None:
            skipped.append({**entry, "reason": why})
        else:
            todo.append(p)
    if wanted is not None:
        skipped = [s for s in skipped if {s.get("first"), s.get("second")} & wanted]
    return Prepared(out, index, todo, skipped, stats, with_data, changed)


def absorb_pairs(model: onnx.ModelProto, prep: Prepared, stats: ActivationStatistics,
                 ) -> tuple[onnx.ModelProto, TransformReport, set[str]]:
    """Absorb ``prep``'s pairs, ``c`` from ``stats`` (measured when missing) or BatchNorm.

    ``c`` comes from BatchNormalization when ``prep`` was prepared without data.

    ``model`` is the model ``prep`` came from (the outputs are verified against it). Returns
    the model, the report and the tensors whose values changed: the folded layers' outputs and,
    per absorbed pair, the first layer's output and the tensors up to the second layer.
    """
    out, index, todo = prep.model, prep.index, prep.todo
    data = prep.with_data
    report = TransformReport("high_bias", {"source": "data" if data else "batchnorm",
                                           "batch_size": stats.batch_size,
                                           "max_samples": stats.max_samples, "sigmas": _SIGMAS})
    report.skipped.extend(prep.skipped)
    changed = set(prep.folded)
    cs: dict[str, np.ndarray] = {}
    kept: list[dict[str, np.ndarray]] = []
    if todo and data:
        values = stats.get(out, prep.requests(), description="high-bias statistics")
        kept = stats.kept(out)
        report.settings["num_samples"] = stats.samples
        by_tensor = {key.tensor: np.maximum(-v, 0.0) for key, v in values.items()}
        cs = {p.first.name: by_tensor[p.first.node.output[0]] for p in todo}
    else:
        for p in todo:
            st = prep.bn_stats[p.first.name]
            cs[p.first.name] = np.maximum(st.beta - _SIGMAS * np.abs(st.gamma), 0.0)
    unique = UniqueNames.for_model(out)
    for p in todo:
        c = cs[p.first.name]
        entry = {"first": p.first.name, "second": p.second.name, "via": p.via}
        if not np.all(np.isfinite(c)):
            report.skipped.append({**entry, "reason": "non-finite minimum measured"})
            continue
        if not np.any(c > 0):
            report.skipped.append({**entry, "reason": "nothing to absorb: no output channel "
                                   "of the first layer stays above 0"
                                   + (" on the data" if data else " (beta - 3|gamma| <= 0)")})
            continue
        absorb(out, index, p, c, unique)
        changed.add(p.first.node.output[0])
        changed.update(t for n in p.via_nodes for t in n.output)
        report.changed.append({
            **entry, "channels": p.channels, "absorbed_channels": int((c > 0).sum()),
            "c_max": float(c.max()), "c_mean": float(c.mean()),
            "source": "data" if data else "batchnorm",
            "relu": "Relu" in p.via})
    if report.changed and kept:
        report.settings["verified"] = verify_fp32(model, out, kept, providers=stats.providers,
                                                  transform="high-bias absorption")
    record(out, report)
    logger.info("%s", report.summary())
    warn_skipped(logger, report)
    return out, report, changed


__all__ = ["SHIFT_JOINS", "VERIFY_SAMPLES", "Prepared", "absorb", "absorb_high_bias",
           "absorb_pairs", "prepare", "shift_join"]
