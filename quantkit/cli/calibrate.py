"""``quantkit calibrate``: collect activation statistics and write scales."""

from __future__ import annotations

import json
from pathlib import Path

import click

from quantkit._io import check_output_path
from quantkit.calibrators.base import DEFAULT_METHOD, canonical_method
from quantkit.capture.checkpoint import Checkpoint
from quantkit.cli.options import (
    allow_cast_option,
    build_data_options,
    cast_flag_errors,
    data_options,
)
from quantkit.cli.render import print_table
from quantkit.cli.scaleout import calibrate_on_executor, executor_options
from quantkit.errors import InputError


def parse_trt_version(text: str) -> int:
    """``10.13.0`` -> 101300; a plain integer (``8601``) is taken as is."""
    parts = text.split(".")
    ok = text.isascii() and 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)
    if ok and len(parts) == 1:
        ok = 0 < int(text) < 10**8  # the cache header holds 1-8 digits
        value = int(text) if ok else 0
    elif ok:
        major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
        ok = 0 < major < 10000 and minor < 100 and patch < 100
        value = major * 10000 + minor * 100 + patch
    if not ok:
        raise InputError(f"--trt-version {text[:40]}: expected MAJOR.MINOR.PATCH with MINOR and "
                         "PATCH below 100 (e.g. 10.13.0), or the header number (e.g. 8601).")
    return value


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@click.option("--method", default=DEFAULT_METHOD, show_default=True,
              help="auto | entropy | minmax | percentile | mse (or a plugin's name); "
                   "case-insensitive. auto: per tensor, the threshold with the least expected "
                   "INT8 error (docs/calibration_methods.md); entropy: TensorRT's own.")
@click.option("--percentile", type=float, default=None,
              help="Percentile for --method percentile (default 99.99).")
@click.option("--cache", "cache_out", type=click.Path(dir_okay=False), default=None,
              help="Write a TensorRT calibration cache here.")
@click.option("--scales", "scales_out", type=click.Path(dir_okay=False), default=None,
              help="Write quantkit's scales JSON here.")
@click.option("--allow-nonfinite", is_flag=True,
              help="Skip NaN/Inf values instead of failing.")
@allow_cast_option
@click.option("--calibrator", "plugin", type=click.Path(dir_okay=False), default=None,
              help="Python file registering a custom calibration method.")
@click.option("--trt-version", default="10.13.0", show_default=True,
              help="TensorRT version written in the cache header.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Save progress here every --checkpoint-every batches and on Ctrl-C; re-run "
                   "the same command to resume (scales identical to an uninterrupted run).")
@click.option("--checkpoint-every", type=int, default=10, show_default=True,
              help="Batches between checkpoint saves.")
@click.option("--json", "as_json", is_flag=True, help="Print the scales JSON to stdout.")
@click.option("--memory-budget", default=None, metavar="SIZE",
              help="Memory for one batch's activations, e.g. 4GiB (default: 25% of the "
                   "available memory, at most 512 MiB). Above it the model runs in stages; the "
                   "scales are identical.")
@click.option("--all-tensors", is_flag=True,
              help="Calibrate every floating-point activation (a TensorRT cache for implicit "
                   "quantization). Default: only the activations quantized ops read (inputs "
                   "of Conv, ConvTranspose, Gemm, MatMul, residual Adds); the others' scales "
                   "are never used. Scales of the tensors calibrated either way are identical.")
@executor_options
def calibrate_cmd(model: str, data: str, batch_size: int, max_samples: int | None,
                  seed: int | None, preprocess_file: str | None, columns: tuple[str, ...],
                  streaming: bool, method: str, percentile: float | None,
                  cache_out: str | None, scales_out: str | None, allow_nonfinite: bool,
                  allow_cast: bool, plugin: str | None, trt_version: str, checkpoint: str | None,
                  checkpoint_every: int, as_json: bool, memory_budget: str | None,
                  all_tensors: bool, executor: str, ray_address: str | None,
                  shards: int | None) -> None:
    """Calibrate the floating-point activations of MODEL that quantized ops read.

    \b
    Examples:
      quantkit calibrate model.onnx --data calib.npz --cache model.cache
      quantkit calibrate model.onnx --data images/ --preprocess recipe.yaml \\
          --method percentile --percentile 99.99 --scales scales.json
      quantkit calibrate model.onnx --data big.npy --cache model.cache \\
          --checkpoint calib.ckpt     # killed? run it again: it resumes
    """
    from quantkit.calibrators import get_calibrator_class, load_calibrator_plugin
    from quantkit.capture import calibrate

    # outputs first: a bad output path is refused before a plugin's code runs
    outs = [p for p in (cache_out, scales_out) if p]
    for flag, path in (("--cache", cache_out), ("--scales", scales_out),
                       ("--checkpoint", checkpoint)):
        if path:
            check_output_path(path, model, data, preprocess_file, plugin, flag=flag)
    outputs = [Path(p).resolve() for p in (cache_out, scales_out, checkpoint) if p]
    if len(set(outputs)) < len(outputs):
        raise InputError("--cache, --scales and --checkpoint must name different files.")
    if plugin:
        load_calibrator_plugin(plugin)
    method = canonical_method(method)
    get_calibrator_class(method)  # unknown method: exit 2 before any work
    options = {}
    if percentile is not None:
        if method != "percentile":
            raise InputError(f"--percentile {percentile}: only valid with --method percentile.")
        options["percentile"] = percentile
    version = parse_trt_version(trt_version)
    if memory_budget is not None:
        from quantkit.capture.staged import parse_memory

        parse_memory(memory_budget, "--memory-budget")  # a bad size: exit 2 before any work
    data_opts = build_data_options(preprocess_file, columns, streaming, seed)
    if not outs and not as_json:
        click.echo("note: neither --cache nor --scales given: the scales are printed, no file "
                   "is written.", err=True)
    if executor == "local" and shards is None and ray_address is None:
        with cast_flag_errors():
            result = calibrate(
                model, data, method=method, batch_size=batch_size, max_samples=max_samples,
                allow_nonfinite=allow_nonfinite, method_options=options,
                data_options=data_opts, trt_version=version, checkpoint=checkpoint,
                checkpoint_every=checkpoint_every, keep_checkpoint=True, allow_cast=allow_cast,
                memory_budget=memory_budget, quantized_only=not all_tensors,
            )
    else:
        if allow_cast:
            raise InputError("--allow-cast: not supported with --shards / --executor ray; "
                             "convert the data to the model's float type, or drop --shards.")
        if checkpoint:
            raise InputError("--checkpoint: not supported with --shards / --executor ray (a "
                             "failed shard is re-run); drop one of them.")
        result = calibrate_on_executor(
            model, data, executor, ray_address, shards, method=method, batch_size=batch_size,
            max_samples=max_samples, allow_nonfinite=allow_nonfinite, method_options=options,
            data_options=data_opts, trt_version=version,
            plugins=(plugin,) if plugin else (), quantized_only=not all_tensors)
    table = result.scales
    if cache_out:
        table.write(cache_out, "cache")
    if scales_out:
        table.write(scales_out, "json")
    if checkpoint:  # the outputs are written: the run is complete
        Checkpoint(checkpoint, {}).remove()
    if as_json:
        click.echo(json.dumps(table.to_json_dict(), indent=2))
        return
    rows = [(n, f"{table.amaxes[n]:.6g}", f"{s:.6g}") for n, s in table.scales.items()]
    print_table(["tensor", "amax", "scale"], rows)
    skipped = sum(result.calibrator.nonfinite_counts.values())
    click.echo(f"\n{len(rows)} tensors calibrated with {method} on {result.num_samples} samples"
               + (f"; {skipped} non-finite values skipped" if skipped else "")
               + (f"; wrote {', '.join(outs)}" if outs else ""))
