"""``quantkit eval``: accuracy, agreement with the FP32 reference, latency."""

from __future__ import annotations

import json

import click

from quantkit.cli.options import build_data_options, data_options
from quantkit.cli.render import print_table


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Integer labels in data order (.npy, .txt or .csv).")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="FP32 model for agreement (top-1 agreement, cosine, SQNR).")
@click.option("--metric", default=None, help="Task metric (default top1 with --labels).")
@click.option("--output", "output_name", default=None, help="Model output to score.")
@click.option("--backend", type=click.Choice(["onnxruntime"]), default="onnxruntime",
              show_default=True, help="Runtime (TensorRT engines: see docs/backends.md).")
@click.option("--iterations", type=int, default=30, show_default=True,
              help="Timed latency runs (0 to skip).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def eval_cmd(model: str, data: str, batch_size: int, max_samples: int | None, seed: int | None,
             preprocess_file: str | None, columns: tuple[str, ...], streaming: bool,
             labels: str | None, reference: str | None, metric: str | None,
             output_name: str | None, backend: str, iterations: int, as_json: bool) -> None:
    """Evaluate MODEL: task accuracy, agreement with --reference, latency p50/p90/p99.

    \b
    Examples:
      quantkit eval model.int8.onnx --data val.npz --labels val_labels.npy \\
          --reference model.onnx
    """
    from quantkit.evaluate.metrics import metric_text_labels
    from quantkit.evaluate.run import evaluate_model, load_labels

    text = metric_text_labels(metric) if metric else False
    res = evaluate_model(
        model, data, labels=load_labels(labels, text=text) if labels else None,
        reference=reference,
        metric=metric, output=output_name, batch_size=batch_size, max_samples=max_samples,
        latency_iterations=iterations,
        data_options=build_data_options(preprocess_file, columns, streaming, seed))
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
        return
    row = res.as_row()
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()
            if v is not None]
    print_table(["measure", "value"], rows)
