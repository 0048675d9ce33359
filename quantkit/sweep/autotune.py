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

Rescue transforms (opt-in, ``rescue=``): before step 1 the FP32 model goes through
:mod:`quantkit.transforms` -- ``equalize``, ``smoothquant`` (both function-preserving; the
model is then re-calibrated on ``rescue_data``) and ``bias_correction`` (with the scales
used for the search) -- and the search runs on the transformed model, so layers that the
transform rescues need not leave INT8. Bias correction is per layer and independent, so a
layer kept out of INT8 gets its original bias back in every candidate (its FP16/FP32 output
should not carry a correction for INT8 error it no longer has); the sensitivity analysis
(step 2) runs on the fully corrected model. The precision file is for the *transformed*
model (:attr:`AutotuneResult.model`; the CLI writes it next to the file) and its header and
``autotune.json`` name the transforms applied.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.calibrators.cache import ScaleTable
from quantkit.errors import InputError
from quantkit.qdq.plan import PrecisionConfig, Rule
from quantkit.qdq.writer import quantize_model
from quantkit.sweep.executor import Executor
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
    #: rescue transforms applied to the FP32 model before the search (summaries, in order).
    rescue: list[dict[str, Any]] = field(default_factory=list)
    #: the transformed FP32 model the precision file is for (None without rescue).
    model: onnx.ModelProto | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``autotune.json``)."""
        return {
            "target_drop": self.target_drop, "reached": self.reached,
            "fp32_accuracy": self.fp32.accuracy, "int8_accuracy": self.all_int8.accuracy,
            "final_accuracy": self.final.accuracy, "final_agreement": self.final.agreement,
            "kept": self.kept, "kept_precision": self.keep_as,
            "evaluations": self.evaluations, "steps": self.steps,
            "rescue": self.rescue,
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
        if self.rescue:
            head += ("# for the FP32 model after the rescue transforms: "
                     + "; ".join(f"{r['transform']} ({r['changed']} changed)"
                                 for r in self.rescue) + "\n")
        return head + str(yaml.safe_dump(doc, sort_keys=False))

    @property
    def keep_as(self) -> str:
        """Precision given to kept layers."""
        return str(self.config.default_float)


def _with_kept(base: PrecisionConfig, kept: Sequence[str]) -> PrecisionConfig:
    keep = base.default_float
    return PrecisionConfig(default="int8", default_float=base.default_float,
                           overrides=tuple(Rule(name=n, precision=keep) for n in kept))


#: rescue transform names (and CLI spellings) -> canonical names, in the order they run.
RESCUE_TRANSFORMS = {"equalize": "equalize", "cle": "equalize",
                     "smoothquant": "smoothquant", "smooth": "smoothquant",
                     "bias_correction": "bias_correction", "bias-correct": "bias_correction",
                     "bias_correct": "bias_correction"}
_RESCUE_ORDER = ("equalize", "smoothquant", "bias_correction")


@dataclass
class _Rescued:
    model: onnx.ModelProto
    scales: ScaleTable
    reports: list[dict[str, Any]]
    original_bias: dict[str, tuple[str, np.ndarray]]  # layer -> (bias initializer, original)

    def with_kept(self, kept: Sequence[str]) -> onnx.ModelProto:
        """The model with the kept layers' original (uncorrected) biases."""
        back = [self.original_bias[k] for k in kept if k in self.original_bias]
        if not back:
            return self.model
        from onnx import numpy_helper

        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        inits = {t.name: t for t in out.graph.initializer}
        for name, value in back:
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
        return out


def _rescue(model: onnx.ModelProto, scales: ScaleTable, names: Sequence[str], data: Any,
            options: Mapping[str, Any]) -> _Rescued:
    """Apply the rescue transforms; re-calibrate after function-preserving ones."""
    from onnx import numpy_helper

    from quantkit.transforms import bias_correct, equalize, smoothquant
    from quantkit.transforms._common import working_copy

    unknown = [n for n in names if n not in RESCUE_TRANSFORMS]
    if unknown:
        raise InputError(f"autotune: unknown rescue transform(s) {unknown}; choose from "
                         f"{sorted(set(RESCUE_TRANSFORMS))}.")
    todo = {RESCUE_TRANSFORMS[n] for n in names}
    if data is None:  # all need it (equalize: for the re-calibration)
        raise InputError("autotune: the rescue transforms need calibration data "
                         "(rescue_data / --data).")
    run = {k: options[k] for k in ("batch_size", "max_samples", "data_options", "providers")
           if k in options}
    current = model
    reports: list[dict[str, Any]] = []

    def summary(rep: Any) -> dict[str, Any]:
        return {"transform": rep.transform, "changed": len(rep.changed),
                "skipped": len(rep.skipped), "settings": rep.settings}

    if "equalize" in todo:
        current, rep = equalize(current)
        reports.append(summary(rep))
    if "smoothquant" in todo:
        current, rep = smoothquant(current, data, alpha=float(options.get("alpha", 0.5)),
                                   **run)
        reports.append(summary(rep))
    if todo & {"equalize", "smoothquant"}:  # activation ranges moved: calibrate again
        from quantkit.capture import calibrate
        from quantkit.model import save_model

        with tempfile.TemporaryDirectory(prefix="quantkit-autotune-") as tmp:
            path = Path(tmp) / "rescued.onnx"
            save_model(current, path)
            scales = calibrate(path, data, method=str(options.get("method", scales.method)),
                               method_options=dict(options.get("method_options", {})),
                               **{k: v for k, v in run.items() if k != "providers"}).scales
    original: dict[str, tuple[str, np.ndarray]] = {}
    if "bias_correction" in todo:
        before = working_copy(current)
        inits = {t.name: t for t in before.graph.initializer}
        current, rep = bias_correct(current, data, scales=scales, **run)
        reports.append(summary(rep))
        nodes_before = {n.name: n for n in before.graph.node}
        for node in current.graph.node:
            if node.name not in {c["layer"] for c in rep.changed} or len(node.input) < 3:
                continue
            old = nodes_before[node.name]
            bias = next(t for t in current.graph.initializer if t.name == node.input[2])
            value = numpy_helper.to_array(inits[old.input[2]]) \
                if len(old.input) > 2 and old.input[2] in inits \
                else np.zeros_like(numpy_helper.to_array(bias))
            original[node.name] = (node.input[2], value)
    return _Rescued(current, scales, reports, original)


def autotune(model: onnx.ModelProto, scales: ScaleTable, evaluator: Evaluator,
             max_accuracy_drop: float, *, base: PrecisionConfig | None = None,
             max_evaluations: int = 200,
             sensitivity: Sequence[LayerSensitivity] | None = None,
             rescue: Sequence[str] = (), rescue_data: Any = None,
             rescue_options: Mapping[str, Any] | None = None,
             executor: Executor | None = None, threads: int | None = None) -> AutotuneResult:
    """Find a small set of layers to keep out of INT8 so the drop stays <= the target.

    Args:
        model: the FP32 model.
        scales: calibration scales.
        evaluator: evaluation batches with cached FP32 outputs.
        max_accuracy_drop: the target, in metric points (percent for top-1/agreement).
        base: the INT8 configuration (its ``default_float`` is what kept layers run in).
        max_evaluations: stop searching after this many evaluations.
        sensitivity: reuse an earlier sensitivity analysis (of the transformed model when
            ``rescue`` is given).
        rescue: transforms to apply to the FP32 model first (opt-in): any of
            ``"equalize"``, ``"smoothquant"``, ``"bias_correction"`` (run in that order).
        rescue_data: calibration data for the transforms (and the re-calibration after
            ``equalize`` / ``smoothquant``); re-readable (a file or a list of batches).
        rescue_options: ``batch_size``, ``max_samples``, ``data_options``, ``providers``;
            ``method`` / ``method_options`` for the re-calibration (default: the method of
            ``scales``, default options); ``alpha`` for smoothquant.
        executor: runs the sensitivity probes (one task per layer; default in-process).
        threads: ONNX Runtime threads per probe task.
    """
    base = base or PrecisionConfig()
    rescued: _Rescued | None = None
    if rescue:
        rescued = _rescue(model, scales, list(rescue), rescue_data, rescue_options or {})
        model, scales = rescued.model, rescued.scales
        logger.info("autotune: rescue transforms applied: %s",
                    ", ".join(f"{r['transform']} ({r['changed']} changed)"
                              for r in rescued.reports))

    def variant(kept: Sequence[str]) -> onnx.ModelProto:
        return rescued.with_kept(kept) if rescued is not None else model

    def done(res: AutotuneResult) -> AutotuneResult:
        if rescued is not None:
            res.rescue = rescued.reports
            res.model = rescued.with_kept(res.kept)
        return res

    start = evaluator.evaluations
    steps: list[dict[str, Any]] = []
    fp32 = evaluator.reference_score()
    cache: dict[tuple[str, ...], Score] = {}
    best: list[Any] = [None, None]  # kept layers, score with the smallest drop so far

    def score(kept: Sequence[str]) -> Score:
        key = tuple(sorted(kept))
        if key not in cache:
            cache[key] = evaluator.score(quantize_model(variant(kept), scales,
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
        return done(AutotuneResult(_with_kept(base, []), [], True, max_accuracy_drop, fp32,
                                   all_int8, all_int8, evaluator.evaluations - start, sens,
                                   steps))
    if not sens:
        sens = layer_sensitivity(model, scales, evaluator, base, executor=executor,
                                 threads=threads)
    order = [r.layer for r in rank(sens, all_int8, evaluator.higher_is_better)]
    # exponential search for a prefix that meets the target
    hi, lo = 1, 0
    while hi < len(order) and not ok(score(order[:hi])) and budget():
        lo, hi = hi, min(2 * hi, len(order))
    if not ok(score(order[:hi])):
        kept_best, final = best
        logger.warning("autotune: target not reachable (best drop %.3f with %d layers out)",
                       evaluator.drop(fp32, final), len(kept_best))
        return done(AutotuneResult(_with_kept(base, kept_best), list(kept_best), False,
                                   max_accuracy_drop, fp32, all_int8, final,
                                   evaluator.evaluations - start, sens, steps))
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
    return done(AutotuneResult(_with_kept(base, kept), kept, True, max_accuracy_drop, fp32,
                               all_int8, final, evaluator.evaluations - start, sens, steps))
