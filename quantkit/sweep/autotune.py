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
with the best configuration found. The search optimises the evaluator's task metric (e.g. a
detection F1 against the FP32 boxes), or the top-1 agreement when there is none.

A target met only by keeping (nearly) everything out of INT8 -- more than
:data:`NEARLY_ALL_FLOAT` of the compute layers -- is said plainly: a log warning, the
``notice`` of ``autotune.json`` and the precision file's header, with what it costs in
estimated latency against all-INT8 on the first of ``estimate_gpus`` (or that the cost is
unknown when no GPU is named or the estimate fails).

Rescue transforms (opt-in, ``rescue=``; :mod:`quantkit.transforms.rescue`): before step 1
the FP32 model goes through the transforms -- ``equalize``, ``high_bias``, ``smoothquant``
(function-preserving; the model is then re-calibrated on ``rescue_data``) and
``bias_correction`` (with the scales used for the search) -- and the search runs on the
transformed model, so layers that the transform rescues need not leave INT8. Bias correction
is per layer and independent, so a layer kept out of INT8 gets its original bias back in every
candidate (its FP16/FP32 output should not carry a correction for INT8 error it no longer
has); the sensitivity analysis (step 2) runs on the fully corrected model. The precision file
is for the *transformed* model (:attr:`AutotuneResult.model`; the CLI writes it next to the
file) and its header and ``autotune.json`` name the transforms applied.

Per-layer report (:attr:`AutotuneResult.layers`): for every layer the search tried out of
INT8 (the longest ranked prefix it evaluated) and every kept layer, the SQNR of its output in
the all-INT8 model without and with the rescue transforms (:mod:`.layer_sqnr`: one ONNX Runtime
pass per model over the evaluation batches) and the outcome: kept out of INT8, ``rescued``
(INT8 in the final plan with a higher SQNR after the rescue) or ``int8``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from quantkit.calibrators.cache import ScaleTable
from quantkit.errors import InputError
from quantkit.options import resolve_options
from quantkit.qdq.plan import PrecisionConfig, Rule
from quantkit.qdq.writer import quantize_model
from quantkit.sweep.executor import Executor
from quantkit.sweep.layer_sqnr import LayerOutcome, layer_report, layer_sqnr
from quantkit.sweep.scoring import Evaluator, Score
from quantkit.sweep.sensitivity import (
    LayerSensitivity,
    layer_sensitivity,
    quantizable_layers,
    rank,
)
from quantkit.transforms.rescue import RescueResult, parse_rescue
from quantkit.workflows import RescueRequest, rescue

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
    #: per layer the search considered keeping out of INT8 (and every kept layer): its
    #: all-INT8 output SQNR without / with the rescue transforms and what became of it.
    layers: list[LayerOutcome] = field(default_factory=list)
    #: the task metric optimised (``None``: top-1 agreement with FP32)
    metric: str | None = None
    #: compute layers the base plan puts in INT8 (the most that can be kept out)
    compute_layers: int = 0
    #: set when the target was met only by keeping nearly every compute layer out of INT8
    notice: str | None = None
    #: estimated latency of the result and of all-INT8 on a GPU (``None``: not estimated)
    latency_cost: dict[str, Any] | None = None

    @property
    def kept_fraction(self) -> float:
        """Share of the compute layers kept out of INT8 (0 when there are none)."""
        return len(self.kept) / self.compute_layers if self.compute_layers else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``autotune.json``)."""
        return {
            "target_drop": self.target_drop, "reached": self.reached,
            "fp32_accuracy": self.fp32.accuracy, "int8_accuracy": self.all_int8.accuracy,
            "final_accuracy": self.final.accuracy, "final_agreement": self.final.agreement,
            "kept": self.kept, "kept_precision": self.keep_as,
            "evaluations": self.evaluations, "steps": self.steps,
            "rescue": self.rescue, "layers": [r.to_dict() for r in self.layers],
            "metric": self.metric or "agreement", "compute_layers": self.compute_layers,
            "kept_fraction": self.kept_fraction, "nearly_all_float": self.notice is not None,
            "notice": self.notice, "latency_cost": self.latency_cost,
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
                f"{self.evaluations} evaluations; metric {self.metric or 'agreement'}\n")
        if self.notice:
            head += "".join(f"# WARNING: {line}\n" for line in _wrap(self.notice))
        if self.rescue:
            head += ("# for the FP32 model after the rescue transforms: "
                     + "; ".join(f"{r['transform']} ({r['changed']} changed)"
                                 for r in self.rescue) + "\n")
        if self.layers:
            head += ("# per layer (all-INT8 output SQNR without -> with rescue):\n"
                     + "".join("#   " + " ".join(r.line().split()) + "\n"
                               for r in self.layers))
        return head + str(yaml.safe_dump(doc, sort_keys=False))

    @property
    def keep_as(self) -> str:
        """Precision given to kept layers."""
        return str(self.config.default_float)


#: share of the compute layers above which a met target is reported as "nearly all float"
NEARLY_ALL_FLOAT = 0.8


def _wrap(text: str, width: int = 96) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [text]


def _latency_cost(model: onnx.ModelProto, scales: ScaleTable, base: PrecisionConfig,
                  kept: Sequence[str], gpus: Sequence[str], feed: Any) -> dict[str, Any]:
    """Estimated latency of the kept-out plan and of all-INT8 on ``gpus[0]`` (or why not)."""
    if not gpus:
        return {"gpu": None, "error": "no GPU named for a latency estimate"}
    import tempfile
    from pathlib import Path

    from quantkit.errors import QuantkitError
    from quantkit.latency import estimate_model
    from quantkit.model import save_model

    shapes = {name: [int(d) for d in arr.shape] for name, arr in feed.items()}
    out: dict[str, Any] = {"gpu": gpus[0]}
    try:
        with tempfile.TemporaryDirectory(prefix="quantkit-autotune-") as tmp:
            for key, plan in (("kept_ms", _with_kept(base, kept)),
                              ("all_int8_ms", _with_kept(base, []))):
                path = Path(tmp) / f"{key}.onnx"
                save_model(quantize_model(model, scales, plan).model, path)
                out[key] = float(estimate_model(path, gpus[0], shapes=shapes).latency_ms)
    except (QuantkitError, ImportError, OSError) as err:
        return {"gpu": gpus[0], "error": str(err)}
    return out


def _float_notice(res: AutotuneResult, cost: dict[str, Any] | None) -> str:
    pct = 100.0 * res.kept_fraction
    text = (f"the target was met only by keeping {len(res.kept)} of {res.compute_layers} "
            f"compute layers ({pct:.0f} %) out of INT8 in {res.keep_as}: the result is "
            f"close to the {res.keep_as} model, not an INT8 one. ")
    if cost and "kept_ms" in cost:
        ratio = cost["kept_ms"] / cost["all_int8_ms"] if cost["all_int8_ms"] else float("nan")
        text += (f"Estimated latency on {cost['gpu']}: {cost['kept_ms']:.3f} ms against "
                 f"{cost['all_int8_ms']:.3f} ms all-INT8 ({ratio:.2f}x).")
    else:
        why = (cost or {}).get("error", "no estimate")
        text += f"What that costs in latency is unknown ({why})."
    return text


def _with_kept(base: PrecisionConfig, kept: Sequence[str]) -> PrecisionConfig:
    keep = base.default_float
    return PrecisionConfig(default="int8", default_float=base.default_float,
                           overrides=tuple(Rule(name=n, precision=keep) for n in kept))



@dataclass(frozen=True)
class SearchOptions:
    """How :func:`autotune` searches.

    Attributes:
        max_evaluations: stop searching after this many evaluations.
        sensitivity: reuse an earlier sensitivity analysis (of the transformed model when
            rescue transforms run).
        executor: runs the sensitivity probes (one task per layer; default in-process).
        threads: ONNX Runtime threads per probe task.
        estimate_gpus: GPUs of the latency model; the first prices a result that keeps
            nearly everything out of INT8 (estimated latency against all-INT8).
    """

    max_evaluations: int = 200
    sensitivity: Sequence[LayerSensitivity] | None = None
    executor: Executor | None = None
    threads: int | None = None
    estimate_gpus: Sequence[str] = ()


def autotune(model: onnx.ModelProto, scales: ScaleTable, evaluator: Evaluator,
             max_accuracy_drop: float, *, base: PrecisionConfig | None = None,
             rescue: str | Sequence[str] = (), rescue_data: Any = None,
             rescue_options: Mapping[str, Any] | None = None,
             **search: Any) -> AutotuneResult:
    """Find a small set of layers to keep out of INT8 so the drop stays <= the target.

    Args:
        model: the FP32 model.
        scales: calibration scales.
        evaluator: evaluation batches with cached FP32 outputs.
        max_accuracy_drop: the target, in metric points (percent for top-1/agreement).
        base: the INT8 configuration (its ``default_float`` is what kept layers run in).
        rescue: transforms to apply to the FP32 model first (opt-in), spelled as for
            :func:`quantkit.transforms.rescue.parse_rescue` (``"cle,bias-correction"``,
            ``["smoothquant:0.8"]``, ...); they run as equalize, high_bias, smoothquant,
            bias_correction.
        rescue_data: calibration data for the transforms (and the re-calibration after the
            function-preserving ones); re-readable (a file or a list of batches).
        rescue_options: ``data_options`` (a :class:`~quantkit.options.DataOptions` or a
            mapping), ``batch_size``, ``max_samples``, ``providers``; ``method`` /
            ``method_options`` for the re-calibration (default: the method of ``scales``,
            default options); ``alpha``: smoothquant's alpha when the spec gives none.
        **search: ``search=`` a :class:`SearchOptions`, or its fields as keywords
            (``max_evaluations``, ``sensitivity``, ``executor``, ``threads``,
            ``estimate_gpus``).
    """
    base = base or PrecisionConfig()
    opts_search = _search_options(search)
    max_evaluations, sensitivity = opts_search.max_evaluations, opts_search.sensitivity
    executor, threads = opts_search.executor, opts_search.threads
    estimate_gpus = opts_search.estimate_gpus
    original, original_scales = model, scales
    rescued: RescueResult | None = None
    if rescue:
        specs = parse_rescue(rescue, where="autotune rescue")
        rescued = _rescue(model, specs, rescue_data, scales, rescue_options or {})
        model, scales = rescued.model, rescued.scales
        logger.info("autotune: rescue transforms applied: %s",
                    ", ".join(f"{r['transform']} ({r['changed']} changed)"
                              for r in rescued.reports))

    def variant(kept: Sequence[str]) -> onnx.ModelProto:
        return rescued.with_kept(kept) if rescued is not None else model

    order: list[str] = []

    compute = quantizable_layers(model, base)

    def done(res: AutotuneResult, considered: Sequence[str] = ()) -> AutotuneResult:
        if rescued is not None:
            res.rescue = rescued.reports
            res.model = rescued.with_kept(res.kept)
        if considered or res.kept:
            res.layers = _layers(considered, res, order)
        res.metric, res.compute_layers = evaluator.metric, len(compute)
        if res.reached and res.kept and res.kept_fraction > NEARLY_ALL_FLOAT:
            res.latency_cost = _latency_cost(model, scales, base, res.kept, estimate_gpus,
                                             evaluator.batches[0])
            res.notice = _float_notice(res, res.latency_cost)
            logger.warning("autotune: %s", res.notice)
        return res

    def _layers(considered: Sequence[str], res: AutotuneResult,
                ranked: Sequence[str]) -> list[LayerOutcome]:
        names = list(dict.fromkeys([*considered, *res.kept]))
        all_int8 = _with_kept(base, [])
        before = layer_sqnr(original, quantize_model(original, original_scales,
                                                     all_int8).model,
                            names, evaluator.batches, threads=evaluator.threads,
                            layout=evaluator.layout)
        after = before
        if rescued is not None:
            ref = rescued.reference if rescued.reference is not None else rescued.model
            after = layer_sqnr(ref, quantize_model(rescued.model, rescued.scales,
                                                   all_int8).model,
                               names, evaluator.batches, threads=evaluator.threads,
                               layout=evaluator.layout)
        rows = layer_report(considered, res.kept, res.keep_as, ranked, before, after,
                            rescued.layers_changed if rescued is not None else {},
                            rescued is not None)
        for r in rows:
            logger.info("autotune: %s", r.line())
        return rows

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
    order[:] = [r.layer for r in rank(sens, all_int8, evaluator.higher_is_better)]
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
                                   evaluator.evaluations - start, sens, steps), order[:hi])
    considered = order[:hi]  # the longest prefix evaluated
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
                               all_int8, final, evaluator.evaluations - start, sens, steps),
                considered)


def _search_options(search: dict[str, Any]) -> SearchOptions:
    """The :class:`SearchOptions` of :func:`autotune`'s keywords."""
    import dataclasses

    given = search.pop("search", None) or SearchOptions()
    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    unknown = [k for k in search if k not in fields]
    if unknown:
        raise InputError(f"autotune() got an unexpected keyword argument {unknown[0]!r}; it "
                         f"takes base, rescue, rescue_data, rescue_options, search and "
                         f"{', '.join(sorted(fields))}.")
    return dataclasses.replace(given, **search)


def _rescue(model: onnx.ModelProto, specs: Sequence[Any], data: Any, scales: ScaleTable,
            options: Mapping[str, Any]) -> RescueResult:
    """The rescue transforms before the search (through the quantize workflow's rescue)."""
    rest = dict(options)
    method, alpha = rest.pop("method", None), rest.pop("alpha", None)
    run = resolve_options(rest, "autotune rescue_options")
    if rest:
        raise InputError(f"rescue_options: {next(iter(rest))!r} is not an option; give "
                         "batch_size, max_samples, data_options, providers, method, "
                         "method_options or alpha.")
    request = RescueRequest(tuple(specs), alpha=float(alpha) if alpha is not None else None,
                            where="autotune rescue")
    return rescue(model, request, data, scales=scales, options=run, method=method)
