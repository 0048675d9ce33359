"""The built-in rescue transforms behind the registry's one calling convention.

Each adapter turns a transform function into :class:`~quantkit.transforms.rescue.RescueTransform`:
``prepare`` returns the working copy and the activation statistics it will read, ``apply``
runs the transform with the shared statistics of the context. The registry
(:mod:`quantkit.transforms.registry`) names these objects; they are imported when a rescue runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.transforms._common import working_copy
from quantkit.transforms.bias_correction import bias_correct
from quantkit.transforms.equalize import equalize
from quantkit.transforms.high_bias import absorb_pairs
from quantkit.transforms.high_bias import prepare as high_bias_prepare
from quantkit.transforms.registry import (
    EqualizeOptions,
    HighBiasOptions,
    SmoothQuantOptions,
)
from quantkit.transforms.rescue import PreparedStep, RescueContext, StepResult
from quantkit.transforms.smoothquant import prepare as smoothquant_prepare
from quantkit.transforms.smoothquant import smooth


class _Equalize:
    """Cross-layer equalization: weights only (the data only verifies the outputs)."""

    def prepare(self, model: onnx.ModelProto, options: EqualizeOptions,
                ctx: RescueContext) -> PreparedStep:
        return PreparedStep(model)

    def apply(self, prepared: PreparedStep, source: onnx.ModelProto, options: EqualizeOptions,
              ctx: RescueContext) -> StepResult:
        model = prepared.model
        out, report = equalize(model, iterations=options.iterations,
                               tolerance=options.tolerance,
                               relu6_to_relu=options.relu6_to_relu, data=ctx.data,
                               batch_size=ctx.batch_size, data_options=ctx.data_options,
                               providers=ctx.providers)
        if options.relu6_to_relu:
            return StepResult(out, report, None)  # the function changed: no statistic holds
        changed = _folded(model, out)
        for entry in report.changed:  # the first layer's output and what lies before the second
            changed |= _pair_tensors(out, entry)
        return StepResult(out, report, changed)


def _folded(before: onnx.ModelProto, after: onnx.ModelProto) -> set[str]:
    """Outputs of the BatchNormalizations folded away (now written by the layer before)."""
    def bn(m: onnx.ModelProto) -> set[str]:
        return {str(n.output[0]) for n in m.graph.node if n.op_type == "BatchNormalization"}

    return bn(before) - bn(after)


def _pair_tensors(model: onnx.ModelProto, entry: dict[str, Any]) -> set[str]:
    """The tensors from a pair's first layer up to the second layer's input."""
    nodes = {n.name: n for n in model.graph.node}
    first, second = nodes.get(str(entry.get("first"))), nodes.get(str(entry.get("second")))
    if first is None or second is None:
        return set()
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    tensor = str(first.output[0])
    out = {tensor}
    while True:  # the joins of a pair are a chain of single readers
        nxt = readers.get(tensor, [])
        if len(nxt) != 1 or nxt[0] is second or not nxt[0].output or nxt[0].output[0] in out:
            return out
        tensor = str(nxt[0].output[0])
        out.add(tensor)


class _HighBias:
    """High-bias absorption: per-channel minima of the first layers' outputs (shared pass)."""

    def prepare(self, model: onnx.ModelProto, options: HighBiasOptions,
                ctx: RescueContext) -> PreparedStep:
        prep = high_bias_prepare(model, True, None)
        return PreparedStep(prep.model, prep.requests(), set(prep.folded), prep)

    def apply(self, prepared: PreparedStep, source: onnx.ModelProto, options: HighBiasOptions,
              ctx: RescueContext) -> StepResult:
        out, report, changed = absorb_pairs(source, prepared.state, ctx.statistics)
        return StepResult(out, report, changed)


class _SmoothQuant:
    """SmoothQuant on the context's MatMul/Gemm layers: per-channel max |x| (shared pass)."""

    def prepare(self, model: onnx.ModelProto, options: SmoothQuantOptions,
                ctx: RescueContext) -> PreparedStep:
        wanted = set(ctx.layers or ())
        layers = None if ctx.layers is None else [
            n.name for n in model.graph.node
            if n.name in wanted and n.op_type in ("MatMul", "Gemm")]
        prep = smoothquant_prepare(model, layers)
        return PreparedStep(prep.model, prep.requests(), set(), prep)

    def apply(self, prepared: PreparedStep, source: onnx.ModelProto,
              options: SmoothQuantOptions, ctx: RescueContext) -> StepResult:
        out, report, changed = smooth(source, prepared.state, ctx.statistics,
                                         alpha=float(options.alpha), fold=options.fold,
                                         verify=True)
        return StepResult(out, report, changed)


class _BiasCorrection:
    """Bias correction with the context's scales (its own pass: the shift needs them)."""

    def prepare(self, model: onnx.ModelProto, options: Any,
                ctx: RescueContext) -> PreparedStep:
        return PreparedStep(model)

    def apply(self, prepared: PreparedStep, source: onnx.ModelProto, options: Any,
              ctx: RescueContext) -> StepResult:
        before = working_copy(prepared.model)
        out, report = bias_correct(prepared.model, ctx.data, scales=ctx.scales,
                                   layers=ctx.layers, **ctx.run)
        original = _original_biases(before, out, (c["layer"] for c in report.changed))
        return StepResult(out, report, None, original)


def _original_biases(before: onnx.ModelProto, after: onnx.ModelProto,
                     changed: Iterable[str]) -> dict[str, tuple[str, np.ndarray]]:
    wanted = set(changed)
    inits = {t.name: t for t in before.graph.initializer}
    after_inits = {t.name: t for t in after.graph.initializer}
    nodes_before = {n.name: n for n in before.graph.node}
    out: dict[str, tuple[str, np.ndarray]] = {}
    for node in after.graph.node:
        if node.name not in wanted or len(node.input) < 3 or node.input[2] not in after_inits:
            continue
        old = nodes_before[node.name]
        if len(old.input) > 2 and old.input[2] in inits:
            value = numpy_helper.to_array(inits[old.input[2]])
        else:  # the correction added a bias: the original is zero
            value = np.zeros_like(numpy_helper.to_array(after_inits[node.input[2]]))
        out[node.name] = (node.input[2], value)
    return out


EQUALIZE = _Equalize()
HIGH_BIAS = _HighBias()
SMOOTHQUANT = _SmoothQuant()
BIAS_CORRECTION = _BiasCorrection()
