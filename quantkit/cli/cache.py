"""``quantkit cache show`` / ``quantkit cache convert``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from quantkit._io import check_output_path
from quantkit.cli.render import print_table
from quantkit.errors import InputError

if TYPE_CHECKING:
    from quantkit.calibrators.cache import ScaleTable


@click.group("cache")
def cache_group() -> None:
    """Inspect and convert TensorRT calibration caches and quantkit scales JSON."""


@cache_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the scales JSON instead.")
def show_cmd(file: str, as_json: bool) -> None:
    """Decode a TensorRT calibration cache (any version) or a scales JSON."""
    from quantkit.calibrators.cache import float_to_hex

    table = _read_lossless(file)
    if as_json:
        click.echo(table.to_json(), nl=False)
        return
    click.echo(f"TRT-{table.trt_version}-{table.algorithm}"
               + (f"  method={table.method}" if table.method else "")
               + (f"  samples={table.num_samples}" if table.num_samples else ""))
    rows = [(n, float_to_hex(s), f"{s:.9g}", f"{table.amaxes[n]:.9g}")
            for n, s in table.scales.items()]
    print_table(["tensor", "hex", "scale", "amax"], rows, max_width=80)
    click.echo(f"\n{len(rows)} tensors")


@cache_group.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file: .json for scales JSON, anything else for a TensorRT cache.")
@click.option("--to", "fmt", type=click.Choice(["json", "cache"]), default=None,
              help="Output format (default: from the output's suffix).")
def convert_cmd(src: str, output: str, fmt: str | None) -> None:
    """Convert between a TensorRT calibration cache and a scales JSON, losslessly."""
    check_output_path(output, src, flag="-o")
    table = _read_lossless(src)
    fmt = fmt or ("json" if output.lower().endswith(".json") else "cache")
    if fmt not in ("json", "cache"):
        raise InputError(f"--to {fmt}: choose json or cache.")
    table.write(output, fmt)
    click.echo(f"wrote {output} ({fmt}, {len(table.scales)} tensors)")


def _read_lossless(path: str) -> ScaleTable:
    """Read every scale bit for bit, warning (not refusing) about ones TensorRT cannot use.

    ``show`` and ``convert`` are lossless by contract; ``quantize`` refuses such scales.
    """
    from quantkit.calibrators.cache import check_scale_range, read_scales

    table = read_scales(path, check_range=False)
    for name, scale in table.scales.items():
        try:
            check_scale_range(name, scale, path)
        except InputError as err:
            click.echo(f"warning: {err} quantize refuses it.", err=True)
    return table
