"""SmoothQuant-style migration of activation outliers into MatMul/Gemm weights.

Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models", section 4: for a layer ``Y = X W`` whose input ``X`` has a few outlier
channels (transformers: some LayerNorm output channels are 10-100x larger than the rest), one
per-tensor INT8 activation scale wastes most of its levels on those channels. Per input
channel ``j``: ``X_j / s_j`` and ``W_j * s_j`` (``W_j`` = row ``j`` of ``W``, the weights that
multiply ``X_j``) leave ``X W`` unchanged, with

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

so that afterwards ``max|X_j / s_j| ** alpha == max|W_j s_j| ** (1 - alpha)`` (alpha = 0.5:
both equal ``sqrt(max|X_j| max|W_j|)``). ``max|X_j|`` is measured on calibration data (max over
every axis but the last). Layers reading the same tensor (Q/K/V) get one ``s`` from the max
over their weight rows, as SmoothQuant does, so they keep sharing one input.

Where ``1 / s`` goes:

* folded into the producing ``LayerNormalization`` (scale and bias both divided by ``s``)
  when its output is read only by the smoothed layers (and ``Shape`` ops, which see only the
  shape): no new node;
* otherwise (e.g. BERT's post-LN, whose output also feeds the residual ``Add``; GELU outputs)
  a ``Mul`` by ``1 / s`` is inserted in front of the layers, read only by them. TensorRT fuses a
  pointwise ``Mul`` by a constant into the producing kernel / the following quantize.

The FP32 function is preserved up to float rounding. The statistics run through
:class:`~quantkit.capture.runner.ActivationCapture` on an auxiliary copy of the model that
reduces each input to its per-channel max |x| inside ONNX Runtime: only ``K`` numbers per
input leave each batch. Node names are kept; re-calibrate the transformed model before
quantizing it (activation ranges change, and inserted ``Mul`` outputs are new tensors).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.errors import InputError
from quantkit.graph import GraphIndex, UniqueNames
from quantkit.transforms._common import (
    TransformReport,
    int_attrs,
    record,
    set_initializer,
    use_count,
    verify_fp32,
    warn_skipped,
    working_copy,
)
from quantkit.transforms.statistics import ActivationStatistics, ChannelStat

logger = logging.getLogger(__name__)

#: readers of a tensor that see only its shape (scaling the values does not change them).
_SHAPE_ONLY = frozenset({"Shape", "Size"})
#: samples (the first ones of the statistics pass) on which ``verify`` checks the outputs.
VERIFY_SAMPLES = 32
#: bounds on s (SmoothQuant's reference clamps at 1e-5).
_S_MIN, _S_MAX = 1e-5, 1e5


@dataclass
class _Layer:
    node: onnx.NodeProto
    weight: str
    in_axis: int  # weight axis of the input channels (the rows multiplied by X_j)

    @property
    def name(self) -> str:
        return str(self.node.name)


@dataclass
class _Group:
    """Smoothed layers reading one tensor."""

    tensor: str
    channels: int
    layers: list[_Layer] = field(default_factory=list)


def _as_layer(node: onnx.NodeProto, index: GraphIndex) -> tuple[_Layer | None, str | None]:
    """The layer view of a MatMul/Gemm with a constant 2-D weight, or why not."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None, None
    x, w = node.input[0], node.input[1]
    if not index.is_initializer(w) or index.elem_type(w) != onnx.TensorProto.FLOAT:
        return None, f"{node.op_type} without a constant float weight"
    if index.is_initializer(x):
        return None, "the input is a constant"
    if len(index.initializers[w].dims) != 2:
        return None, f"weight of rank {len(index.initializers[w].dims)} (2-D only)"
    attrs = int_attrs(node)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            return None, "Gemm with transA=1"
        return _Layer(node, w, 1 if attrs.get("transB", 0) else 0), None
    return _Layer(node, w, 0), None


def _groups(model: onnx.ModelProto, index: GraphIndex, layers: Sequence[str] | None,
            ) -> tuple[list[_Group], list[dict[str, Any]]]:
    wanted = set(layers) if layers is not None else None
    uses = use_count(model)
    groups: dict[str, _Group] = {}
    skipped: list[dict[str, Any]] = []
    for node in model.graph.node:
        if wanted is not None and node.name not in wanted:
            continue
        layer, reason = _as_layer(node, index)
        if layer is None:
            if reason is not None:
                skipped.append({"layer": node.name, "reason": reason})
            elif wanted is not None:
                skipped.append({"layer": node.name, "reason": f"{node.op_type} is not a "
                                "MatMul/Gemm"})
            continue
        if uses.get(layer.weight, 0) > 1:
            skipped.append({"layer": node.name, "reason": "its weight is shared with other "
                            "nodes"})
            continue
        k = int(index.initializers[layer.weight].dims[layer.in_axis])
        g = groups.setdefault(node.input[0], _Group(node.input[0], k))
        if g.channels != k:
            skipped.append({"layer": node.name, "reason": f"reads {g.tensor} with {k} input "
                            f"channels, another reader has {g.channels}"})
            continue
        g.layers.append(layer)
    if wanted is not None:
        missing = wanted - {n.name for n in model.graph.node}
        if missing:
            raise InputError(f"smoothquant: no node named {sorted(missing)[:5]} in the "
                             "model; give node names as `quantkit inspect` lists them.")
    return list(groups.values()), skipped


def activation_channel_max(model: onnx.ModelProto, tensors: Mapping[str, int], data: Any, *,
                           batch_size: int = 32, max_samples: int | None = None,
                           data_options: Mapping[str, Any] | None = None,
                           providers: Sequence[str] | None = None,
                           ) -> tuple[dict[str, np.ndarray], int]:
    """Per-channel max |x| (over every axis but the last) of ``tensors`` on ``data``.

    ``tensors`` maps a tensor name to its last-axis size. Streams: only the per-channel maxima
    of each batch leave ONNX Runtime. Returns the maxima and the number of samples.
    """
    stats = ActivationStatistics(data, batch_size=batch_size, max_samples=max_samples,
                                 data_options=data_options, providers=providers)
    wanted = [ChannelStat(t, "abs_max", k) for t, k in tensors.items()]
    values = stats.get(model, wanted, description="smoothquant statistics")
    return {s.tensor: v for s, v in values.items()}, int(stats.samples or 0)


def smooth_scales(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)``; 1 where either max is 0."""
    a = np.asarray(act_max, np.float64)
    w = np.asarray(weight_max, np.float64)
    ok = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    s = np.ones_like(a)
    s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
    return np.asarray(np.clip(s, _S_MIN, _S_MAX))


def _row_max(w: np.ndarray, in_axis: int) -> np.ndarray:
    return np.asarray(np.abs(w.astype(np.float64)).max(axis=1 - in_axis))


def _fold_target(model: onnx.ModelProto, index: GraphIndex, grp: _Group,
                 uses: dict[str, int]) -> tuple[onnx.NodeProto | None, str]:
    """The LayerNormalization to fold ``1/s`` into, or None with the reason."""
    prod = index.producer_node(grp.tensor)
    if prod is None or prod.op_type != "LayerNormalization":
        return None, f"produced by {prod.op_type if prod else 'a graph input'}"
    if grp.tensor in {o.name for o in model.graph.output}:
        return None, "the LayerNormalization output is a graph output"
    if list(prod.output).index(grp.tensor) != 0:
        return None, "not the LayerNormalization's first output"
    smoothed = {lay.name for lay in grp.layers}
    others = [n for n in index.consumer_nodes(grp.tensor)
              if n.name not in smoothed and n.op_type not in _SHAPE_ONLY]
    if others:
        return None, (f"the LayerNormalization output also feeds {others[0].op_type} "
                      f"{others[0].name}")
    axis = int_attrs(prod).get("axis", -1)
    params = [i for i in prod.input[1:3] if i]
    if not all(index.is_initializer(p) and uses.get(p, 0) == 1 for p in params):
        return None, "LayerNormalization scale/bias not constant or shared"
    if axis != -1 or not all(index.array(p).shape == (grp.channels,) for p in params):
        return None, "LayerNormalization not over the last axis only (axis=-1, 1-D scale)"
    return prod, ""


def smoothquant(model: onnx.ModelProto, data: Any, *, alpha: float = 0.5,
                layers: Sequence[str] | None = None, fold: bool = True,
                batch_size: int = 32, max_samples: int | None = None,
                data_options: Mapping[str, Any] | None = None,
                providers: Sequence[str] | None = None, verify: bool = False,
                ) -> tuple[onnx.ModelProto, TransformReport]:
    """Migrate activation outliers of MatMul/Gemm inputs into their weights (FP32 function kept).

    Args:
        model: the FP32 model (not modified).
        data: calibration data, anything :func:`quantkit.data.open_source` accepts (one pass).
        alpha: migration strength in [0, 1] (0.5: SmoothQuant's default; higher moves more of
            the range into the weights).
        layers: node names of the MatMul/Gemm layers to smooth (default: every MatMul/Gemm
            with a constant 2-D weight). Pass the plan's INT8 layers.
        fold: fold ``1/s`` into a producing LayerNormalization where possible (False: always
            insert a ``Mul``).
        batch_size: samples per batch.
        max_samples: stop after this many samples.
        data_options: options for ``open_source``.
        providers: ONNX Runtime execution providers.
        verify: check on the first 32 samples of ``data`` (kept from the statistics pass,
            not read again) that the outputs are unchanged within float tolerance
            (:func:`~quantkit.transforms._common.verify_fp32`); refuse
            (``PipelineError``) otherwise. The result is in ``settings["verified"]``.

    Returns:
        The smoothed model (the report also in its ``quantkit.transforms`` metadata) and a
        report with, per input tensor, the layers, where ``1/s`` went, the range of ``s`` and
        the largest per-channel activation / weight-row ranges before and after.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"smoothquant: alpha must be in [0, 1], got {alpha}.")
    # with verify, the first samples are kept as they stream by: the data is read once
    stats = ActivationStatistics(data, batch_size=batch_size, max_samples=max_samples,
                                 data_options=data_options, providers=providers,
                                 keep=VERIFY_SAMPLES if verify else 0)
    out, report, _ = smooth(model, prepare(model, layers), stats, alpha=alpha, fold=fold,
                            verify=verify)
    return out, report


@dataclass
class Prepared:
    """The working copy SmoothQuant edits and what it will smooth (before any statistic)."""

    model: onnx.ModelProto
    index: GraphIndex
    groups: list[_Group]
    skipped: list[dict[str, Any]]

    def requests(self) -> list[ChannelStat]:
        """The statistics it reads: max |x| per channel of each group's input."""
        return [ChannelStat(g.tensor, "abs_max", g.channels) for g in self.groups]


def prepare(model: onnx.ModelProto, layers: Sequence[str] | None) -> Prepared:
    """The working copy of ``model`` and its MatMul/Gemm groups (``layers``: see smoothquant)."""
    out = working_copy(model)
    index = GraphIndex(out)
    groups, skipped = _groups(out, index, layers)
    return Prepared(out, index, groups, skipped)


def smooth(model: onnx.ModelProto, prep: Prepared, stats: ActivationStatistics, *,
           alpha: float, fold: bool, verify: bool,
           ) -> tuple[onnx.ModelProto, TransformReport, set[str]]:
    """Smooth ``prep`` with the statistics of ``stats`` (measured there when missing).

    Returns the model, the report and the tensors whose values changed (the outputs of the
    LayerNormalizations ``1/s`` was folded into; an inserted ``Mul`` writes a new tensor).
    """
    out, index, groups = prep.model, prep.index, prep.groups
    report = TransformReport("smoothquant", {"alpha": alpha, "fold": fold,
                                             "batch_size": stats.batch_size,
                                             "max_samples": stats.max_samples})
    report.skipped.extend(prep.skipped)
    changed: set[str] = set()
    if not groups:
        record(out, report)
        warn_skipped(logger, report)
        return out, report, changed
    values = stats.get(out, prep.requests(), description="smoothquant statistics")
    act = {s.tensor: v for s, v in values.items()}
    kept = stats.kept(out) if verify else []
    seen = int(stats.samples or 0)
    report.settings["num_samples"] = seen

    uses = use_count(out)
    g = out.graph
    unique = UniqueNames.for_model(out)
    inserts: list[tuple[str, onnx.NodeProto]] = []  # (first reader, Mul to put before it)
    for grp in groups:
        a = act[grp.tensor]
        names = [lay.name for lay in grp.layers]
        if not np.all(np.isfinite(a)):
            report.skipped.extend({"layer": n, "reason": "non-finite activation max"}
                                  for n in names)
            continue
        wmax = np.max([_row_max(index.array(lay.weight), lay.in_axis) for lay in grp.layers],
                      axis=0)
        s = smooth_scales(a, wmax, alpha)
        for lay in grp.layers:
            w = index.array(lay.weight).astype(np.float64)
            shape = [1, 1]
            shape[lay.in_axis] = -1
            set_initializer(index, lay.weight, w * s.reshape(shape))
        ln, why = _fold_target(out, index, grp, uses) if fold \
            else (None, "fold=False")
        entry: dict[str, Any] = {
            "layer": names[0], "layers": names, "input": grp.tensor, "channels": grp.channels,
            "scale_min": float(s.min()), "scale_max": float(s.max()),
            "act_max_before": float(a.max()), "act_max_after": float((a / s).max()),
            "act_channel_spread_before": float(a.max() / max(float(np.median(a)), 1e-12)),
            "act_channel_spread_after": float((a / s).max()
                                              / max(float(np.median(a / s)), 1e-12)),
            "weight_max_before": float(wmax.max()), "weight_max_after": float((wmax * s).max()),
        }
        if ln is not None:
            for p in [i for i in ln.input[1:3] if i]:
                v = index.array(p)
                set_initializer(index, p, v.astype(np.float64) / s.reshape(v.shape))
            entry["folded_into"] = ln.name
            changed.add(grp.tensor)
        else:
            inv, y = unique(f"{grp.tensor}/smoothquant_inv_scale"), \
                unique(f"{grp.tensor}/smoothquant")
            g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
            mul = helper.make_node("Mul", [grp.tensor, inv], [y],
                                   name=unique(f"{names[0]}/smoothquant/Mul"))
            for lay in grp.layers:
                lay.node.input[0] = y
            inserts.append((names[0], mul))
            entry["inserted"] = mul.name
            entry["not_folded"] = why
        report.changed.append(entry)
    if inserts:  # each Mul just before its first reader: still topologically sorted
        before: dict[str, list[onnx.NodeProto]] = {}
        for first, mul in inserts:
            before.setdefault(first, []).append(mul)
        nodes = list(g.node)
        first_reader = {}
        for grp in groups:
            for n in nodes:
                if n.name in {lay.name for lay in grp.layers}:
                    first_reader[grp.layers[0].name] = n.name
                    break
        del g.node[:]
        pending = {first_reader.get(k, k): v for k, v in before.items()}
        for n in nodes:
            g.node.extend(pending.pop(n.name, []))
            g.node.append(n)
    if verify:
        report.settings["verified"] = verify_fp32(model, out, kept, providers=stats.providers,
                                                  transform="smoothquant")
    record(out, report)
    logger.info("%s on %d samples", report.summary(), seen)
    warn_skipped(logger, report)
    return out, report, changed


__all__ = ["VERIFY_SAMPLES", "Prepared", "activation_channel_max", "prepare", "smooth",
           "smooth_scales", "smoothquant"]
