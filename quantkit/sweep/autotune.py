"""Accuracy-target search for the fewest layers kept out of INT8.

1. Score FP32 and all-INT8. Within the target already: done, nothing kept out.
2. Rank layers by sensitivity (:mod:`.sensitivity`): the accuracy regained when the layer
   alone leaves INT8, then the SQNR when it alone is INT8.
3. Find the shortest prefix of that ranking that meets the target (exponential then binary
   search over the prefix length: few evaluations even for 60+ layers).
4. Verification/pruning pass: try putting each kept layer back into INT8, latest first; keep
   it INT8 when the target still holds.

The result is a precision file (``overrides: [{name: ..., precision: fp16}]``) that users can
commit and edit, with the number of evaluations it took. An unreachable target is reported
with the best configuration found.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from quantkit.calibrators.cache import ScaleTable
from quantkit.qdq.plan import PrecisionConfig, Rule
from quantkit.qdq.writer import quantize_model
from quantkit.sweep.scoring import Evaluator, Score
from quantkit.sweep.sensitivity import LayerSensitivity, layer_sensitivity, rank

logger = logging.getLogger(__name__)


@dataclass
class AutotuneResult:
    """The outcome of :func:`autotune`."""

    config: PrecisionConfig
    kept: list[str]
    reached: bool
    target_drop: float
    fp32: Score
    all_int8: Score
    final: Score
    evaluations: int
    sensitivity: list[LayerSensitivity]
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``autotune.json``)."""
        return {
            "target_drop": self.target_drop, "reached": self.reached,
            "fp32_accuracy": self.fp32.accuracy, "int8_accuracy": self.all_int8.accuracy,
            "final_accuracy": self.final.accuracy, "final_agreement": self.final.agreement,
            "kept": self.kept, "kept_precision": self.keep_as,
            "evaluations": self.evaluations, "steps": self.steps,
        }

    def to_yaml(self) -> str:
        """The precision file to commit."""
        import yaml

        doc: dict[str, Any] = {"default": "int8", "default_float": self.config.default_float,
                               "overrides": [{"name": n, "precision": self.keep_as}
                                             for n in self.kept]}
        head = (f"# quantkit autotune: target drop <= {self.target_drop} points; "
                f"{'reached' if self.reached else 'NOT reached'}: accuracy "
                f"{self.final.accuracy:.3f} (FP32 {self.fp32.accuracy:.3f}, all-INT8 "
                f"{self.all_int8.accuracy:.3f}); {len(self.kept)} layer(s) kept out of INT8; "
                f"{self.evaluations} evaluations\n")
        return head + str(yaml.safe_dump(doc, sort_keys=False))

    @property
    def keep_as(self) -> str:
        """Precision given to kept layers."""
        return str(self.config.default_float)


def _with_kept(base: PrecisionConfig, kept: Sequence[str]) -> PrecisionConfig:
    keep = base.default_float
    return PrecisionConfig(default="int8", default_float=base.default_float,
                           overrides=tuple(Rule(name=n, precision=keep) for n in kept))


def autotune(model: onnx.ModelProto, scales: ScaleTable, evaluator: Evaluator,
             max_accuracy_drop: float, *, base: PrecisionConfig | None = None,
             max_evaluations: int = 200,
             sensitivity: Sequence[LayerSensitivity] | None = None) -> AutotuneResult:
    """Find a small set of layers to keep out of INT8 so the drop stays <= the target.

    Args:
        model: the FP32 model.
        scales: calibration scales.
        evaluator: evaluation batches with cached FP32 outputs.
        max_accuracy_drop: the target, in metric points (percent for top-1/agreement).
        base: the INT8 configuration (its ``default_float`` is what kept layers run in).
        max_evaluations: stop searching after this many evaluations.
        sensitivity: reuse an earlier sensitivity analysis.
    """
    base = base or PrecisionConfig()
    start = evaluator.evaluations
    steps: list[dict[str, Any]] = []
    fp32 = evaluator.reference_score()
    cache: dict[tuple[str, ...], Score] = {}
    best: list[Any] = [None, None]  # kept layers, score with the smallest drop so far

    def score(kept: Sequence[str]) -> Score:
        key = tuple(sorted(kept))
        if key not in cache:
            cache[key] = evaluator.score(quantize_model(model, scales,
                                                        _with_kept(base, kept)).model)
            steps.append({"kept": len(kept), "accuracy": cache[key].accuracy})
            if best[1] is None or evaluator.drop(fp32, cache[key]) < evaluator.drop(fp32,
                                                                                    best[1]):
                best[:] = [list(kept), cache[key]]
        return cache[key]

    def ok(s: Score) -> bool:
        return evaluator.drop(fp32, s) <= max_accuracy_drop + 1e-9

    def budget() -> bool:
        return evaluator.evaluations - start < max_evaluations

    all_int8 = score([])
    sens = list(sensitivity) if sensitivity is not None else []
    if ok(all_int8):
        return AutotuneResult(_with_kept(base, []), [], True, max_accuracy_drop, fp32,
                              all_int8, all_int8, evaluator.evaluations - start, sens, steps)
    if not sens:
        sens = layer_sensitivity(model, scales, evaluator, base)
    order = [r.layer for r in rank(sens, all_int8, evaluator.higher_is_better)]
    # exponential search for a prefix that meets the target
    hi, lo = 1, 0
    while hi < len(order) and not ok(score(order[:hi])) and budget():
        lo, hi = hi, min(2 * hi, len(order))
    if not ok(score(order[:hi])):
        kept_best, final = best
        logger.warning("autotune: target not reachable (best drop %.3f with %d layers out)",
                       evaluator.drop(fp32, final), len(kept_best))
        return AutotuneResult(_with_kept(base, kept_best), list(kept_best), False,
                              max_accuracy_drop, fp32, all_int8, final,
                              evaluator.evaluations - start, sens, steps)
    while hi - lo > 1 and budget():  # binary search: shortest passing prefix
        mid = (lo + hi) // 2
        if ok(score(order[:mid])):
            hi = mid
        else:
            lo = mid
    kept = list(order[:hi])
    for layer in reversed(list(kept)):  # pruning pass: put layers back into INT8
        if not budget():
            break
        trial = [k for k in kept if k != layer]
        if ok(score(trial)):
            kept = trial
    final = score(kept)
    return AutotuneResult(_with_kept(base, kept), kept, True, max_accuracy_drop, fp32,
                          all_int8, final, evaluator.evaluations - start, sens, steps)
