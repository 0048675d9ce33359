"""Rescue transforms: one registry, one calling convention, one runner for every entry point.

``quantkit quantize --rescue``, the precision YAML's ``rescue:`` key, sweep recipe configs
and :func:`quantkit.sweep.autotune` all go through :func:`parse_rescue` and
:func:`apply_rescue`. The transforms, their spellings, options, statistics and run order are
in :mod:`quantkit.transforms.registry` (``cle,bias-correction,smoothquant:0.8``: equalize,
high-bias absorption, smoothquant, bias correction, in that order whatever the order given).

Every transform implements :class:`RescueTransform`: ``prepare`` (the working copy it edits
and the activation statistics it will read) and ``apply``. The runner:

* measures the activation statistics of consecutive transforms that read them
  (:attr:`~quantkit.transforms.registry.Statistic.ACTIVATION_RANGES`) in **one** capture
  pass, on the model the first of them prepares; a function-preserving transform lists the
  tensors whose values it changed, and only their statistics are measured again for the next
  one (the rule, and why the tensors after a rewritten pair keep theirs:
  :mod:`quantkit.transforms.statistics`); a transform that changes the function drops them all;
* calibrates the model again when a transform needs scales
  (:attr:`~quantkit.transforms.registry.Statistic.SCALES`: bias correction) or at the end,
  if a function-preserving transform (or one that changes the function without reading the
  scales) ran since the last calibration; a transform that read the scales keeps them (bias
  correction corrects for exactly those scales).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from quantkit.calibrators import DEFAULT_METHOD
from quantkit.capture import calibrate
from quantkit.errors import InputError
from quantkit.model import save_model
from quantkit.options import RunOptions, resolve_options
from quantkit.qdq.writer import plan_model, prepare
from quantkit.transforms._common import TransformReport, data_run, working_copy
from quantkit.transforms.registry import (
    REGISTRY,
    RescueStep,
    Statistic,
    combine_rescue,
    parse_rescue,
)
from quantkit.transforms.statistics import ActivationStatistics, ChannelStat

if TYPE_CHECKING:
    import onnx

    from quantkit.calibrators.cache import ScaleTable
    from quantkit.qdq.plan import PrecisionConfig

logger = logging.getLogger(__name__)

#: samples on which the function-preserving transforms verify the FP32 outputs.
VERIFY_SAMPLES = 32


@dataclass
class RescueContext:
    """What every transform gets besides the model and its options.

    Attributes:
        data: calibration data (re-readable).
        batch_size, max_samples, data_options, providers: how to read and run it.
        layers: the node names smoothquant and bias correction may change (the plan's INT8
            layers); None: every layer.
        scales: scales of the model as it is now (fresh for a transform that declares
            :attr:`~quantkit.transforms.registry.Statistic.SCALES`).
        statistics: the shared activation statistics.
        where: the flag / key named in error messages.
    """

    data: Any
    batch_size: int
    max_samples: int | None
    data_options: Mapping[str, Any] | None
    providers: Sequence[str] | None
    layers: list[str] | None
    scales: ScaleTable | None
    statistics: ActivationStatistics
    where: str = "rescue"

    @property
    def run(self) -> dict[str, Any]:
        """``batch_size`` / ``max_samples`` / ``data_options`` / ``providers`` as keywords."""
        return {"batch_size": self.batch_size, "max_samples": self.max_samples,
                "data_options": self.data_options, "providers": self.providers}


@dataclass
class PreparedStep:
    """A transform ready to run: the model it measures and edits, and what it will read.

    Attributes:
        model: the working copy (e.g. with BatchNormalization folded).
        requests: the activation statistics ``apply`` reads from ``ctx.statistics``.
        changed_tensors: tensors whose values preparing changed (folding a BatchNormalization
            changes the folded layer's output by float rounding).
        state: the transform's own prepared data.
    """

    model: onnx.ModelProto
    requests: list[ChannelStat] = field(default_factory=list)
    changed_tensors: set[str] = field(default_factory=set)
    state: Any = None


@dataclass
class StepResult:
    """What one transform did.

    Attributes:
        model: the transformed model.
        report: its report (also in the model's ``quantkit.transforms`` metadata).
        changed_tensors: tensors whose values changed (None: any tensor may have; always None
            for a transform that is not function-preserving).
        original_bias: ``{layer: (bias initializer, value before)}`` of biases it changed, for
            :meth:`RescueResult.with_kept`.
    """

    model: onnx.ModelProto
    report: TransformReport
    changed_tensors: set[str] | None = None
    original_bias: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


class RescueTransform(Protocol):
    """The one calling convention of a registered transform."""

    def prepare(self, model: onnx.ModelProto, options: Any,
                ctx: RescueContext) -> PreparedStep:
        """The working copy and the statistics it will read (no pass over the data)."""

    def apply(self, prepared: PreparedStep, source: onnx.ModelProto, options: Any,
              ctx: RescueContext) -> StepResult:
        """Transform ``prepared.model`` (``source``: the model it was prepared from)."""


def summary(report: Any) -> dict[str, Any]:
    """``{transform, changed, skipped, settings}`` of a transform report (or its dict)."""
    doc = report if isinstance(report, Mapping) else report.to_dict()
    return {"transform": doc["transform"], "changed": len(doc.get("changed", [])),
            "skipped": len(doc.get("skipped", [])), "settings": doc.get("settings", {})}


def changed_layers(report: Any) -> list[str]:
    """Node names a transform report lists as changed (layers, pair members, readers)."""
    doc = report if isinstance(report, Mapping) else report.to_dict()
    out: list[str] = []
    for entry in doc.get("changed", []):
        if not isinstance(entry, Mapping):
            continue
        for key in ("layer", "first", "second", "next"):
            value = entry.get(key)
            if isinstance(value, str) and value not in out:
                out.append(value)
        for value in entry.get("layers", []) or []:
            if isinstance(value, str) and value not in out:
                out.append(value)
    return out


@dataclass
class RescueResult:
    """What :func:`apply_rescue` did.

    Attributes:
        model: the transformed FP32 model (reports in its ``quantkit.transforms`` metadata).
        scales: the scales to quantize ``model`` with (re-calibrated after a
            function-preserving transform; the ones bias correction simulated).
        reports: one summary per transform that ran (:func:`summary`), in order.
        original_bias: ``{layer: (bias initializer, bias before correction)}`` of the layers
            bias correction changed.
        reference: the model before bias correction (the FP32 function ``model`` should
            approximate once quantized; ``model`` itself when no correction ran).
        layers_changed: ``{layer: [transforms that changed it]}``.
        details: the full reports (``TransformReport.to_dict()``), in order.
        statistics_passes: capture passes the activation statistics took (calibration and
            bias correction's own pass not counted).
    """

    model: onnx.ModelProto
    scales: ScaleTable
    reports: list[dict[str, Any]]
    original_bias: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    reference: onnx.ModelProto | None = None
    layers_changed: dict[str, list[str]] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    statistics_passes: int = 0

    def with_kept(self, kept: Sequence[str]) -> onnx.ModelProto:
        """The model with the kept layers' original (uncorrected) biases."""
        back = [self.original_bias[k] for k in kept if k in self.original_bias]
        if not back:
            return self.model
        import onnx
        from onnx import numpy_helper

        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        inits = {t.name: t for t in out.graph.initializer}
        for name, value in back:
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
        return out


def plan_int8_layers(model: onnx.ModelProto, config: PrecisionConfig) -> list[str]:
    """Names of the nodes a precision file puts in INT8 (what ``layers=`` should be).

    Raises:
        InputError: an override that matches no node (before any transform runs).
    """
    plan = plan_model(prepare(model, fp16=False, source="model"), config)
    return [n.name for n in plan.nodes.values() if n.precision == "int8"]


def _calibrate(model: onnx.ModelProto, ctx: RescueContext, method: str,
               method_options: Mapping[str, Any]) -> ScaleTable:
    with tempfile.TemporaryDirectory(prefix="quantkit-rescue-") as tmp:
        path = Path(tmp) / "rescued.onnx"
        save_model(model, path)
        return calibrate(path, ctx.data, method=method, method_options=dict(method_options),
                         batch_size=ctx.batch_size, max_samples=ctx.max_samples,
                         data_options=ctx.data_options).scales


def _steps(specs: str | Iterable[str] | Sequence[RescueStep], where: str) -> list[RescueStep]:
    items = [specs] if isinstance(specs, str) else list(specs)
    if items and all(isinstance(s, RescueStep) for s in items):
        return combine_rescue([s for s in items if isinstance(s, RescueStep)], [])
    return parse_rescue([str(s) for s in items], where=where)


def apply_rescue(model: onnx.ModelProto, specs: str | Iterable[str] | Sequence[RescueStep],
                 data: Any, *, scales: ScaleTable | None = None, method: str | None = None,
                 options: RunOptions | None = None, layers: Sequence[str] | None = None,
                 alpha: float | None = None, where: str = "rescue",
                 **settings: Any) -> RescueResult:
    """Apply rescue transforms to an FP32 model, calibrating where needed.

    Args:
        model: the FP32 model (not modified).
        specs: parsed steps, or spec strings for :func:`parse_rescue`.
        data: calibration data (re-readable: a file or a list of batches); the statistics
            passes and the re-calibration read it.
        scales: scales of ``model``. Without them, or after a function-preserving transform,
            the transformed model is calibrated on ``data``.
        method: calibration method (default: the method of ``scales``, else ``auto``).
        options: how the data is read (batch size, sample cap, reading options), the method's
            options and the ONNX Runtime providers (:class:`~quantkit.options.RunOptions`).
        layers: restrict smoothquant and bias correction to these node names (the plan's
            INT8 layers: an FP16 layer should keep its bias); default every layer.
        alpha: smoothquant alpha when the spec gives none (default 0.5).
        where: the parameter / key named in error messages.
        **settings: instead of ``options``, the option objects (``calibration``,
            ``data_options``, ``runtime``) or their fields as keywords (``batch_size``,
            ``max_samples``, ``method_options``, ``providers``, ...), as for
            :func:`quantkit.capture.calibrate`.

    Raises:
        InputError: bad specs, no data, or an unknown keyword.
    """
    if options is None:
        options = resolve_options(settings, "apply_rescue")
    reading = data_run(options, settings, "apply_rescue")
    batch_size, max_samples = reading.batch_size, reading.max_samples
    data_options, providers = reading.data_options, reading.providers
    method_options = dict(options.calibration.method_options)
    steps = _steps(specs, where)
    if data is None:
        raise InputError(f"{where}: the rescue transforms need calibration data (data=); "
                         "the transformed model is calibrated on it.")
    defaults = {"smoothquant": {"alpha": alpha}} if alpha is not None else {}
    plan = [(REGISTRY.get(s.name, where=where), s) for s in steps]
    todo = [(spec, spec.make_options({**defaults.get(spec.name, {}), **s.options},
                                     where=f"{where}: {s.spec()}"), spec.load())
            for spec, s in plan]
    stats = ActivationStatistics(data, batch_size=batch_size, max_samples=max_samples,
                                 data_options=data_options, providers=providers,
                                 keep=VERIFY_SAMPLES)
    ctx = RescueContext(data, batch_size, max_samples, data_options, providers,
                        list(layers) if layers is not None else None, scales, stats, where)
    how = str(method or (scales.method if scales is not None else None) or DEFAULT_METHOD)
    current = working_copy(model)  # nodes named as the Q/DQ writer and ``layers`` name them
    stale = scales is None
    reference: onnx.ModelProto | None = None
    original: dict[str, tuple[str, np.ndarray]] = {}
    reports: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    touched: dict[str, list[str]] = {}
    for i, (spec, options, impl) in enumerate(todo):
        if Statistic.SCALES in spec.statistics and stale:
            ctx.scales, stale = _calibrate(current, ctx, how, method_options or {}), False
        if reference is None and not spec.function_preserving:
            reference = current  # the FP32 function the quantized model should match
        prepared = impl.prepare(current, options, ctx)
        stats.invalidate(prepared.changed_tensors)
        if Statistic.ACTIVATION_RANGES in spec.statistics:
            # one pass for this transform and the following ones that read activations
            wanted = list(prepared.requests)
            for later, later_options, later_impl in todo[i + 1:]:
                if Statistic.ACTIVATION_RANGES not in later.statistics:
                    break
                ahead = later_impl.prepare(prepared.model, later_options, ctx)
                wanted += [r for r in ahead.requests if r.tensor not in ahead.changed_tensors]
            stats.measure(prepared.model, wanted, description=f"{spec.name} statistics")
        result = impl.apply(prepared, current, options, ctx)
        if spec.function_preserving:
            stale = True
            stats.invalidate(result.changed_tensors)
        else:
            stale = stale or Statistic.SCALES not in spec.statistics
            stats.invalidate(None)
        original.update(result.original_bias)
        current = result.model
        reports.append(summary(result.report))
        details.append(result.report.to_dict())
        for name in changed_layers(result.report):
            touched.setdefault(name, []).append(result.report.transform)
        logger.info("rescue: %s", result.report.summary())
    if stale:  # activation ranges moved
        ctx.scales = _calibrate(current, ctx, how, method_options or {})
    assert ctx.scales is not None
    return RescueResult(current, ctx.scales, reports, original, reference or current, touched,
                        details, stats.passes)


__all__ = ["PreparedStep", "RescueContext", "RescueResult", "RescueStep", "RescueTransform",
           "StepResult", "apply_rescue", "changed_layers", "combine_rescue", "parse_rescue",
           "plan_int8_layers", "summary"]
