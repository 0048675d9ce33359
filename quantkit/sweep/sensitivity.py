"""Per-layer sensitivity: what each quantizable layer costs in INT8.

Two probes per layer, scored against cached FP32 outputs with the same calibration scales
(nothing is re-calibrated):

* ``int8_only``: only this layer INT8, everything else FP32 -- the error this layer adds;
* ``fp16_only``: everything INT8 except this layer (left in ``default_float``) -- what
  keeping this one layer out of INT8 buys back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from quantkit._log import track
from quantkit.calibrators.cache import ScaleTable
from quantkit.qdq.plan import PrecisionConfig, Rule
from quantkit.qdq.writer import plan_model, prepare, quantize_model
from quantkit.sweep.scoring import Evaluator, Score

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSensitivity:
    """The two probes of one layer."""

    layer: str
    op_type: str
    int8_only: Score
    fp16_only: Score


def quantizable_layers(model: onnx.ModelProto, base: PrecisionConfig) -> list[tuple[str, str]]:
    """``(node name, op type)`` of the layers the base plan puts in INT8."""
    prepared = prepare(model, fp16=False, source="model")
    plan = plan_model(prepared, base.model_copy(update={"overrides": ()}))
    return [(n.name, n.op_type) for n in plan.nodes.values() if n.precision == "int8"]


def _config(base: PrecisionConfig, layer: str, mode: str) -> PrecisionConfig:
    if mode == "int8_only":
        return PrecisionConfig(default="fp32", default_float=base.default_float,
                               overrides=(Rule(name=layer, precision="int8"),))
    keep = base.default_float
    return PrecisionConfig(default="int8", default_float=base.default_float,
                           overrides=(Rule(name=layer, precision=keep),))


def layer_sensitivity(model: onnx.ModelProto, scales: ScaleTable, evaluator: Evaluator,
                      base: PrecisionConfig | None = None,
                      layers: Sequence[tuple[str, str]] | None = None,
                      ) -> list[LayerSensitivity]:
    """Probe every quantizable layer (or ``layers``) and return the results in graph order.

    Args:
        model: the FP32 model.
        scales: calibration scales (reused by every probe).
        evaluator: cached evaluation batches and FP32 outputs.
        base: the INT8 configuration probed around (default: INT8 + FP32 rest).
        layers: restrict to these ``(name, op_type)`` layers.
    """
    base = base or PrecisionConfig()
    todo = list(layers) if layers is not None else quantizable_layers(model, base)
    out: list[LayerSensitivity] = []
    for name, op in track(todo, total=len(todo), description="sensitivity"):
        scores: dict[str, Score] = {}
        for mode in ("int8_only", "fp16_only"):
            res = quantize_model(model, scales, _config(base, name, mode))
            scores[mode] = evaluator.score(res.model)
        out.append(LayerSensitivity(name, op, scores["int8_only"], scores["fp16_only"]))
        logger.info("%s: int8-only SQNR %.1f dB, fp16-only accuracy %.3f", name,
                    scores["int8_only"].sqnr_db, scores["fp16_only"].accuracy)
    return out


def rank(results: Sequence[LayerSensitivity], all_int8: Score,
         higher_is_better: bool = True) -> list[LayerSensitivity]:
    """Most sensitive first.

    Ordered by the accuracy regained when the layer alone leaves INT8, then by the lowest
    SQNR when it alone is INT8.
    """
    sign = 1.0 if higher_is_better else -1.0

    def key(r: LayerSensitivity) -> tuple[float, float]:
        gain = sign * (r.fp16_only.accuracy - all_int8.accuracy)
        return (-gain, r.int8_only.sqnr_db)

    return sorted(results, key=key)
