"""``quantkit report``: the self-contained HTML report and Markdown summary of a sweep."""

from __future__ import annotations

from pathlib import Path

import click

from quantkit.cli.options import Bounded
from quantkit.errors import InputError

#: files and folders of a sweep directory that ``quantkit report`` reads
_SWEEP_INPUTS = ("results.csv", "environment.json", "autotune.json", "sensitivity.csv",
                 "recipe.yaml")
_SWEEP_TREES = ("configs", "calibration")


def _check_not_an_input(directory: Path, path: Path, flag: str) -> None:
    """Refuse an output that would overwrite one of the sweep's own files."""
    import os

    if not path.exists():
        return
    target = path.resolve()
    for name in _SWEEP_INPUTS:
        f = directory / name
        if f.exists() and os.path.samefile(f, path):
            raise InputError(f"{flag} {path}: is the sweep's {name}, an input of the report; "
                             "quantkit never overwrites its inputs. Choose another output "
                             "path.")
    for name in _SWEEP_TREES:
        tree = (directory / name).resolve()
        if tree in target.parents:
            raise InputError(f"{flag} {path}: is inside the sweep's {name}/ folder, an input "
                             "of the report; choose another output path.")


@click.command("report")
@click.argument("directory", type=click.Path())
@click.option("-o", "--output", default=None, type=click.Path(),
              help="HTML file to write.  [default: DIRECTORY/report.html]")
@click.option("--summary", default=None, type=click.Path(),
              help="Markdown summary for a pull request.  [default: summary.md next to the "
                   "HTML file]")
@click.option("--tolerance", type=Bounded(float, 0), default=None,
              help="Headline: the fastest INT8 config within this many metric points of the "
                   "best config.  [default: the recipe's report.tolerance, else 0.5]")
def report_cmd(directory: str, output: str | None, summary: str | None,
               tolerance: float | None) -> None:
    """Write a self-contained HTML report (and summary.md) for a sweep DIRECTORY.

    The HTML opens from a file with no network: the headline config (the fastest config with
    INT8 layers within --tolerance metric points of the best, by measured or estimated
    TensorRT latency), the accuracy-vs-latency plot with the Pareto front, the results table
    (every latency names its source: measured, estimated, cpu-fake-quant or cpu), where the
    estimated time goes, the per-layer precision map, sensitivity, autotune, calibration and
    its warnings, engine disagreements and the environment. summary.md is a short Markdown
    table with the headline, its rule and warnings, for a pull-request comment.

    \b
    Examples:
      quantkit report sweep-out
      quantkit report sweep-out -o review/report.html --summary review/summary.md
    """
    from quantkit.report import headline, load_sweep, write_report
    from quantkit.report.markdown import headline_text

    root = Path(directory)
    html = Path(output) if output is not None else root / "report.html"
    md = Path(summary) if summary is not None else html.parent / "summary.md"
    _check_not_an_input(root, html, "-o")
    _check_not_an_input(root, md, "--summary")
    if html.resolve() == md.resolve():
        raise InputError(f"-o {html} and --summary {md} are the same file; give two paths.")
    sweep = load_sweep(directory)
    path = write_report(sweep, output, summary, tolerance)
    h = headline(sweep, tolerance=tolerance)
    click.echo(headline_text(h, markdown=False))
    click.echo(h.choice.rule)
    if h.note:
        click.echo(h.note)
    click.echo(f"wrote {path} and {md}")
