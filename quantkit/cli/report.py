"""``quantkit report``: the self-contained HTML report and Markdown summary of a sweep."""

from __future__ import annotations

from pathlib import Path

import click


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

    sweep = load_sweep(directory)
    path = write_report(sweep, output, summary)
    md = Path(summary) if summary is not None else path.parent / "summary.md"
    click.echo(headline_text(headline(sweep), markdown=False))
    click.echo(f"wrote {path} and {md}")
