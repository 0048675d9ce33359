"""``quantkit estimate``: estimated TensorRT latency of MODEL on named GPUs (no GPU needed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from quantkit.cli.build import _status
from quantkit.cli.render import print_table

if TYPE_CHECKING:
    from quantkit.latency import GPU, Estimate


def split_gpus(text: str | None) -> list[str]:
    """``"L4, h100"`` -> ``["L4", "h100"]`` (shared with ``quantkit build --estimate-gpu``)."""
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def _fmt_ms(ms: float) -> str:
    return f"{ms * 1e3:.1f} us" if ms < 1 else f"{ms:.3f} ms"


def _fmt_num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}"


def render_estimate(est: Estimate, top: int) -> None:
    """Kernels sorted by time (the ``top`` slowest; 0 = all), per-precision totals, total."""
    kernels = sorted(est.kernels, key=lambda k: k.ms, reverse=True)
    shown = kernels if top <= 0 else kernels[:top]
    click.echo(f"{est.gpu}: {_fmt_ms(est.latency_ms)} ({est.label}; "
               f"{len(est.kernels)} kernels, built for {est.build_target})")
    rows: list[list[Any]] = []
    for k in shown:
        layers = ",".join(k.onnx_layers) if k.onnx_layers else "-"
        name = f"{k.name} (+{len(k.fused)} fused)" if k.fused else k.name
        rows.append([name, k.precision, f"{k.flops / 1e9:.3f}", f"{k.bytes / 1e6:.3f}",
                     k.bound, _fmt_ms(k.ms), layers])
    print_table(["kernel", "precision", "GFLOP", "MB", "bound", "time", "onnx layers"], rows,
                max_width=48)
    if len(shown) < len(kernels):
        rest = sum(k.ms for k in kernels[len(shown):])
        click.echo(f"... {len(kernels) - len(shown)} more kernels, {_fmt_ms(rest)} "
                   "(--top 0 shows all)")
    totals = ", ".join(f"{p} {_fmt_ms(ms)}" for p, ms in
                       sorted(est.by_precision.items(), key=lambda item: -item[1]))
    click.echo(f"by precision: {totals}")
    click.echo(f"total: {_fmt_ms(est.latency_ms)} estimated on {est.gpu}")
    click.echo(f"method: {est.method}")


def _render_gpus(gpus: list[GPU]) -> None:
    rows = [[g.name, g.sm, _fmt_num(g.fp32_tflops), _fmt_num(g.tf32_tflops),
             _fmt_num(g.fp16_tflops), _fmt_num(g.bf16_tflops), _fmt_num(g.fp8_tflops),
             _fmt_num(g.int8_tops), _fmt_num(g.bandwidth_gbs), ",".join(g.build_targets)]
            for g in gpus]
    click.echo("Dense peak throughput (TFLOPS/TOPS; FP32 = CUDA cores, the rest tensor cores) "
               "and DRAM bandwidth (GB/s):")
    print_table(["gpu", "sm", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "GB/s", "builds"],
                rows)
    click.echo("\nSources:")
    for g in gpus:
        aliases = f" (also: {', '.join(g.aliases)})" if g.aliases else ""
        click.echo(f"  {g.name}{aliases}: {g.citation}, {g.url} - {g.notes}")


@click.command("estimate")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--gpu", "gpus", default=None, metavar="NAME[,NAME]",
              help="GPU(s) from the table (--list-gpus), comma-separated, e.g. L4,H100.")
@click.option("--shapes", default=None, metavar="NAME:DIMS[,...]",
              help="Shape per dynamic input, e.g. input:1x3x224x224.")
@click.option("--top", type=click.IntRange(min=0), default=15, show_default=True,
              help="Show the N slowest kernels (0: all).")
@click.option("--as-built", is_flag=True,
              help="Time the kernels exactly as TensorRT-RTX built them (default: fold the "
                   "separate INT8/FP8 epilogue kernels into their convolution, as TensorRT "
                   "fuses them, and count run-time weight kernels as build-time work).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (one object for one GPU, a list for several).")
@click.option("--list-gpus", "show_gpus", is_flag=True,
              help="Print the GPU table with its sources and exit.")
def estimate_cmd(model: str | None, gpus: str | None, shapes: str | None, top: int,
                 as_built: bool, as_json: bool, show_gpus: bool) -> None:
    """Estimate the TensorRT latency of MODEL's engine on a GPU you do not have.

    MODEL is built with TensorRT-RTX on this machine for the GPU's compute capability (or the
    closest one TensorRT-RTX can target, named in the output). Each compiled kernel gets a
    roofline time at its precision from its FLOPs and the bytes it moves, plus a launch cost;
    the latency is their sum. The figure is an estimate (label "estimated"), not a measurement.

    \b
    Examples:
      quantkit estimate model.qdq.onnx --gpu L4 --shapes input:1x3x224x224
      quantkit estimate model.onnx --gpu A100,H100,Jetson-AGX-Orin --json
      quantkit estimate --list-gpus
    """
    from quantkit.backends import parse_shapes
    from quantkit.errors import InputError
    from quantkit.latency import EstimateOptions, estimate_models, list_gpus

    if show_gpus:
        if as_json:
            click.echo(json.dumps([g.to_json() for g in list_gpus()], indent=2))
        else:
            _render_gpus(list_gpus())
        return
    if model is None:
        raise InputError("quantkit estimate needs MODEL (an .onnx file), or --list-gpus.")
    names = split_gpus(gpus)
    if not names:
        raise InputError("--gpu: name the GPU to estimate for, e.g. --gpu L4 (several: "
                         "--gpu L4,H100); quantkit estimate --list-gpus shows the table.")
    fixed = parse_shapes(shapes, "--shapes")
    options = EstimateOptions(fuse_epilogues=not as_built,
                              fold_constant_kernels=not as_built)
    # every GPU name and the model's precisions are checked before the first build
    with _status() as status:
        estimates = estimate_models(model, names, shapes=fixed or None, options=options,
                                    status=status)
    if as_json:
        docs = [e.to_json() for e in estimates]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return
    for i, est in enumerate(estimates):
        if i:
            click.echo("")
        render_estimate(est, top)
    if len(estimates) > 1:
        _render_summary(estimates)


def _render_summary(estimates: list[Estimate]) -> None:
    """One line per GPU: estimated latency, throughput, per-precision time, build target."""
    click.echo("\nsummary (estimated TensorRT latency):")
    rows = []
    for est in estimates:
        rate = f"{est.throughput:,.0f}/s" if est.throughput is not None else "-"
        split = ", ".join(f"{p} {_fmt_ms(ms)}" for p, ms in
                          sorted(est.by_precision.items(), key=lambda item: -item[1]))
        rows.append([est.gpu, _fmt_ms(est.latency_ms), rate, split, est.build_target])
    print_table(["gpu", "latency", "throughput", "by precision", "built for"], rows)
