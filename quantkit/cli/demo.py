"""``quantkit demo``: the whole pipeline on the model and data shipped in the package."""

from __future__ import annotations

from typing import Any

import click

from quantkit.cli.render import CPU_NOTE, latency_columns, print_table
from quantkit.errors import PipelineError


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "-" if v in (None, "") else format(v, spec) if isinstance(v, float) else str(v)


@click.command("demo")
@click.option("-o", "--output", "out_dir", default="quantkit-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the demo's outputs.")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
def demo_cmd(out_dir: str, force: bool) -> None:
    """Calibrate, quantize, evaluate and report on the shipped MNIST CNN (no download).

    Writes the model, data and recipe to the folder, runs the sweep (FP32, FP16, INT8 with
    three calibration methods, a mixed plan and an autotuned plan), builds TensorRT-RTX engines
    when quantkit[rtx] is installed, and writes results.csv and report.html.
    """
    from pathlib import Path

    from quantkit.cli.sweep import _write_report
    from quantkit.demo import run_demo
    from quantkit.errors import InputError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: exists and is not a folder; give a folder path.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"-o {out}: the folder exists and is not empty. Choose a new folder, "
                         "or pass --force to write the demo into it.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".quantkit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"-o {out}: cannot write there ({err.strerror}); choose a folder you "
                         "can write to.") from err
    results, sweep = run_demo(out_dir)
    rows = sweep.rows  # type: ignore[attr-defined]
    print_table(["config", "top-1 %", "agreement %", "SQNR dB", "latency ms/batch",
                 "latency source", "CPU p50 ms/batch", "size KiB", "INT8 layers", "engine"],
                [(r["config"], _fmt(r.get("accuracy"), ".2f"), _fmt(r.get("agreement"), ".1f"),
                  _fmt(r.get("sqnr_db"), ".1f"), *latency_columns(r),
                  _fmt((r.get("model_bytes") or 0) / 1024, ".0f"), r.get("int8_layers"),
                  "built" if r.get("engine_bytes") else (r.get("engine_backend") or "-"))
                 for r in rows])
    report = _write_report(results)
    engines = [r for r in rows if r.get("engine_bytes")]
    click.echo(CPU_NOTE)
    click.echo("")
    if not engines:
        click.echo("TensorRT-RTX engines were not built and TensorRT latency was not estimated "
                   "(pip install 'quantkit[rtx]': both work on a CPU-only machine too).")
    if report:
        from quantkit.report import headline, load_sweep
        from quantkit.report.markdown import headline_text

        h = headline(load_sweep(results))
        click.echo(headline_text(h, markdown=False))
        click.echo(h.choice.rule)
        if h.note:
            click.echo(h.note)
        click.echo("")
    click.echo(f"results: {Path(results) / 'results.csv'}")
    if report:
        click.echo(f"report:  {report}")
    failed = [r["config"] for r in rows if r.get("status") != "ok"]
    if failed:
        raise PipelineError(f"demo configs failed: {', '.join(failed)} (see results.csv)")
