"""``quantkit sweep``, ``quantkit sensitivity`` and ``quantkit autotune``."""

from __future__ import annotations

import contextlib
import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from quantkit._io import OutputLock, check_output_path, temp_prefix, write_text_atomic
from quantkit.calibrators import DEFAULT_METHOD
from quantkit.cli.options import Bounded, build_data_options, data_options
from quantkit.cli.render import CPU_NOTE, latency_columns, print_table
from quantkit.cli.scaleout import build_executor, calibrate_on_executor, executor_options
from quantkit.errors import InputError, PipelineError
from quantkit.transforms.registry import rescue_help


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _write_report(out: Path, tolerance: float | None = None) -> Path | None:
    try:
        from quantkit.report import write_report
    except ImportError:  # report stage not installed in this build
        return None
    return Path(write_report(out, tolerance=tolerance))


@click.command("sweep")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (results.csv, configs/, report.html).")
@click.option("--force", is_flag=True, help="Re-run configs whose results already exist.")
@click.option("--tolerance", type=Bounded(float, 0), default=None,
              help="Report headline: the fastest INT8 config within this many metric points "
                   "of the best.  [default: the recipe's report.tolerance, else 0.5]")
@executor_options
def sweep_cmd(recipe: str, out_dir: str, force: bool, tolerance: float | None, executor: str,
              ray_address: str | None, shards: int | None) -> None:
    """Run every precision configuration of RECIPE; write results.csv and report.html.

    Each config's latency names its source: measured (its engine on this machine's GPU),
    estimated (recipe latency.estimate_gpus), or ONNX Runtime on this CPU (cpu, and
    cpu-fake-quant for Q/DQ models: not a TensorRT speed). Re-running resumes: configs with
    results are skipped (and listed) unless --force; environment.json keeps the first run's.
    """
    from quantkit.sweep import run_sweep

    def done(name: str, row: dict[str, Any]) -> None:
        status = row.get("status")
        click.echo(f"  {name}: {status}"
                   + (f", accuracy {_fmt(row.get('accuracy'))}" if status == "ok" else
                      f" ({row.get('error')})"), err=True)

    if shards is not None:
        click.echo("note: --shards is not used by sweep: each config runs as one task.",
                   err=True)
    ex = build_executor(executor, ray_address)
    try:
        result = run_sweep(recipe, out_dir, force=force, executor=ex, on_config=done)
    finally:
        if hasattr(ex, "close"):
            ex.close()
    if result.skipped:
        click.echo(f"resumed: {len(result.skipped)} config(s) reuse the results of an earlier "
                   f"run: {', '.join(result.skipped)} (--force re-runs them)", err=True)
    rows = [(r["config"], _fmt(r.get("accuracy")), _fmt(r.get("agreement")),
             _fmt(r.get("sqnr_db")), *latency_columns(r), _fmt(r.get("model_bytes")),
             r.get("status")) for r in result.rows]
    print_table(["config", "accuracy", "agreement", "sqnr_db", "latency ms/batch", "latency source",
                 "CPU p50 ms/batch", "bytes", "status"], rows)
    if any((r.get("int8_layers") or r.get("fp8_layers")) and r.get("cpu_latency_ms_p50") is not None
           for r in result.rows):
        click.echo(CPU_NOTE)
    report = _write_report(result.out_dir, tolerance)
    click.echo(f"\nwrote {result.out_dir / 'results.csv'}"
               + (f" and {report}" if report else ""))
    if result.failed:
        raise PipelineError(f"{len(result.failed)} config(s) failed: "
                            f"{', '.join(result.failed)}; see results.csv (status, error).")


@contextlib.contextmanager
def _probe_executor(executor: str, ray_address: str | None) -> Iterator[Any]:
    """The executor of the sensitivity probes: ``None`` (in-process) unless ``ray``.

    With ray, one instance serves the sharded calibration and the probes (one task per layer);
    it is started here so that the calibration's executor reuses it instead of shutting it down.
    """
    probes = build_executor(executor, ray_address) if executor == "ray" else None
    try:
        if probes is not None:
            probes.start()
        yield probes
    finally:
        if probes is not None:
            probes.close()


def _calibrate(model: str, data: str, executor: str, ray_address: str | None,
               shards: int | None, method: str, batch_size: int, max_samples: int | None,
               opts: dict[str, Any]) -> Any:
    """Scales for `sensitivity` / `autotune`: one pass, or sharded on the executor."""
    from quantkit.calibrators.cache import DEFAULT_TRT_VERSION
    from quantkit.capture import calibrate

    if executor == "local" and shards is None and ray_address is None:
        return calibrate(model, data, method=method, batch_size=batch_size,
                         max_samples=max_samples, data_options=opts).scales
    return calibrate_on_executor(
        model, data, executor, ray_address, shards, method=method, batch_size=batch_size,
        max_samples=max_samples, allow_nonfinite=False, method_options={}, data_options=opts,
        trt_version=DEFAULT_TRT_VERSION).scales


def _evaluator(model: str, eval_data: str | None, data: str, labels: str | None,
               metric: str | None, batch_size: int, max_samples: int | None,
               data_opts: dict[str, Any], output_name: str | None = None) -> Any:
    from quantkit.data import InputLayout, open_source
    from quantkit.evaluate.metrics import metric_text_labels
    from quantkit.evaluate.run import load_labels
    from quantkit.model import input_specs, load_model
    from quantkit.sweep import Evaluator

    specs = input_specs(load_model(model, load_external_data=False))
    src = open_source(eval_data or data, specs, **data_opts)
    batches = list(src.batches(batch_size, max_samples))
    lab = load_labels(labels, text=metric_text_labels(metric) if metric else False) \
        if labels else None
    if lab is not None and max_samples is not None:
        lab = lab[:max_samples]
    try:
        return Evaluator(model, batches, lab, metric, output_name,
                         layout=InputLayout.from_options(data_opts))
    except InputError as err:
        from quantkit.cli.eval import flags_of

        raise InputError(flags_of(str(err), "--output-name")) from None


def _eval_options(func: Any) -> Any:
    for opt in reversed([
        click.option("--eval-data", default=None,
                     help="Evaluation data (default: the --data set)."),
        click.option("--labels", default=None, help="Labels of the evaluation data."),
        click.option("--metric", default=None, metavar="NAME[:K=V,...]",
                     help="Task metric to optimise: top1, top5, cosine, detection, "
                          "detection-map, ctc-exact, cer, or a plugin FILE.py:CLASS, with "
                          "options after a colon (detection:format=yolov8,score=0.3). Without "
                          "labels it is scored against the FP32 model where it can be. "
                          "[default: top1 with labels, else FP32 top-1 agreement]"),
        click.option("--output-name", default=None, metavar="NAME",
                     help="Model output the metric scores (default: the first)."),
        click.option("--method", default=DEFAULT_METHOD, show_default=True,
                     help="Calibration method."),
        click.option("--fp16", is_flag=True, help="Layers kept out of INT8 run in FP16 "
                                                 "(default: FP32), and the rest too."),
    ]):
        func = opt(func)
    return func


@click.command("sensitivity")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@_eval_options
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--precision", "quantized", type=click.Choice(["int8", "fp8"]), default="int8",
              show_default=True, help="Quantized precision probed (the CSV columns keep their "
                                      "int8 names).")
@executor_options
def sensitivity_cmd(model: str, data: str, batch_size: int, max_samples: int | None,
                    seed: int | None, preprocess_file: str | None, columns: tuple[str, ...],
                    streaming: bool, eval_data: str | None, labels: str | None,
                    metric: str | None, output_name: str | None, method: str, fp16: bool,
                    out_dir: str, quantized: str, executor: str,
                    ray_address: str | None, shards: int | None) -> None:
    """Per-layer sensitivity: each layer alone in INT8, and each layer alone left out."""
    from quantkit.model import load_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.sweep import layer_sensitivity, rank

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: exists and is not a folder; give a folder path.")
    if out.is_dir():
        check_output_path(out / "sensitivity.csv", model, data, eval_data, labels,
                          preprocess_file, flag="-o")
    lock = OutputLock(out, "-o")  # one writer per folder; an unused new folder goes again
    lock.acquire()
    click.get_current_context().call_on_close(lock.release)
    fp = load_model(model)
    opts = build_data_options(preprocess_file, columns, streaming, seed)
    with _probe_executor(executor, ray_address) as probes:
        scales = _calibrate(model, data, executor, ray_address, shards, method, batch_size,
                            max_samples, opts)
        ev = _evaluator(model, eval_data, data, labels, metric, batch_size, max_samples, opts,
                        output_name)
        base = PrecisionConfig(default=quantized,
                               default_float="fp16" if fp16 else "fp32")
        # one ONNX Runtime thread per probe task: Ray runs one task per CPU
        results = layer_sensitivity(fp, scales, ev, base, executor=probes,
                                    threads=1 if probes is not None else None)
    from quantkit.qdq.writer import quantize_model

    all_int8 = ev.score(quantize_model(fp, scales, base).model)
    ranked = rank(results, all_int8, ev.higher_is_better)
    order = {r.layer: i + 1 for i, r in enumerate(ranked)}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "op_type", "sqnr_int8_only", "metric_int8_only", "sqnr_fp16_only",
                "metric_fp16_only", "rank"])
    for r in results:
        w.writerow([r.layer, r.op_type, r.int8_only.sqnr_db, r.int8_only.accuracy,
                    r.fp16_only.sqnr_db, r.fp16_only.accuracy, order[r.layer]])
    out.mkdir(parents=True, exist_ok=True)  # created only once there is something to write
    write_text_atomic(out / "sensitivity.csv", buf.getvalue())
    print_table(["rank", "layer", "op", "int8-only SQNR dB", "left-out accuracy"],
                [(order[r.layer], r.layer, r.op_type, _fmt(r.int8_only.sqnr_db),
                  _fmt(r.fp16_only.accuracy)) for r in ranked])
    click.echo(f"\nmetric {ev.metric or 'top-1 agreement with FP32'}"
               + (f" (output {ev.output}, scored against {ev.task.against})"
                  if ev.task.against else f" (output {ev.output})"))
    click.echo(f"all-INT8 accuracy {_fmt(all_int8.accuracy)} (FP32 "
               f"{_fmt(ev.reference_score().accuracy)}); {ev.evaluations} evaluations; "
               f"wrote {out / 'sensitivity.csv'}")


@click.command("autotune")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@_eval_options
@click.option("--max-accuracy-drop", type=Bounded(float, 0), required=True,
              help="Largest acceptable drop vs FP32, in metric points (e.g. 0.5).")
@click.option("--max-evaluations", type=Bounded(int, 1), default=200, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Precision YAML to write.")
@click.option("--rescue", multiple=True, metavar="T[,T...]",
              help=rescue_help("Transform the FP32 model first so fewer layers need to "
                               "leave INT8", "The YAML is then for the transformed model, "
                               "written to --rescued-model."))
@click.option("--rescued-model", default=None, type=click.Path(dir_okay=False),
              help="Where to write the transformed FP32 model with --rescue (default: the "
                   "YAML path with the suffix .onnx).")
@click.option("--estimate-gpu", multiple=True, metavar="GPU",
              help="GPU of the latency model (quantkit estimate --list-gpus): prices a result "
                   "that keeps nearly every layer out of INT8 (estimated latency vs all-INT8).")
@click.option("--target-gpu", default=None, metavar="NAME",
              help="Deployment GPU (quantkit estimate --list-gpus): if it has FP8, layers that "
                   "fail in INT8 try FP8 before float.")
@click.option("--compute-capability", default=None, metavar="SM89",
              help="Deployment compute capability, instead of --target-gpu (FP8 from SM89).")
@executor_options
def autotune_cmd(model: str, data: str, batch_size: int, max_samples: int | None,
                 seed: int | None, preprocess_file: str | None, columns: tuple[str, ...],
                 streaming: bool, eval_data: str | None, labels: str | None,
                 metric: str | None, output_name: str | None, method: str, fp16: bool,
                 max_accuracy_drop: float, max_evaluations: int, output: str,
                 rescue: tuple[str, ...], rescued_model: str | None,
                 estimate_gpu: tuple[str, ...], target_gpu: str | None,
                 compute_capability: str | None, executor: str, ray_address: str | None,
                 shards: int | None) -> None:
    """Fewest layers kept out of INT8 so accuracy stays within --max-accuracy-drop of FP32."""
    from quantkit.model import load_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.sweep import autotune
    from quantkit.sweep.tiers import fp8_target, fp8_tier

    if max_accuracy_drop < 0:
        raise InputError("--max-accuracy-drop must be >= 0 (metric points, e.g. 0.5).")
    from quantkit.sweep.latency import check_gpus

    gpus = check_gpus(estimate_gpu, where="--estimate-gpu")
    try:  # an unknown GPU fails before any work
        target = fp8_target(target_gpu, compute_capability)
    except InputError as err:
        flag = "--target-gpu" if target_gpu else "--compute-capability"
        raise InputError(f"{flag}: {err}") from None
    check_output_path(output, model, data, eval_data, labels, preprocess_file, flag="-o")
    rescued_path = None
    if rescue:
        from quantkit.transforms.rescue import parse_rescue

        parse_rescue(rescue, where="--rescue")  # bad spellings fail before any work
        rescued_path = rescued_model or str(Path(output).with_suffix(".onnx"))
        if Path(rescued_path).resolve() == Path(output).resolve():
            raise InputError("--rescued-model: give a path other than -o.")
        check_output_path(rescued_path, model, data, eval_data, labels, preprocess_file,
                          output, flag="--rescued-model")
    # one autotune per output file: the lock sits next to it and goes when the command ends
    lock = OutputLock(Path(output).parent, "-o",
                      name=temp_prefix(Path(output).name) + "lock")
    lock.acquire()
    click.get_current_context().call_on_close(lock.release)
    fp = load_model(model)
    opts = build_data_options(preprocess_file, columns, streaming, seed)
    with _probe_executor(executor, ray_address) as probes:
        scales = _calibrate(model, data, executor, ray_address, shards, method, batch_size,
                            max_samples, opts)
        ev = _evaluator(model, eval_data, data, labels, metric, batch_size, max_samples, opts,
                        output_name)
        res = autotune(fp, scales, ev, max_accuracy_drop,
                       base=PrecisionConfig(default_float="fp16" if fp16 else "fp32"),
                       max_evaluations=max_evaluations, rescue=rescue, rescue_data=data,
                       rescue_options={"batch_size": batch_size, "max_samples": max_samples,
                                       "data_options": opts, "method": method},
                       executor=probes, threads=1 if probes is not None else None,
                       estimate_gpus=gpus)
        tiered = (fp8_tier(fp, scales, ev, res, target)
                  if target_gpu or compute_capability else None)
    write_text_atomic(output, res.to_yaml() if tiered is None else tiered.to_yaml())
    if rescued_path is not None and res.model is not None:
        from quantkit.model import save_model

        save_model(res.model, rescued_path)
        click.echo("rescue: " + "; ".join(f"{r['transform']} ({r['changed']} changed)"
                                          for r in res.rescue)
                   + f"; wrote the transformed model {rescued_path} (quantize it with "
                   f"{output})")
    if res.layers:
        click.echo("per layer (all-INT8 output SQNR dB without -> with the rescue transforms):")
        print_table(["rank", "layer", "outcome", "how", "SQNR before -> after"],
                    [(r.rank if r.rank is not None else "-", r.layer, r.outcome,
                      "+".join(r.how) or "-",
                      f"{r.sqnr_before_db:.1f} -> {r.sqnr_after_db:.1f}") for r in res.layers])
    click.echo(f"metric {ev.metric or 'top-1 agreement with FP32'} (output {ev.output}); "
               f"FP32 {_fmt(res.fp32.accuracy)}, all-INT8 {_fmt(res.all_int8.accuracy)}, "
               f"final {_fmt(res.final.accuracy)} with {len(res.kept)} layer(s) kept "
               f"{res.keep_as}: {', '.join(res.kept) or '-'}; {res.evaluations} evaluations; "
               f"wrote {output}")
    if res.notice:
        click.echo(f"warning: {res.notice}", err=True)
    if tiered is not None:
        click.echo(f"precision tiers int8 -> fp8 -> {res.keep_as} ({tiered.target.why}):")
        print_table(["layer", "op", "tier", "why"],
                    [(t.layer, t.op_type, t.tier, t.reason) for t in tiered.layers])
        click.echo(f"final {_fmt(tiered.final.accuracy)} with tiers; {tiered.evaluations} more "
                   "evaluations")
    if not (res.reached if tiered is None else tiered.reached):
        click.echo("warning: the target was not reached; the file holds the best found.",
                   err=True)
        sys.exit(1)
