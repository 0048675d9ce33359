"""Reports of a sweep: figures, a self-contained HTML page and a Markdown summary.

For notebooks::

    from quantkit.report import load_sweep, pareto_front, figures, write_report

    sweep = load_sweep("sweep-out")            # results DataFrame, plans, sensitivity, ...
    sweep.results[pareto_front(sweep.results)]  # configs on the accuracy-latency front
    figures.accuracy_latency(sweep.results)     # matplotlib Figure
    figures.precision_map(sweep.plans)
    write_report("sweep-out")                   # sweep-out/report.html + summary.md

This package imports pandas and matplotlib; ``import quantkit`` does not import it.
"""

from __future__ import annotations

from quantkit.report import figures
from quantkit.report.html import render_html, write_report
from quantkit.report.load import (
    EngineInfo,
    Sweep,
    baseline_config,
    load_sweep,
    pareto_front,
    with_derived,
)
from quantkit.report.markdown import Headline, headline, render_markdown

__all__ = ["EngineInfo", "Headline", "Sweep", "baseline_config", "figures", "headline",
           "load_sweep", "pareto_front", "render_html", "render_markdown", "with_derived",
           "write_report"]
