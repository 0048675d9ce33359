"""Bias correction with calibration data (Nagel et al. 2019, section 4.2, empirical form).

INT8 weights ``Wq = W + dW`` shift each output channel's mean by ``E[dW x]``; with the input
quantized too (``xq = x + dx``) the shift is ``E[Wq xq - W x]``. Quantization noise with a
non-zero mean is not averaged away by later layers, so subtracting it from the bias recovers
accuracy that rounding alone loses.

How it is measured: an auxiliary copy of the model computes, for every corrected layer ``L``
reading ``x``, both ``L(x; W)`` and ``L(Q(x); Q(W))`` (no bias; ``Q`` = the same fake
quantization as the Q/DQ writer: per-channel symmetric INT8 weights, and with ``scales`` the
per-tensor activation scale of ``x``), their difference reduced to a per-channel mean inside
the graph (``ReduceMean``). The copy runs batch by batch through
:class:`~quantkit.capture.runner.ActivationCapture`; only the per-channel means of each batch
leave ONNX Runtime, so no activation outlives its batch. Then ``b_c -= E[shift_c]``.

Every layer is corrected independently, from the FP32 model's inputs (the shift each layer
adds by itself), not sequentially through an already quantized prefix. The transform changes
the FP32 function by design (the biases move by the expected quantization error); node names
stay the same. Biases that do not exist are added as new initializers (the node keeps its
name). The means are over batch and spatial positions, each batch weighted by its number of
samples (exact when every batch has the same spatial size).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.calibrators.cache import ScaleTable
from quantkit.capture.runner import ActivationCapture
from quantkit.data.base import check_batch_args
from quantkit.errors import InputError
from quantkit.graph import GraphIndex, UniqueNames, model_opset, upgrade_opset
from quantkit.options import RunOptions
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.rules import quantized_inputs
from quantkit.qdq.writer import quantize_model, quantize_weight
from quantkit.transforms._common import (
    Layer,
    TransformReport,
    as_layer,
    auxiliary_copy,
    data_run,
    int_attrs,
    record,
    set_initializer,
    warn_skipped,
    working_copy,
)
from quantkit.transforms.statistics import stream_outputs

logger = logging.getLogger(__name__)

_QMAX = 127.0


def _weight_axis(layer: Layer, index: GraphIndex) -> int | None:
    """The per-channel axis the Q/DQ writer uses for this layer's weight."""
    node = layer.node
    names = list(node.input)
    qi = quantized_inputs(node.op_type, int_attrs(node),
                          [bool(n) and index.is_initializer(n) for n in names] + [False] * 3,
                          [len(index.initializers[n].dims) if index.is_initializer(n) else None
                           for n in names] + [None] * 3)
    for q in qi:
        if q.index == 1 and q.kind == "weight":
            return q.axis
    return None


def _candidates(model: onnx.ModelProto, index: GraphIndex, layers: Sequence[str] | None,
                ) -> tuple[list[Layer], list[dict[str, Any]]]:
    wanted = set(layers) if layers is not None else None
    out: list[Layer] = []
    skipped: list[dict[str, Any]] = []
    for node in model.graph.node:
        if wanted is not None and node.name not in wanted:
            continue
        layer = as_layer(node, index)
        if layer is None:
            if wanted is not None:
                skipped.append({"layer": node.name, "reason": f"{node.op_type} without a "
                                "constant float weight"})
            continue
        reason = layer.reason
        if reason is None and node.op_type == "MatMul":
            reason = "MatMul (its bias is a separate Add): not handled yet"
        if reason is None and node.op_type == "Gemm":
            beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
            if beta == 0.0:
                reason = "Gemm with beta=0 ignores its bias"
        if reason is None and layer.bias is not None:
            n = index.array(layer.weight).shape[layer.out_axis]
            if index.array(layer.bias).size != n:
                reason = "bias is not per output channel"
        if reason is not None:
            skipped.append({"layer": node.name, "reason": reason})
        else:
            out.append(layer)
    if wanted is not None:
        missing = wanted - {n.name for n in model.graph.node}
        if missing:
            raise InputError(f"bias correction: no node named {sorted(missing)[:5]} in the "
                             "model; give node names as `quantkit inspect` lists them.")
    return out, skipped


def _act_scale(scales: ScaleTable | None, tensor: str) -> float | None:
    if scales is None or tensor not in scales.scales:
        return None
    s = float(scales.scales[tensor])
    if not np.isfinite(s) or s < 0:
        return None
    return s if s > 0 else 1.0 / _QMAX  # as the Q/DQ writer does for an all-zero tensor


def _shift_model(model: onnx.ModelProto, index: GraphIndex, layers: list[Layer],
                 scales: ScaleTable | None) -> tuple[onnx.ModelProto, dict[str, str], set[str]]:
    """The auxiliary model: outputs = per-channel mean of ``L(Q(x); Q(W)) - L(x; W)``."""
    aux, unique = auxiliary_copy(model)
    aux = upgrade_opset(aux, 13, "bias correction")
    g = aux.graph
    axes_as_input = model_opset(aux) >= 18
    outputs: dict[str, str] = {}
    act_quantized: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    for k, layer in enumerate(layers):
        node = layer.node
        w = index.array(layer.weight)
        q, s = quantize_weight(w, _weight_axis(layer, index))
        shape = [1] * w.ndim
        axis = _weight_axis(layer, index)
        if axis is not None:
            shape[axis] = -1
        wq = (q.astype(np.float32) * s.reshape(shape)).astype(np.float32)
        pre = f"qk_bias_correction/{k}"
        wq_name, zb_name = unique(f"{pre}/wq"), unique(f"{pre}/zero_bias")
        n_out = w.shape[layer.out_axis]
        g.initializer.extend([numpy_helper.from_array(wq, wq_name),
                              numpy_helper.from_array(np.zeros(n_out, np.float32), zb_name)])
        x = node.input[0]
        xq = x
        act = _act_scale(scales, x)
        if act is not None:
            sn, zn = unique(f"{pre}/x_scale"), unique(f"{pre}/x_zero_point")
            g.initializer.extend([numpy_helper.from_array(np.array(act, np.float32), sn),
                                  numpy_helper.from_array(np.array(0, np.int8), zn)])
            qx, xq = unique(f"{pre}/x_q"), unique(f"{pre}/x_dq")
            new_nodes += [helper.make_node("QuantizeLinear", [x, sn, zn], [qx],
                                           name=unique(f"{pre}/Q")),
                          helper.make_node("DequantizeLinear", [qx, sn, zn], [xq],
                                           name=unique(f"{pre}/DQ"))]
            act_quantized.add(node.name)
        y, yq, d = (unique(f"{pre}/{t}") for t in ("y", "yq", "diff"))
        for inputs, out in (([x, layer.weight, zb_name], y), ([xq, wq_name, zb_name], yq)):
            clone = helper.make_node(node.op_type, inputs, [out], name=unique(f"{pre}/{out}"))
            clone.attribute.extend(a for a in node.attribute if a.name != "beta")
            new_nodes.append(clone)
        new_nodes.append(helper.make_node("Sub", [yq, y], [d], name=unique(f"{pre}/Sub")))
        reduce = [0] + list(range(2, w.ndim)) if node.op_type == "Conv" else [0]
        mean_node, m = _reduce_mean(g, unique, d, reduce, axes_as_input, pre)
        new_nodes.append(mean_node)
        outputs[node.name] = m
    g.node.extend(new_nodes)  # after every original node: still topologically sorted
    del g.output[:]
    sizes = {m: index.array(lay.weight).shape[lay.out_axis]
             for lay, m in zip(layers, outputs.values(), strict=True)}
    g.output.extend(helper.make_tensor_value_info(m, onnx.TensorProto.FLOAT, [sizes[m]])
                    for m in outputs.values())
    return aux, outputs, act_quantized


def _reduce_mean(g: onnx.GraphProto, unique: UniqueNames, x: str, axes: list[int],
                 axes_as_input: bool, pre: str) -> tuple[onnx.NodeProto, str]:
    m = unique(f"{pre}/mean")
    if axes_as_input:
        an = unique(f"{pre}/axes")
        g.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), an))
        return helper.make_node("ReduceMean", [x, an], [m], keepdims=0,
                                name=unique(f"{pre}/ReduceMean")), m
    return helper.make_node("ReduceMean", [x], [m], axes=axes, keepdims=0,
                            name=unique(f"{pre}/ReduceMean")), m


def _output_means_model(model: onnx.ModelProto, layers: list[tuple[str, str, int, int]],
                        ) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` with outputs = per-channel means of the given layers' outputs.

    ``layers``: ``(node name, output tensor, rank of the weight, channels)``.
    """
    aux, unique = auxiliary_copy(model)
    g = aux.graph
    outputs: dict[str, str] = {}
    del g.output[:]
    for k, (name, tensor, rank, channels) in enumerate(layers):
        axes = [0] + list(range(2, rank)) if rank > 2 else [0]
        as_float = unique(f"qk_bias_correction/out{k}/float")
        g.node.append(helper.make_node("Cast", [tensor], [as_float], to=onnx.TensorProto.FLOAT,
                                       name=unique(f"qk_bias_correction/out{k}/Cast")))
        node, m = _reduce_mean(g, unique, as_float, axes, model_opset(aux) >= 18,
                               f"qk_bias_correction/out{k}")
        g.node.append(node)
        g.output.append(helper.make_tensor_value_info(m, onnx.TensorProto.FLOAT, [channels]))
        outputs[name] = m
    return aux, outputs


def _mean_pass(aux: onnx.ModelProto, means: dict[str, str], data: Any, batch_size: int,
               max_samples: int | None, data_options: Mapping[str, Any] | None,
               providers: Sequence[str] | None, description: str,
               ) -> tuple[dict[str, np.ndarray], int]:
    """Run ``aux`` over the data with the streaming capture; average its mean outputs."""
    sums = {name: np.zeros(0, np.float64) for name in means}
    seen = [0]

    def sink(acts: Mapping[str, np.ndarray], capture: ActivationCapture) -> None:
        n = capture.chunk_samples  # weight each batch's mean by its samples
        for layer, m in means.items():
            v = acts[m].astype(np.float64) * n
            sums[layer] = v if sums[layer].size == 0 else sums[layer] + v
        seen[0] += n

    stream_outputs(aux, list(means.values()), data, batch_size, max_samples, data_options,
                   providers, sink, description)
    return {k: v / max(seen[0], 1) for k, v in sums.items()}, seen[0]


def bias_correct(model: onnx.ModelProto, data: Any, *, scales: ScaleTable | None = None,
                 layers: Sequence[str] | None = None, sequential: bool = False,
                 config: PrecisionConfig | None = None, options: RunOptions | None = None,
                 **settings: Any) -> tuple[onnx.ModelProto, TransformReport]:
    """Subtract each layer's mean INT8 output shift from its bias (``model`` not modified).

    Args:
        model: the FP32 model (after :func:`~quantkit.transforms.equalize`, if used).
        data: calibration data, anything :func:`quantkit.data.open_source` accepts (read once,
            or once per corrected layer plus once with ``sequential``: give a re-readable
            source such as a file or arrays).
        scales: activation scales of ``model``; with them the shift includes the input's
            INT8 quantization, without them only the weights' (independent mode).
        layers: node names to correct (default: every Conv / Gemm with a constant weight);
            pass the plan's INT8 layers so FP16 layers keep their biases.
        sequential: measure each layer's shift in the quantized model whose earlier layers
            are already corrected (the paper's empirical form: it accounts for the error that
            reaches the layer from upstream; one pass over the data per layer; needs
            ``scales``). Default: every layer independently from FP32 inputs, one pass.
        config: the precision plan used to quantize in sequential mode (default all INT8).
        options: how the data is read (batch size, sample cap, reading options) and the
            ONNX Runtime providers (:class:`~quantkit.options.RunOptions`); or, as keywords,
            the option groups or their fields (``batch_size``, ``max_samples``,
            ``data_options``, ``providers``...), as for :func:`quantkit.capture.calibrate`.
        **settings: those keywords (any other is refused).

    Returns:
        The corrected model (the report also in its ``quantkit.transforms`` metadata) and a
        report with, per layer, the mean |shift| and max |shift| removed and the largest
        shift relative to the layer's max |bias|.
    """
    reading = data_run(options, settings, "bias_correct")
    batch_size, max_samples = reading.batch_size, reading.max_samples
    data_options, providers = reading.data_options, reading.providers
    check_batch_args(batch_size, max_samples)
    if sequential and scales is None:
        raise InputError("sequential bias correction quantizes the model: give the scales.")
    out = working_copy(model)
    index = GraphIndex(out)
    todo, skipped = _candidates(out, index, layers)
    report = TransformReport("bias_correction", {
        "mode": "sequential" if sequential else "independent",
        "activation_quantized": scales is not None, "batch_size": batch_size,
        "max_samples": max_samples, "scales_method": scales.method if scales else None})
    report.skipped.extend(skipped)
    if not todo:
        record(out, report)
        warn_skipped(logger, report)
        return out, report
    original = {lay.name: max(float(np.abs(index.array(lay.bias)).max(initial=0.0)), 1e-12)
                if lay.bias is not None else 1e-12 for lay in todo}
    run = {"data": data, "batch_size": batch_size, "max_samples": max_samples,
           "data_options": data_options, "providers": providers}
    shifts: dict[str, np.ndarray] = {}
    act_q: set[str] = set()
    if not sequential:
        aux, means, act_q = _shift_model(out, index, todo, scales)
        shifts, seen = _mean_pass(aux, means, description="bias correction", **run)
    else:
        spec = [(lay.name, lay.node.output[0], len(index.initializers[lay.weight].dims),
                 index.array(lay.weight).shape[lay.out_axis]) for lay in todo]
        aux, means = _output_means_model(out, spec)
        reference, seen = _mean_pass(aux, means, description="bias correction (FP32)", **run)
        for lay, one in zip(todo, spec, strict=True):
            q = quantize_model(out, scales, config).model
            aux, means = _output_means_model(q, [one])
            got, _ = _mean_pass(aux, means, description=f"bias correction {lay.name}", **run)
            shifts[lay.name] = got[lay.name] - reference[lay.name]
            _correct(out, index, lay, shifts[lay.name])
            act_q.add(lay.name)
    for lay in todo:
        if not sequential:
            _correct(out, index, lay, shifts[lay.name])
        shift = shifts[lay.name]
        if not np.all(np.isfinite(shift)):
            report.skipped.append({"layer": lay.name, "reason": "non-finite shift measured"})
            continue
        report.changed.append({
            "layer": lay.name, "channels": int(shift.size),
            "activation_quantized": lay.name in act_q,
            "mean_abs_shift": float(np.abs(shift).mean()),
            "max_abs_shift": float(np.abs(shift).max()),
            "max_shift_over_max_bias": float(np.abs(shift).max() / original[lay.name]),
        })
    report.settings["num_samples"] = seen
    record(out, report)
    logger.info("%s on %d samples", report.summary(), seen)
    warn_skipped(logger, report)
    return out, report


def _correct(model: onnx.ModelProto, index: GraphIndex, layer: Layer,
             shift: np.ndarray) -> None:
    """``bias -= shift`` (adding a zero bias first if the layer has none)."""
    if not np.all(np.isfinite(shift)):
        return
    beta = next((a.f for a in layer.node.attribute if a.name == "beta"), 1.0) \
        if layer.node.op_type == "Gemm" else 1.0
    if layer.bias is None:
        name = UniqueNames.for_model(model)(f"{layer.name}_bias")
        model.graph.initializer.append(numpy_helper.from_array(
            np.zeros(shift.size, np.float32), name))
        if len(layer.node.input) > 2:
            layer.node.input[2] = name
        else:
            layer.node.input.append(name)
        index.initializers[name] = model.graph.initializer[-1]
        layer.bias = name
    b = index.array(layer.bias)
    new = b.astype(np.float64).reshape(-1) - shift / beta
    set_initializer(index, layer.bias, new.reshape(b.shape))


__all__ = ["bias_correct"]
