"""``quantkit transform``: equalization, SmoothQuant migration, bias correction of a model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from quantkit._io import check_output_path
from quantkit.calibrators import DEFAULT_METHOD
from quantkit.cli.options import Bounded, build_data_options, data_options_optional
from quantkit.cli.render import print_table
from quantkit.errors import InputError


@click.command("transform")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--equalize", is_flag=True,
              help="Cross-layer equalization of Conv/Gemm/MatMul pairs (FP32 function kept; "
                   "checked on the first 32 samples when --data is given).")
@click.option("--relu6-to-relu", is_flag=True,
              help="With --equalize: replace the ReLU6 (Clip 0..6) between two layers by Relu "
                   "so those pairs are equalized. CHANGES the FP32 function: measure it.")
@click.option("--high-bias", is_flag=True,
              help="High-bias absorption: the always-positive part of ReLU inputs moves into "
                   "the next layer's bias (after --equalize; needs --data unless the model "
                   "has BatchNormalization statistics).")
@click.option("--smoothquant", is_flag=True,
              help="Migrate activation outlier channels of MatMul/Gemm inputs into their "
                   "weights (transformers; needs --data; FP32 function kept).")
@click.option("--alpha", type=Bounded(float), default=0.5, show_default=True,
              help="SmoothQuant migration strength in [0, 1].")
@click.option("--bias-correct", is_flag=True,
              help="Remove the mean INT8 output shift of each layer (needs --data).")
@data_options_optional
@click.option("--method", default=DEFAULT_METHOD, show_default=True,
              help="Calibration method of the scales bias correction simulates.")
@click.option("--sequential", is_flag=True,
              help="Bias correction layer by layer through the quantized model (one pass "
                   "over the data per layer).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output FP32 ONNX model (quantize it with `quantkit quantize`).")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def transform_cmd(model: str, equalize: bool, relu6_to_relu: bool, high_bias: bool,
                  smoothquant: bool, alpha: float,
                  bias_correct: bool, data: str | None,
                  batch_size: int, max_samples: int | None, seed: int | None,
                  preprocess_file: str | None, columns: tuple[str, ...], streaming: bool,
                  method: str, sequential: bool, output: str, as_json: bool) -> None:
    """Rewrite an FP32 model's weights/biases so that INT8 loses less; node names unchanged.

    The reports are stored in the model's `quantkit.transforms` metadata, which quantized
    models keep. Re-calibrate the output before quantizing it. Order: equalize, high-bias
    absorption, SmoothQuant, bias correction. A transform that finds nothing to do warns
    (with the layers and why); one that would change the outputs on the data is refused.

    \b
    Examples:
      quantkit transform model.onnx --equalize -o model.cle.onnx
      quantkit transform model.onnx --equalize --high-bias --data calib.npz -o model.t.onnx
      quantkit transform bert.onnx --smoothquant --alpha 0.8 --data calib.npz -o bert.sq.onnx
      quantkit transform model.onnx --equalize --bias-correct --data calib.npz \\
          --method percentile -o model.t.onnx
    """
    import json

    from quantkit.model import load_model, save_model
    from quantkit.transforms import TransformReport, absorb_high_bias
    from quantkit.transforms import bias_correct as run_bias_correct
    from quantkit.transforms import equalize as run_equalize
    from quantkit.transforms import smoothquant as run_smoothquant

    if not (equalize or high_bias or bias_correct or smoothquant):
        raise InputError("nothing to do: give --equalize, --high-bias, --smoothquant and/or "
                         "--bias-correct.")
    if relu6_to_relu and not equalize:
        raise InputError("--relu6-to-relu is an option of --equalize: add --equalize.")
    if bias_correct and data is None:
        raise InputError("--bias-correct measures the INT8 shift on data: give --data D.")
    if smoothquant and data is None:
        raise InputError("--smoothquant measures activation ranges on data: give --data D.")
    options = build_data_options(preprocess_file, columns, streaming, seed)
    check_output_path(output, model, data, preprocess_file, flag="-o")
    current = load_model(model)
    has_bn = any(n.op_type == "BatchNormalization" for n in current.graph.node)
    if high_bias and data is None and not has_bn:
        raise InputError("--high-bias measures how far each ReLU input stays above 0 on data "
                         "(the model has no BatchNormalization statistics): give --data D.")
    reports: list[TransformReport] = []
    run_kw: dict[str, Any] = {"batch_size": batch_size, "data_options": options}
    # Without data the BN statistics are used, which equalize's BN folding would drop: absorb
    # first. Same result: equalization scales depend on the weights only and absorption
    # changes biases only, so the two commute.
    bn_first = high_bias and data is None
    if bn_first:
        current, rep = absorb_high_bias(current)
        reports.append(rep)
    if equalize:
        current, rep = run_equalize(current, relu6_to_relu=relu6_to_relu, data=data, **run_kw)
        reports.append(rep)
    if high_bias and not bn_first:
        current, rep = absorb_high_bias(current, data, max_samples=max_samples, **run_kw)
        reports.append(rep)
    if smoothquant:
        current, rep = run_smoothquant(current, data, alpha=alpha, max_samples=max_samples,
                                       verify=True, **run_kw)
        reports.append(rep)
    if bias_correct:
        from quantkit.capture import calibrate

        with tempfile.TemporaryDirectory(prefix="quantkit-transform-") as tmp:
            path = os.path.join(tmp, Path(model).name)
            save_model(current, path)
            scales = calibrate(path, data, method=method, batch_size=batch_size,
                               max_samples=max_samples, data_options=options).scales
        current, rep = run_bias_correct(current, data, scales=scales, sequential=sequential,
                                        batch_size=batch_size, max_samples=max_samples,
                                        data_options=options)
        reports.append(rep)
    save_model(current, output)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
        return
    for rep in reports:
        rows = [(c.get("first", c.get("layer")), c.get("second", ""), "changed",
                 _describe(c)) for c in rep.changed]
        rows += [(s.get("first", s.get("layer")), s.get("second") or "", "skipped",
                  str(s["reason"])) for s in rep.skipped]
        click.echo(f"{rep.transform}:")
        print_table(["layer", "next layer", "", "detail"], rows)
        if rep.settings.get("replaced_relu6"):
            click.echo(f"ReLU6 replaced by Relu (FP32 function changed): "
                       f"{', '.join(rep.settings['replaced_relu6'])}")
        if rep.settings.get("verified"):
            v = rep.settings["verified"]
            click.echo(f"outputs checked on {v['samples']} samples: max abs difference "
                       f"{v['max_abs_diff']:.3g} ({v['max_rel_diff']:.3g} of max |output|)")
    click.echo(f"\nwrote {output}: " + "; ".join(r.summary() for r in reports))


def _describe(change: dict[str, object]) -> str:
    if "c_max" in change:
        return (f"absorbed {change['absorbed_channels']}/{change['channels']} channels "
                f"(c max {change['c_max']:.3g}, from {change['source']})")
    if "scale_min" in change:
        return (f"scales {change['scale_min']:.3g}..{change['scale_max']:.3g} over "
                f"{change['channels']} channels")
    return f"mean |shift| {change['mean_abs_shift']:.3g}, max {change['max_abs_shift']:.3g}"
