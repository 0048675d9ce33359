"""Rescue transforms: one spelling, one order, one implementation for every entry point.

``quantkit quantize --rescue``, the precision YAML's ``rescue:`` key, sweep recipe configs
and :func:`quantkit.sweep.autotune` all go through :func:`parse_rescue` (defined in
:mod:`quantkit.qdq.rescue_spec`, re-exported here) and :func:`apply_rescue`.

Spec strings: ``"cle,bias-correction,smoothquant:0.8"`` (or a list of such items). Names:

* ``equalize`` (``cle``): cross-layer equalization;
* ``high_bias`` (``high-bias``, ``hba``): high-bias absorption;
* ``smoothquant`` (``smooth``), optionally ``:ALPHA`` with ALPHA in (0, 1];
* ``bias_correction`` (``bias-correction``, ``bias_correct``, ``bias-correct``).

They run in that order whatever the order given; after the function-preserving ones
(equalize, high-bias absorption, smoothquant) the model is calibrated again (they move
activation ranges), and bias correction uses the scales of the model it corrects.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantkit.calibrators import DEFAULT_METHOD
from quantkit.capture import calibrate
from quantkit.errors import InputError
from quantkit.model import save_model
from quantkit.qdq.rescue_spec import (
    FUNCTION_PRESERVING,
    RESCUE_ORDER,
    RESCUE_SPELLINGS,
    RescueStep,
    combine_rescue,
    parse_rescue,
)
from quantkit.qdq.writer import plan_model, prepare
from quantkit.transforms._common import working_copy
from quantkit.transforms.bias_correction import bias_correct
from quantkit.transforms.equalize import equalize
from quantkit.transforms.high_bias import absorb_high_bias
from quantkit.transforms.smoothquant import smoothquant

if TYPE_CHECKING:
    import onnx

    from quantkit.calibrators.cache import ScaleTable
    from quantkit.qdq.plan import PrecisionConfig

logger = logging.getLogger(__name__)


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
    """

    model: onnx.ModelProto
    scales: ScaleTable
    reports: list[dict[str, Any]]
    original_bias: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    reference: onnx.ModelProto | None = None
    layers_changed: dict[str, list[str]] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)

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


def _calibrate(model: onnx.ModelProto, data: Any, method: str,
               method_options: Mapping[str, Any], run: Mapping[str, Any]) -> ScaleTable:
    with tempfile.TemporaryDirectory(prefix="quantkit-rescue-") as tmp:
        path = Path(tmp) / "rescued.onnx"
        save_model(model, path)
        return calibrate(path, data, method=method, method_options=dict(method_options),
                         **{k: v for k, v in run.items() if k != "providers"}).scales


def _original_biases(before: onnx.ModelProto, after: onnx.ModelProto,
                     changed: Iterable[str]) -> dict[str, tuple[str, np.ndarray]]:
    from onnx import numpy_helper

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


def apply_rescue(model: onnx.ModelProto, specs: str | Iterable[str] | Sequence[RescueStep],
                 data: Any, *, scales: ScaleTable | None = None, method: str | None = None,
                 method_options: Mapping[str, Any] | None = None, batch_size: int = 32,
                 max_samples: int | None = None, data_options: Mapping[str, Any] | None = None,
                 providers: Sequence[str] | None = None, layers: Sequence[str] | None = None,
                 alpha: float | None = None, where: str = "rescue") -> RescueResult:
    """Apply rescue transforms to an FP32 model, calibrating where needed.

    Args:
        model: the FP32 model (not modified).
        specs: parsed steps, or spec strings for :func:`parse_rescue`.
        data: calibration data (re-readable: a file or a list of batches); every transform
            and the re-calibration read it.
        scales: scales of ``model``. Without them, or after a function-preserving transform,
            the transformed model is calibrated on ``data``.
        method: calibration method (default: the method of ``scales``, else ``auto``).
        method_options: options of the method (e.g. ``{"percentile": 99.99}``).
        batch_size: samples per batch.
        max_samples: use at most this many samples.
        data_options: options for ``open_source``.
        providers: ONNX Runtime execution providers of the transforms.
        layers: restrict smoothquant and bias correction to these node names (the plan's
            INT8 layers: an FP16 layer should keep its bias); default every layer.
        alpha: smoothquant alpha when the spec gives none (default 0.5).
        where: the flag / key named in error messages.

    Raises:
        InputError: bad specs or no data.
    """
    items = [specs] if isinstance(specs, str) else list(specs)
    if items and all(isinstance(s, RescueStep) for s in items):
        steps = combine_rescue([s for s in items if isinstance(s, RescueStep)], [])
    else:
        steps = parse_rescue([str(s) for s in items], where=where)
    if data is None:
        raise InputError(f"{where}: the rescue transforms need calibration data (--data); "
                         "the transformed model is calibrated on it.")

    run: dict[str, Any] = {"batch_size": batch_size, "max_samples": max_samples,
                           "data_options": data_options, "providers": providers}
    sub = list(layers) if layers is not None else None
    current = working_copy(model)  # nodes named as the Q/DQ writer and ``layers`` name them
    reports: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    touched: dict[str, list[str]] = {}

    def keep(rep: Any) -> None:
        reports.append(summary(rep))
        details.append(rep.to_dict())
        for name in changed_layers(rep):
            touched.setdefault(name, []).append(rep.transform)
        logger.info("rescue: %s", rep.summary())

    names = [s.name for s in steps]
    for step in steps:
        if step.name == "equalize":
            # with data: verified on its first samples, refused if the FP32 output moves
            current, rep = equalize(current, data=data, batch_size=run.get("batch_size", 32),
                                    data_options=run.get("data_options"),
                                    providers=run.get("providers"))
        elif step.name == "high_bias":
            current, rep = absorb_high_bias(current, data, **run)
        elif step.name == "smoothquant":
            a = step.options.get("alpha", alpha if alpha is not None else 0.5)
            wanted = set(sub or ())
            mm = None if sub is None else [n.name for n in current.graph.node
                                           if n.name in wanted
                                           and n.op_type in ("MatMul", "Gemm")]
            current, rep = smoothquant(current, data, alpha=float(a), layers=mm, verify=True,
                                       **run)
        else:
            continue  # bias correction: after the re-calibration
        keep(rep)
    if scales is None or FUNCTION_PRESERVING & set(names):  # activation ranges moved
        how = str(method or (scales.method if scales is not None else None) or DEFAULT_METHOD)
        scales = _calibrate(current, data, how, method_options or {}, run)
    reference = current
    original: dict[str, tuple[str, np.ndarray]] = {}
    if "bias_correction" in names:
        before = working_copy(current)
        current, rep = bias_correct(current, data, scales=scales, layers=sub, **run)
        keep(rep)
        original = _original_biases(before, current, (c["layer"] for c in rep.changed))
    return RescueResult(current, scales, reports, original, reference, touched, details)


__all__ = ["FUNCTION_PRESERVING", "RESCUE_ORDER", "RESCUE_SPELLINGS", "RescueResult",
           "RescueStep", "apply_rescue", "changed_layers", "combine_rescue", "parse_rescue",
           "plan_int8_layers", "summary"]
