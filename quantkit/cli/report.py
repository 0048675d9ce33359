"""``quantkit report``: the self-contained HTML report and Markdown summary of a sweep."""

from __future__ import annotations

from pathlib import Path

import click

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
def report_cmd(directory: str, output: str | None, summary: str | None) -> None:
    """Write a self-contained HTML report (and summary.md) for a sweep DIRECTORY.

    The HTML opens from a file with no network: the accuracy-vs-latency plot with the Pareto
    front, the results table, the per-layer precision map, sensitivity, autotune, calibration,
    engine disagreements and the environment. summary.md is a short Markdown table with the
    headline and warnings, for a pull-request comment.

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
    path = write_report(sweep, output, summary)
    click.echo(headline_text(headline(sweep), markdown=False))
    click.echo(f"wrote {path} and {md}")
