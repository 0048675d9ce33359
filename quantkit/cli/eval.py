"""``quantkit eval``: accuracy, agreement with the FP32 reference, latency."""

from __future__ import annotations

import json
from typing import Any

import click

from quantkit.cli.flags import leading_flag
from quantkit.cli.options import Bounded, data_group, data_options
from quantkit.cli.render import CPU_NOTE, print_table


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Labels in data order: integer classes (.npy, .txt, .csv), texts for cer / "
                   "ctc-exact (.txt, one per line) or boxes for detection (.json).")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="FP32 model: agreement (top-1 agreement, cosine, SQNR; also per output), "
                   "and the targets of --metric when there are no --labels.")
@click.option("--metric", default=None, metavar="NAME[:K=V,...]",
              help="Task metric: top1, top5, cosine, detection, detection-map, ctc-exact, "
                   "cer, or a plugin FILE.py:CLASS; options after a colon "
                   "(detection:format=yolov8,score=0.3; cer:layout=TNC). Without --labels it "
                   "is scored against --reference.  [default: top1 with --labels]")
@click.option("--output", "--output-name", "output_name", default=None, metavar="NAME",
              help="Model output the metric scores (default: the first).")
@click.option("--backend", type=click.Choice(["onnxruntime"]), default="onnxruntime",
              show_default=True, help="Runtime (TensorRT engines: see docs/backends.md).")
@click.option("--iterations", type=Bounded(int, 0), default=30, show_default=True,
              help="Timed latency runs per round (0 to skip).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timing rounds; the range of their medians shows the run-to-run noise.")
@click.option("--engine", type=click.Path(dir_okay=False), default=None,
              help="A TensorRT / TensorRT-RTX engine built from MODEL: time it on this "
                   "machine's GPU (measured latency). Needs a GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def eval_cmd(model: str, data: str, batch_size: int, max_samples: int | None, seed: int | None,
             preprocess_file: str | None, columns: tuple[str, ...], streaming: bool,
             labels: str | None, reference: str | None, metric: str | None,
             output_name: str | None, backend: str, iterations: int, repeats: int,
             engine: str | None, as_json: bool) -> None:
    """Evaluate MODEL: task accuracy, agreement with --reference, latency.

    Latency is per inference of one batch of --batch-size samples (and per sample), with
    its source: ONNX Runtime on this CPU (cpu, or cpu-fake-quant for a Q/DQ model: fake
    quantisation in float, not a TensorRT speed), or the --engine measured on the GPU.

    \b
    Examples:
      quantkit eval model.int8.onnx --data val.npz --labels val_labels.npy \\
          --reference model.onnx
    """
    from quantkit.errors import InputError
    from quantkit.evaluate.metrics import metric_text_labels
    from quantkit.evaluate.run import evaluate_model, load_labels
    from quantkit.options import TimingOptions

    try:
        text = metric_text_labels(metric) if metric else False
        res = evaluate_model(
            model, data, labels=load_labels(labels, text=text) if labels else None,
            reference=reference,
            metric=metric, output=output_name, engine=engine, data_options=data_group(),
            timing=TimingOptions(iterations=iterations, repeats=repeats))
    except InputError as err:
        raise InputError(leading_flag(str(err))) from None
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
        return
    rows = _rows(res.as_row())
    if res.metric is not None:
        rows.insert(1, ("metric scored against", f"{res.metric_against} (output {res.output})"))
    at = next((i + 1 for i, (k, _) in enumerate(rows) if k == "accuracy"), len(rows))
    rows[at:at] = [(f"{res.metric} {k}", _fmt(v)) for k, v in res.details.items()]
    rows += [(f"output {name}: SQNR dB / cosine / agreement",
              f"{_fmt(a.sqnr_db)} / {a.mean_cosine:.6g} / {_fmt(a.top1_agreement)}")
             for name, a in res.outputs.items()]
    print_table(["measure", "value"], rows)
    if res.as_row().get("latency_source") == "cpu-fake-quant" or (
            res.cpu_latency is not None and res.latency_source == "measured"):
        click.echo(CPU_NOTE)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _rows(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The table: latency rows say per batch of how many samples, per sample, and the source."""
    from quantkit.evaluate.latency import latency_label

    batch = row.get("latency_batch")
    names = {"latency_ms_p50": f"latency p50 ms (per batch of {batch})",
             "latency_ms_p90": f"latency p90 ms (per batch of {batch})",
             "latency_ms_p99": f"latency p99 ms (per batch of {batch})",
             "latency_ms_p50_min": "latency p50 ms, lowest round",
             "latency_ms_p50_max": "latency p50 ms, highest round",
             "latency_ms_per_sample": "latency p50 ms per sample",
             "throughput": "throughput samples/s",
             "cpu_latency_ms_p50": f"ONNX Runtime CPU p50 ms (per batch of {batch})",
             "cpu_latency_ms_p99": f"ONNX Runtime CPU p99 ms (per batch of {batch})",
             "sqnr_tensor": "tensor compared (agreement, cosine, SQNR)",
             "latency_source": "latency source"}
    out = []
    for key, value in row.items():
        if value is None or key in ("latency_batch", "latency_target"):
            continue
        if key.startswith("cpu_") and row.get("latency_source") != "measured":
            continue  # the same numbers as the latency rows
        if key == "latency_source":
            value = latency_label(str(value), row.get("latency_target"), batch)
        # cosine near 1 is where quantisation damage hides: show enough digits
        text = f"{value:.6g}" if key == "cosine" and isinstance(value, float) else _fmt(value)
        out.append((names.get(key, key), text))
    return out
