"""``quantkit quantize``: write an explicitly quantized (Q/DQ) ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from quantkit._io import check_output_path
from quantkit.calibrators.base import DEFAULT_METHOD, canonical_method
from quantkit.cli.options import (
    allow_cast_option,
    build_data_options,
    cast_flag_errors,
    data_options_optional,
)
from quantkit.cli.render import print_table
from quantkit.errors import InputError
from quantkit.transforms.registry import rescue_help


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options_optional
@click.option("--method", default=DEFAULT_METHOD, show_default=True,
              help="Calibration method with --data: auto | entropy | minmax | percentile | "
                   "mse (case-insensitive; docs/calibration_methods.md).")
@allow_cast_option
@click.option("--scales", "scales_file", type=click.Path(dir_okay=False), default=None,
              help="Scales JSON or TensorRT calibration cache (instead of --data).")
@click.option("--precision", "precision_file", type=click.Path(dir_okay=False), default=None,
              help="Precision YAML: default, default_float and ordered overrides.")
@click.option("--fp16", is_flag=True, help="Make the non-INT8 part FP16 (strongly typed).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output Q/DQ ONNX model.")
@click.option("--json", "as_json", is_flag=True, help="Print the precision plan as JSON.")
@click.option("--rescue", "rescue", multiple=True, metavar="T[,T...]",
              help=rescue_help())
def quantize_cmd(model: str, data: str | None, batch_size: int, max_samples: int | None,
                 seed: int | None, preprocess_file: str | None, columns: tuple[str, ...],
                 streaming: bool, method: str, allow_cast: bool, scales_file: str | None,
                 precision_file: str | None, fp16: bool, output: str, as_json: bool,
                 rescue: tuple[str, ...]) -> None:
    """Insert Q/DQ following TensorRT's placement rules, with per-layer precision overrides.

    \b
    Examples:
      quantkit quantize model.onnx --scales scales.json -o model.int8.onnx
      quantkit quantize model.onnx --data calib.npz --precision p.yaml --fp16 -o model.q.onnx
      quantkit quantize model.onnx --data calib.npz --rescue cle,bias-correction -o q.onnx
    """
    import json

    from quantkit.calibrators import read_scales
    from quantkit.model import (
        check_not_quantized,
        external_data_files,
        load_model,
        save_model,
    )
    from quantkit.qdq.writer import quantize_model
    from quantkit.transforms.precision_file import PrecisionFile

    if rescue and data is None and scales_file is None:
        raise InputError("--rescue needs --data D: the transforms read it, and the "
                         "transformed model is calibrated on it.")
    if data is not None and scales_file is not None:
        raise InputError("give exactly one of --data (calibrate now) or --scales S.json.")
    if data is not None:
        from quantkit.calibrators import get_calibrator_class

        method = canonical_method(method)
        get_calibrator_class(method)  # unknown method: exit 2 before any work
    check_output_path(output, model, data, scales_file, precision_file, preprocess_file,
                      flag="-o")
    config = PrecisionFile.from_yaml(precision_file) if precision_file else PrecisionFile()
    specs = _rescue_specs(rescue, config, precision_file, scales_file)
    if Path(output).exists() or Path(f"{output}.data").exists():
        # the output (or the external-data file a large output gets) must not be one of the
        # input model's external-data files
        ext = external_data_files(load_model(model, load_external_data=False), model)
        for target in (output, f"{output}.data"):
            check_output_path(target, *ext, flag="-o")
    onnx_model = load_model(model)
    check_not_quantized(onnx_model, model, "quantized")
    if data is None and scales_file is None and _plan_has_int8(onnx_model, config):
        raise InputError("give exactly one of --data (calibrate now) or --scales S.json: the "
                         "precision plan puts nodes in INT8 (a plan without INT8 nodes needs "
                         "neither).")
    data_opts = build_data_options(preprocess_file, columns, streaming, seed)
    reports: list[dict[str, Any]] = []
    scales = None
    if scales_file:
        scales = read_scales(scales_file)
    elif specs:
        from quantkit.transforms.rescue import apply_rescue, plan_int8_layers

        # bias correction only on the INT8 layers: an FP16/FP32 layer keeps its bias
        int8 = plan_int8_layers(onnx_model, config)
        from quantkit.data import allow_cast as allowing_cast

        with cast_flag_errors(), allowing_cast(allow_cast):
            rescued = apply_rescue(onnx_model, specs, data, method=method,
                                   batch_size=batch_size, max_samples=max_samples,
                                   data_options=data_opts, layers=int8, where="--rescue")
        onnx_model, scales, reports = rescued.model, rescued.scales, rescued.details
    elif data is not None:
        from quantkit.capture import calibrate

        with cast_flag_errors():
            scales = calibrate(model, data, method=method, batch_size=batch_size,
                               max_samples=max_samples, data_options=data_opts,
                               allow_cast=allow_cast).scales
    result = quantize_model(onnx_model, scales, config, fp16=fp16, source=model)
    save_model(result.model, output)
    plan = result.plan
    for line in _rescue_lines(reports):  # on stderr with --json: stdout stays one document
        click.echo(line, err=as_json)
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    rows = [(n.name, n.op_type, n.precision, n.reason) for n in plan.nodes.values()]
    print_table(["node", "op", "precision", "why"], rows)
    c = plan.counts()
    fp8 = f"{c['fp8']} fp8, " if c.get("fp8") else ""
    click.echo(f"\nwrote {output}: {c['int8']} int8, {fp8}{c['fp16']} fp16, {c['fp32']} fp32 "
               "nodes; "
               f"Q/DQ on {len(result.activation_qdq)} activations and "
               f"{len(result.weight_qdq)} weights (default_float {plan.default_float})")


def _plan_has_int8(model: Any, config: Any) -> bool:
    """Whether the precision plan of ``model`` has an INT8 node (then scales are needed)."""
    from quantkit.transforms.rescue import plan_int8_layers

    return bool(plan_int8_layers(model, config))


def _rescue_specs(flags: tuple[str, ...], config: Any, precision_file: str | None,
                  scales_file: str | None) -> list[Any]:
    """``--rescue`` and the precision file's ``rescue:`` (union; the flag's options win)."""
    if not flags and not config.rescue:
        return []
    from quantkit.transforms.registry import combine_rescue, parse_rescue

    specs = combine_rescue(parse_rescue(flags, where="--rescue"),
                           parse_rescue(config.rescue, where=f"{precision_file}: rescue"))
    if scales_file:
        origin = "--rescue" if flags else f"rescue: in {precision_file}"
        raise InputError(f"{origin} needs --data instead of --scales: the rescue transforms "
                         "change weights and activation ranges, so the transformed model is "
                         "calibrated on --data (bias correction uses those scales); scales "
                         f"from {scales_file} belong to the untransformed model.")
    return specs


def _rescue_lines(reports: list[dict[str, Any]]) -> list[str]:
    """One line per transform: what changed and how many were skipped."""
    from quantkit.transforms.rescue import changed_layers

    out = []
    for rep in reports:
        names = changed_layers(rep)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} layers)" if len(names) > 8
                                        else "")
        out.append(f"rescue {rep['transform']}: {len(rep.get('changed', []))} changed"
                   + (f" ({shown})" if names else "")
                   + f", {len(rep.get('skipped', []))} skipped")
    return out
