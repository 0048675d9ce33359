"""``quantkit demo``: run the pipeline on the model and data the package makes itself."""

from __future__ import annotations

import click

from quantkit.cli.render import print_table


@click.command("demo")
@click.option("-o", "--output", "out_dir", default="quantkit-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the demo's outputs.")
def demo_cmd(out_dir: str) -> None:
    """Calibrate the built-in demo CNN with every method (no download, ~10 s on a CPU)."""
    from quantkit.demo import METHODS, run_demo

    result = run_demo(out_dir)
    names = list(result.amax["entropy"])
    rows = [(n, *(f"{result.amax[m][n]:.4g}" for m in METHODS)) for n in names]
    print_table(["tensor", *METHODS], rows)
    click.echo(f"\nwrote TensorRT caches, scales JSON and amax_by_method.csv to "
               f"{result.out_dir}/")
