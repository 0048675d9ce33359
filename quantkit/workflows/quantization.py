"""One quantize workflow: scales or calibration -> rescue transforms -> precision plan -> Q/DQ.

``quantkit quantize``, the sweep's configs and autotune's rescue step run through here:
:func:`rescue` is the one call of the rescue transforms (:mod:`quantkit.transforms.rescue`),
and :func:`quantize` the one sequence of calibration, rescue and writing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import onnx

from quantkit.calibrators.cache import ScaleTable
from quantkit.options import RunOptions, resolve_options
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import QuantizeResult, quantize_model
from quantkit.transforms.rescue import RescueResult, apply_rescue, plan_int8_layers


@dataclass(frozen=True)
class RescueRequest:
    """Which rescue transforms run, and on which layers.

    Attributes:
        specs: parsed steps or spec strings (``"cle,bias-correction"``, ``"smoothquant:0.8"``;
            :func:`quantkit.transforms.rescue.parse_rescue`).
        layers: restrict smoothquant and bias correction to these node names (default: all;
            :func:`quantize` uses the precision plan's INT8 layers).
        alpha: smoothquant's alpha when a spec gives none (default 0.5).
        where: the parameter or key named in error messages.
    """

    specs: tuple[Any, ...]
    layers: tuple[str, ...] | None = None
    alpha: float | None = None
    where: str = "rescue"


def _default_options(options: RunOptions | None) -> RunOptions:
    return options if options is not None else resolve_options({}, "quantize")


def rescue(model: onnx.ModelProto, request: RescueRequest, data: Any, *,
           scales: ScaleTable | None = None, options: RunOptions | None = None,
           method: str | None = None) -> RescueResult:
    """Run the rescue transforms on an FP32 model, re-calibrating where they need it.

    Args:
        model: the FP32 model (not modified).
        request: the transforms and the layers they may change.
        data: calibration data (re-readable: a file or a list of batches).
        scales: scales of ``model`` (bias correction uses them; without them, or after a
            function-preserving transform, the transformed model is calibrated on ``data``).
        options: how the data is read, the calibration's method options, the providers.
        method: the re-calibration's method (default: the method of ``scales``, else
            ``options.calibration.method``).
    """
    from quantkit.data import allow_cast

    opts = _default_options(options)
    with allow_cast(opts.data.allow_cast):
        return apply_rescue(
            model, list(request.specs), data, scales=scales, method=method, options=opts,
            layers=list(request.layers) if request.layers is not None else None,
            alpha=request.alpha, where=request.where)


@dataclass
class Quantized:
    """What :func:`quantize` produced.

    Attributes:
        result: the Q/DQ model, its plan and the tensors given Q/DQ.
        model: the FP32 model that was quantized (transformed when rescue ran).
        scales: the scales used (``None``: a plan without INT8).
        rescued: the rescue transforms' result (``None`` without rescue).
    """

    result: QuantizeResult
    model: onnx.ModelProto
    scales: ScaleTable | None
    rescued: RescueResult | None = None

    @property
    def transforms(self) -> list[dict[str, Any]]:
        """One summary per rescue transform applied (empty without rescue)."""
        return list(self.rescued.reports) if self.rescued is not None else []


def quantize(model: onnx.ModelProto, precision: PrecisionConfig, *,
             source: str | os.PathLike[str], scales: ScaleTable | None = None,
             data: Any = None, rescue_request: RescueRequest | None = None,
             options: RunOptions | None = None, fp16: bool | None = None) -> Quantized:
    """Quantize an FP32 model: calibrate (or take ``scales``), rescue, plan, insert Q/DQ.

    Args:
        model: the FP32 model (not modified).
        precision: the precision plan (overrides, default precision and float type).
        source: the model's file: calibrated when neither ``scales`` nor rescue give scales,
            and named in the plan.
        scales: scales of ``model``; without them, ``data`` is calibrated.
        data: calibration data (for calibration and rescue transforms).
        rescue_request: rescue transforms to run first; smoothquant and bias correction
            only touch the plan's INT8 layers unless the request names layers.
        options: calibration method, data reading and providers.
        fp16: make the non-INT8 part FP16 (strongly typed; default: as ``precision`` says).
    """
    opts = _default_options(options)
    rescued = None
    if rescue_request is not None and rescue_request.specs:
        request = rescue_request
        if request.layers is None:  # an FP16/FP32 layer keeps its bias
            request = replace(request, layers=tuple(plan_int8_layers(model, precision)))
        rescued = rescue(model, request, data, scales=scales, options=opts,
                         method=opts.calibration.method)
        model, scales = rescued.model, rescued.scales
    elif scales is None and data is not None:
        from quantkit.workflows.calibration import calibrate

        scales = calibrate(source, data, calibration=opts.calibration, data_options=opts.data,
                           runtime=opts.runtime).scales
    result = quantize_model(model, scales, precision, fp16=fp16, source=str(source))
    return Quantized(result, model, scales, rescued)


def int8_layers(model: onnx.ModelProto, precision: PrecisionConfig) -> Sequence[str]:
    """Names of the nodes ``precision`` puts in INT8 (empty: no scales are needed)."""
    return plan_int8_layers(model, precision)
