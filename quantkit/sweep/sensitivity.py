"""Per-layer sensitivity: what each quantizable layer costs in INT8.

Two probes per layer, scored against cached FP32 outputs with the same calibration scales
(nothing is re-calibrated):

* ``int8_only``: only this layer INT8, everything else FP32 -- the error this layer adds;
* ``fp16_only``: everything INT8 except this layer (left in ``default_float``) -- what
  keeping this one layer out of INT8 buys back.

With a base plan whose ``default`` is ``fp8`` the probes are the same in FP8 (each layer alone
in FP8; everything FP8 but this layer); the fields keep their INT8 names.

The layers are independent tasks (both probes of a layer are one task): with an executor
(:mod:`quantkit.sweep.executor`, e.g. the Ray executor) they run in parallel, and the results
are the same as in-process (each probe is a deterministic ONNX Runtime evaluation).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import onnx

from quantkit._log import track
from quantkit.calibrators.cache import ScaleTable
from quantkit.qdq.plan import PrecisionConfig, Rule
from quantkit.qdq.rules import QUANTIZED_PRECISIONS
from quantkit.qdq.writer import plan_model, prepare, quantize_model
from quantkit.sweep.executor import Executor, LocalExecutor
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
    """``(node name, op type)`` of the layers the base plan puts in INT8 (or FP8)."""
    prepared = prepare(model, fp16=False, source="model")
    plan = plan_model(prepared, base.model_copy(update={"overrides": ()}))
    return [(n.name, n.op_type) for n in plan.nodes.values()
            if n.precision in QUANTIZED_PRECISIONS]


def _config(base: PrecisionConfig, layer: str, mode: str) -> PrecisionConfig:
    quantized = base.default if base.default in QUANTIZED_PRECISIONS else "int8"
    if mode == "int8_only":
        return PrecisionConfig(default="fp32", default_float=base.default_float,
                               overrides=(Rule(name=layer, precision=quantized),))
    keep = base.default_float
    return PrecisionConfig(default=quantized, default_float=base.default_float,
                           overrides=(Rule(name=layer, precision=keep),))


@dataclass(frozen=True)
class _Probes:
    """What every probe task needs (sent once per task, or once per cluster with Ray)."""

    model: onnx.ModelProto
    scales: ScaleTable
    evaluator: Evaluator
    base: PrecisionConfig


def _probe_layer(job: _Probes,
                 item: tuple[int, tuple[str, str]]) -> tuple[LayerSensitivity, int]:
    """Both probes of the layer ``item = (index, (name, op_type))``, and the evaluations."""
    _, (name, op) = item
    before = job.evaluator.evaluations
    scores: dict[str, Score] = {}
    for mode in ("int8_only", "fp16_only"):
        res = quantize_model(job.model, job.scales, _config(job.base, name, mode))
        scores[mode] = job.evaluator.score(res.model)
    return (LayerSensitivity(name, op, scores["int8_only"], scores["fp16_only"]),
            job.evaluator.evaluations - before)


def layer_sensitivity(model: onnx.ModelProto, scales: ScaleTable, evaluator: Evaluator,
                      base: PrecisionConfig | None = None,
                      layers: Sequence[tuple[str, str]] | None = None, *,
                      executor: Executor | None = None, threads: int | None = None,
                      ) -> list[LayerSensitivity]:
    """Probe every quantizable layer (or ``layers``) and return the results in graph order.

    Args:
        model: the FP32 model.
        scales: calibration scales (reused by every probe).
        evaluator: cached evaluation batches and FP32 outputs.
        base: the INT8 configuration probed around (default: INT8 + FP32 rest).
        layers: restrict to these ``(name, op_type)`` layers.
        executor: where the probes run, one task per layer (default: in-process, in order).
            With a process pool or Ray, the model, scales and evaluator are sent to the
            workers; ``evaluator.evaluations`` still counts every probe.
        threads: ONNX Runtime threads per probe (default: the evaluator's); e.g. ``1`` when
            the executor runs one task per core.
    """
    base = base or PrecisionConfig()
    todo = list(layers) if layers is not None else quantizable_layers(model, base)
    ev = evaluator
    if threads is not None and threads != evaluator.threads:
        ev = copy.copy(evaluator)  # shares the batches and reference outputs
        ev.threads = threads
    start = evaluator.evaluations
    ex = executor or LocalExecutor()
    found: dict[int, LayerSensitivity] = {}
    counted = 0
    results = ex.map_unordered(partial(_probe_layer, _Probes(model, scales, ev, base)),
                               list(enumerate(todo)))
    # the bar advances as results arrive (with Ray, submitting is instant)
    for (i, _), res in track(results, total=len(todo), description="sensitivity"):
        if isinstance(res, BaseException):
            raise res
        found[i], n = res
        counted += n
        r = found[i]
        logger.info("%s: int8-only SQNR %.1f dB, fp16-only accuracy %.3f", r.layer,
                    r.int8_only.sqnr_db, r.fp16_only.accuracy)
    # in-process the evaluator counted already; in workers, only their copies did
    evaluator.evaluations = start + counted
    return [found[i] for i in range(len(todo))]


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
