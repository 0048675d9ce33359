"""``quantkit sweep``: run every precision configuration of a recipe and record the results.

Output folder (resumable: a config whose folder holds a readable ``result.json`` is skipped
unless ``force``)::

    DIR/results.csv                one row per config (docs/cli.md#sweep columns first)
    DIR/configs/<name>/            model.onnx, plan.json, result.json, precision.yaml (auto),
                                   model.engine + model.engine.json (when built),
                                   estimate.json (with latency.estimate_gpus)
    DIR/calibration/<method>.json  scales, computed once per method and reused while the
                                   model and calibration data are unchanged (<method>.inputs.json)
    DIR/sensitivity.csv, DIR/autotune.json   when a config uses autotune
    DIR/environment.json, DIR/recipe.yaml   (environment.json: of the first run; a resumed
                                   sweep keeps it)
    DIR/calibration/<key>.warnings.json  what calibration warned (e.g. heavy clipping)

Latency: see :mod:`quantkit.sweep.latency` (measured > estimated > ONNX Runtime on the CPU).

Crash safety (a sweep killed at any instant, even with SIGKILL, resumes cleanly):

* a config is staged in ``DIR/configs/.<name>.partial/`` (every artefact, ``result.json``
  last) and the folder is renamed to ``DIR/configs/<name>/`` only when complete, so a config
  folder either holds all of its artefacts or does not exist; stale staging folders are
  removed when a sweep starts;
* every file outside a config folder (``results.csv``, calibration scales, ``autotune.json``,
  ...) is rewritten whole through a temporary file, fsync and rename, so it is either the old
  or the new version, never a half-written one;
* on resume a config is skipped only when ``configs/<name>/result.json`` exists and parses;
  anything else runs again;
* one sweep at a time per folder (``DIR/.quantkit.lock``): a second sweep into the same folder
  is refused, naming the running one, instead of removing its staging folders.

A failed config is recorded (status, error) in ``results.csv`` and left without a folder (it
runs again on resume); the others continue; the command exits non-zero at the end when any
failed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantkit._io import OutputLock, write_text_atomic
from quantkit._log import track
from quantkit.calibrators.cache import ScaleTable
from quantkit.errors import InputError, QuantkitError
from quantkit.model import input_specs, load_model, save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.sweep import _resume
from quantkit.sweep import latency as _latency
from quantkit.sweep._env import environment, warnings_of
from quantkit.sweep.executor import Executor, LocalExecutor
from quantkit.sweep.latency import LATENCY_COLUMNS, estimate_column
from quantkit.sweep.recipe import ConfigSpec, Recipe, load_recipe
from quantkit.sweep.scoring import Evaluator, Score
from quantkit.transforms.precision_file import PrecisionFile

logger = logging.getLogger(__name__)

#: results.csv columns: the contract's first (latency_* = the primary latency, named by
#: latency_source / latency_target; cpu_* = ONNX Runtime on the CPU), then quantkit's own;
#: ``est_ms_<gpu>`` columns follow for each GPU of ``latency.estimate_gpus``
COLUMNS = ["config", "method", "accuracy", "agreement", "sqnr_db", "latency_ms_p50",
           "latency_ms_p99", "throughput", "model_bytes", "backend", "device",
           "latency_source", "latency_target", "cpu_latency_ms_p50", "cpu_latency_ms_p99",
           "status", "error", "metric", "higher_is_better", "latency_ms_p90", "cosine",
           "int8_layers", "fp16_layers", "fp32_layers", "engine_backend", "engine_bytes",
           "engine_build_s", "transforms", *LATENCY_COLUMNS, "sqnr_tensor",
           "calibration_warnings", "fp8_layers"]


@dataclass
class SweepResult:
    """Rows of results.csv, where they were written, and the configs reused from a run before.

    Attributes:
        out_dir: the output folder.
        rows: one dict per config, in recipe order.
        skipped: configs whose results an earlier run wrote (not run again).
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Configs whose status is not ``ok``."""
        return [r["config"] for r in self.rows if r.get("status") != "ok"]

    def dataframe(self) -> Any:
        """The results as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=columns_of(self.rows))


class _Context:
    def __init__(self, recipe: Recipe, out: Path) -> None:
        from quantkit.data import open_source
        from quantkit.evaluate.metrics import metric_text_labels
        from quantkit.evaluate.run import load_labels

        self.recipe = recipe
        self.out = out
        self.model_path = recipe.path(recipe.model)
        self.model = load_model(self.model_path)
        self.inputs = input_specs(self.model)
        ev = recipe.data.evaluation or recipe.data.calibration
        src = open_source(recipe.source(ev.source), self.inputs, **self._opts(ev))
        batches = list(src.batches(ev.batch_size, ev.max_samples))
        labels = (load_labels(recipe.path(ev.labels), text=metric_text_labels(recipe.metric))
                  if ev.labels else None)
        if labels is not None and ev.max_samples is not None:
            labels = labels[: ev.max_samples]
        self.evaluator = Evaluator(str(self.model_path), batches, labels, recipe.metric,
                                   recipe.output)
        self.fp32 = self.evaluator.reference_score()
        self.scales: dict[str, ScaleTable] = {}
        #: calibration warnings (e.g. heavy clipping) per calibration key
        self.cal_warnings: dict[str, list[str]] = {}
        lat = recipe.latency
        self.feed = _latency.feed_of(self.evaluator.batches, lat.batch_size,
                                     input_specs(load_model(self.model_path,
                                                            load_external_data=False)))
        self.gpus = list(lat.estimate_gpus)

    def _opts(self, spec: Any) -> dict[str, Any]:
        return {"preprocess": spec.preprocess, "columns": spec.columns,
                "streaming": spec.streaming, "seed": spec.seed}

    def rescue_options(self, config: ConfigSpec, method: str,
                       percentile: float | None) -> dict[str, Any]:
        """Data and settings for a config's rescue transforms (``data`` included)."""
        cal = self.recipe.data.calibration
        opts: dict[str, Any] = {
            "data": self.recipe.source(cal.source), "batch_size": cal.batch_size,
            "max_samples": cal.max_samples, "data_options": self._opts(cal), "method": method,
            "method_options": {"percentile": percentile} if percentile is not None else {}}
        if config.alpha is not None:
            opts["alpha"] = config.alpha
        return opts

    def calibration(self, method: str, percentile: float | None) -> ScaleTable:
        key = calibration_key(method, percentile)
        if key in self.scales:
            return self.scales[key]
        path = self.out / "calibration" / f"{key}.json"
        stamp = path.with_suffix(".inputs.json")
        notes = path.with_suffix(".warnings.json")
        identity = json.dumps({"inputs": _resume.input_identity(self.recipe),
                               "calibration": self.recipe.data.calibration.model_dump(
                                   mode="json")}, sort_keys=True, default=str)
        reuse = path.exists() and stamp.exists() and \
            stamp.read_text(encoding="utf-8") == identity
        if reuse:
            from quantkit.calibrators import read_scales

            table = read_scales(path)
            try:
                self.cal_warnings[key] = list(json.loads(notes.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                self.cal_warnings[key] = []
        else:
            from quantkit.capture import calibrate

            cal = self.recipe.data.calibration
            opts = {"percentile": percentile} if percentile is not None else {}
            with warnings_of("quantkit.capture") as caught:
                table = calibrate(self.model_path, self.recipe.source(cal.source),
                                  method=method, batch_size=cal.batch_size,
                                  max_samples=cal.max_samples, method_options=opts,
                                  data_options=self._opts(cal)).scales
            self.cal_warnings[key] = caught
            path.parent.mkdir(parents=True, exist_ok=True)
            table.write(path, "json")
            write_text_atomic(notes, json.dumps(caught, indent=1) + "\n")
            write_text_atomic(stamp, identity)  # after the scales: a crash re-calibrates
        self.scales[key] = table
        return table


def calibration_key(method: str, percentile: float | None) -> str:
    """Name of a calibration's files: ``entropy``, ``percentile-p99.99``."""
    return method if percentile is None else f"{method}-p{percentile:g}"


def _row(config: ConfigSpec, score: Score, ctx: _Context, model_file: Path,
         method: str | None, plan_counts: dict[str, int]) -> dict[str, Any]:
    from quantkit.backends.onnxruntime import OrtRunner

    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({"config": config.name, "method": method or "", "accuracy": score.accuracy,
                "agreement": score.agreement, "sqnr_db": score.sqnr_db,
                "cosine": score.cosine, "status": "ok", "error": "",
                "metric": ctx.evaluator.metric or "agreement",
                "higher_is_better": ctx.evaluator.higher_is_better,
                "int8_layers": plan_counts.get("int8", 0),
                "fp16_layers": plan_counts.get("fp16", 0),
                "fp32_layers": plan_counts.get("fp32", 0),
                "fp8_layers": plan_counts.get("fp8", 0),
                "sqnr_tensor": ctx.evaluator.compare,
                "latency_batch": _latency.batch_of(ctx.feed)})
    row.update(dict.fromkeys(estimate_column(g) for g in ctx.gpus))
    desc = OrtRunner(model_file).describe()
    row["backend"], row["device"] = desc["backend"], desc["device"]
    size = model_file.stat().st_size
    if Path(f"{model_file}.data").exists():
        size += Path(f"{model_file}.data").stat().st_size
    row["model_bytes"] = size
    return row


def _latencies(ctx: _Context, model_file: Path, row: dict[str, Any]) -> None:
    """Time the config on every source available and fill the primary latency columns."""
    spec = ctx.recipe.latency
    if spec.iterations:
        row.update(_latency.cpu_latency(model_file, ctx.feed, warmup=spec.warmup,
                                        iterations=spec.iterations, repeats=spec.repeats,
                                        has_qdq=bool(row.get("int8_layers")
                                                     or row.get("fp8_layers"))))
        row.update(_latency.measured(model_file.with_suffix(".engine"), ctx.feed,
                                     warmup=spec.warmup, iterations=spec.iterations,
                                     repeats=spec.repeats))
    row.update(_latency.estimate(model_file, ctx.gpus, ctx.feed, model_file.parent))
    _latency.set_primary(row, ctx.gpus)


def _build(ctx: _Context, model_file: Path, row: dict[str, Any]) -> None:
    spec = ctx.recipe.build
    if spec is None:
        return
    from quantkit.backends import BuildOptions, get_backend, parse_shapes

    backend = get_backend(spec.backend)
    if not backend.available():
        row["engine_backend"] = f"{spec.backend} not installed"
        return
    try:
        res = backend.build(model_file, model_file.with_suffix(".engine"), BuildOptions(
            shapes=parse_shapes(spec.shapes), min_shapes=parse_shapes(spec.min_shapes,
                                                                      "--min-shapes"),
            max_shapes=parse_shapes(spec.max_shapes, "--max-shapes"), opt_level=spec.opt_level))
    except QuantkitError as err:
        row.update({"status": "build_failed", "error": str(err), "engine_backend": spec.backend})
        return
    row.update({"engine_backend": f"{spec.backend} {res.sidecar.get('backend_version', '')}",
                "engine_bytes": res.sidecar.get("engine_bytes"),
                "engine_build_s": res.sidecar.get("build_time_s")})


def _run_config(ctx: _Context, config: ConfigSpec) -> dict[str, Any]:
    """Run one config in a staging folder and move it into place when complete."""
    final = ctx.out / "configs" / config.name
    stage = _resume.stage_dir(ctx.out, config.name)
    _resume.remove_tree(stage)
    stage.mkdir(parents=True)
    try:
        row = _run_config_in(ctx, config, stage)
        if (stage / "model.engine.json").exists():
            _resume.repoint_sidecar(stage / "model.engine.json", stage / "model.onnx",
                             final / "model.onnx")
        _resume.fsync_dir(stage)
        _resume.commit(stage, final)
    except Exception:
        _resume.remove_tree(stage)
        # the failure is what results.csv records now: an older result must not be reused
        _resume.remove_tree(final)
        raise
    except BaseException:  # Ctrl-C: the previous result (if any) stays valid
        _resume.remove_tree(stage)
        raise
    return row


def _run_config_in(ctx: _Context, config: ConfigSpec, folder: Path) -> dict[str, Any]:
    from quantkit.sweep.autotune import autotune

    model_file = folder / "model.onnx"
    method: str | None = None
    pct: float | None = None
    transforms: list[dict[str, Any]] = []
    if config.kind == "fp32":
        shutil.copyfile(ctx.model_path, folder / ".model.onnx.tmp")
        with open(folder / ".model.onnx.tmp", "rb+") as fh:
            os.fsync(fh.fileno())
        (folder / ".model.onnx.tmp").replace(model_file)
        counts = {"fp32": len(ctx.model.graph.node)}
        plan_doc: dict[str, Any] | None = None
        score = ctx.fp32
    else:
        cal = ctx.recipe.calibration
        method = config.method or cal.method
        pct = config.percentile if config.percentile is not None else cal.percentile
        scales = None if config.kind == "fp16" else ctx.calibration(method, pct)
        fp32_model = ctx.model
        rescue_options = ctx.rescue_options(config, method, pct)
        if config.kind == "auto":
            assert config.autotune is not None and scales is not None
            base = PrecisionConfig(default_float="fp16" if config.fp16 else "fp32")
            tuned = autotune(ctx.model, scales, ctx.evaluator,
                             config.autotune.max_accuracy_drop, base=base,
                             max_evaluations=config.autotune.max_evaluations,
                             rescue=config.rescue, rescue_data=rescue_options.pop("data"),
                             rescue_options=rescue_options, estimate_gpus=ctx.gpus)
            if tuned.model is not None:
                fp32_model = tuned.model
                transforms = list(tuned.rescue)
            text, doc, precision = tuned.to_yaml(), tuned.to_dict(), tuned.config
            spec = config.autotune
            if spec.target_gpu or spec.compute_capability:  # int8 -> fp8 -> float tiers
                from quantkit.sweep.tiers import fp8_target, fp8_tier

                tiered = fp8_tier(fp32_model, scales, ctx.evaluator, tuned,
                                  fp8_target(spec.target_gpu, spec.compute_capability))
                text, precision, doc["tiers"] = (tiered.to_yaml(), tiered.config,
                                                 tiered.to_dict())
            write_text_atomic(folder / "precision.yaml", text)
            write_text_atomic(ctx.out / "autotune.json", json.dumps(doc, indent=2) + "\n")
            _write_sensitivity(ctx, tuned)
        else:
            precision = ctx.recipe.precision_config(config)
            method = None if config.kind == "fp16" else method
            specs = _rescue_specs(config, precision)
            if specs:
                assert scales is not None
                fp32_model, scales, transforms = _rescued(ctx, config, precision, scales,
                                                          specs, rescue_options)
        result = quantize_model(fp32_model, scales, precision, source=str(ctx.model_path))
        save_model(result.model, model_file)
        plan_doc = result.plan.to_dict()
        counts = result.plan.counts()
        score = ctx.evaluator.score(str(model_file))
    if plan_doc is not None:
        if transforms:
            plan_doc["transforms"] = transforms
        write_text_atomic(folder / "plan.json", json.dumps(plan_doc, indent=1) + "\n")
    row = _row(config, score, ctx, model_file, method, counts)
    row["transforms"] = "+".join(t["transform"] for t in transforms)
    _build(ctx, model_file, row)
    _latencies(ctx, model_file, row)
    key = calibration_key(method, pct) if method else None
    if key is not None and key in ctx.scales:
        table = ctx.scales[key]
        notes = ctx.cal_warnings.get(key, [])
        row["calibration_warnings"] = " | ".join(notes)
        row_doc = {**row, "calibration": {"method": method, "num_samples": table.num_samples,
                                          "settings": table.settings, "warnings": notes}}
    else:
        row_doc = dict(row)
    row_doc["fingerprint"] = _resume.fingerprint(ctx.recipe, config)
    row_doc.update(metric_details=dict(score.details), outputs=[
        {"name": n, "sqnr_db": q, "cosine": c} for n, q, c in score.outputs])
    write_text_atomic(folder / "result.json", json.dumps(row_doc, indent=1, default=float) + "\n")
    return row


def _rescue_specs(config: ConfigSpec, precision: PrecisionFile) -> list[Any]:
    """The config's ``rescue:`` and its precision file's, the config's options winning."""
    from quantkit.transforms.registry import combine_rescue, parse_rescue

    return combine_rescue(parse_rescue(config.rescue, where=f"configs.{config.name}.rescue"),
                          parse_rescue(precision.rescue,
                                       where=f"configs.{config.name}: precision rescue"))


def _rescued(ctx: _Context, config: ConfigSpec, precision: PrecisionConfig,
             scales: ScaleTable, specs: list[Any],
             options: dict[str, Any]) -> tuple[Any, ScaleTable, list[dict[str, Any]]]:
    """Apply a config's rescue transforms; bias correction only on the plan's INT8 layers."""
    from quantkit.transforms.rescue import apply_rescue, plan_int8_layers

    int8 = plan_int8_layers(ctx.model, precision)
    alpha = options.get("alpha")
    res = apply_rescue(ctx.model, specs, options["data"], scales=scales,
                       method=options["method"], method_options=options["method_options"],
                       batch_size=options["batch_size"], max_samples=options["max_samples"],
                       data_options=options["data_options"], layers=int8,
                       alpha=float(alpha) if alpha is not None else None,
                       where=f"configs.{config.name}.rescue")
    return res.model, res.scales, res.reports


def _write_sensitivity(ctx: _Context, tuned: Any) -> None:
    from quantkit.sweep.sensitivity import rank

    ranked = rank(tuned.sensitivity, tuned.all_int8, ctx.evaluator.higher_is_better)
    order = {r.layer: i + 1 for i, r in enumerate(ranked)}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "op_type", "sqnr_int8_only", "metric_int8_only", "sqnr_fp16_only",
                "metric_fp16_only", "rank"])
    for r in tuned.sensitivity:
        w.writerow([r.layer, r.op_type, r.int8_only.sqnr_db, r.int8_only.accuracy,
                    r.fp16_only.sqnr_db, r.fp16_only.accuracy, order[r.layer]])
    write_text_atomic(ctx.out / "sensitivity.csv", buf.getvalue())


def _failed_row(config: ConfigSpec, err: BaseException) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({"config": config.name, "method": config.method or "", "status": "failed",
                "error": f"{type(err).__name__}: {err}" if not isinstance(err, QuantkitError)
                else str(err)})
    return row


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """:data:`COLUMNS`, then the ``est_ms_<gpu>`` columns the rows have, in first-seen order."""
    extra = [k for r in rows for k in r if k.startswith("est_ms_")]
    return COLUMNS + list(dict.fromkeys(extra))


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write results.csv (atomically) with the contract's columns first."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns_of(rows), lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text_atomic(out / "results.csv", buf.getvalue())


def run_sweep(recipe_path: str | Path, out_dir: str | Path, *, force: bool = False,
              executor: Executor | None = None,
              on_config: Callable[[str, dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every config of a recipe into ``out_dir`` (see the module docstring).

    Args:
        recipe_path: the recipe YAML.
        out_dir: output folder (created; existing results are reused unless ``force``).
        force: re-run configs whose results exist.
        executor: where configs run (default: in-process, in order).
        on_config: called with ``(config name, row)`` as each config finishes.
    """
    recipe = load_recipe(recipe_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: exists and is not a folder.")
    _resume.check_inputs_outside_outputs(recipe, Path(recipe_path), out)
    with OutputLock(out, "-o"):  # one sweep per folder: a second one would clean our stages
        return _run_locked(recipe, Path(recipe_path), out, force, executor, on_config)


def _run_locked(recipe: Recipe, recipe_path: Path, out: Path, force: bool,
                executor: Executor | None,
                on_config: Callable[[str, dict[str, Any]], None] | None) -> SweepResult:
    out.mkdir(parents=True, exist_ok=True)
    if not _resume.same_file(Path(recipe_path), out / "recipe.yaml"):  # never overwrite an input
        write_text_atomic(out / "recipe.yaml", Path(recipe_path).read_text(encoding="utf-8"))
    ctx = _Context(recipe, out)
    # a resumed sweep keeps the environment (and time) of the run that measured its results
    if force or not (out / "environment.json").exists():
        write_text_atomic(out / "environment.json",
                          json.dumps(environment(recipe, Path(recipe_path)), indent=2) + "\n")
    _resume.clean_stale(out)
    done: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    todo = []
    for config in recipe.configs:
        previous = None if force else _resume.completed(out, config.name,
                                                  _resume.fingerprint(recipe, config))
        if previous is not None:
            done[config.name] = previous
            skipped.append(config.name)
            logger.info("%s: results exist, skipped (use --force to re-run)", config.name)
        else:
            todo.append(config)
    ex = executor or LocalExecutor()
    # the bar advances as configs finish (with Ray, all of them are submitted at once)
    for config, result in track(ex.map_unordered(lambda c: _run_config(ctx, c), todo),
                                total=len(todo), description="sweep"):
        row = _failed_row(config, result) if isinstance(result, BaseException) else result
        if isinstance(result, BaseException):
            logger.error("%s failed: %s", config.name, row["error"])
        done[config.name] = row
        write_results(out, [done[c.name] for c in recipe.configs if c.name in done])
        if on_config is not None:
            on_config(config.name, row)
    rows = [done[c.name] for c in recipe.configs]
    write_results(out, rows)
    return SweepResult(out, rows, skipped)


