"""Figures: what they plot, labels that do not overlap, base64 rendering."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from sweep_dirs import make_sweep

from quantkit.report import figures, load_sweep, with_derived


def _labels(fig: Figure) -> list[Text]:
    return [t for t in fig.axes[0].texts if t.get_text()]


def test_accuracy_latency_plots_ok_configs_and_marks_the_front(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s"))
    df = with_derived(sweep)
    fig = figures.accuracy_latency(df, baseline="fp32")
    assert isinstance(fig, Figure)
    names = {t.get_text() for t in _labels(fig)}
    assert names == set(df.loc[df["status"] == "ok", "config"])  # failed ones left out
    ax = fig.axes[0]
    assert "top1" in ax.get_ylabel() and "higher is better" in ax.get_ylabel()
    assert "6 on the Pareto front" in ax.get_title()
    rings = [c for c in ax.collections if c.get_label() == "Pareto front"]
    assert len(rings) == 1 and len(rings[0].get_offsets()) == int(df["pareto"].sum())
    assert "estimated" in ax.get_xlabel() and "ms per batch" in ax.get_xlabel()


def test_noise_bars_instead_of_p99_and_all_inside_the_axes() -> None:
    """p99 at 30x the median must not run off the chart: only the median's spread is drawn."""
    df = pd.DataFrame({"config": ["a", "b", "c"], "latency_ms_p50": [1.0, 2.0, 3.0],
                       "latency_ms_p99": [40.0, 60.0, 90.0], "latency_ms_p50_min": [0.9, 1.8, 3.0],
                       "latency_ms_p50_max": [1.1, 2.3, 3.0], "accuracy": [70.0, 75.0, 76.0],
                       "status": "ok", "int8_layers": [3, 3, 0], "fp16_layers": [0, 0, 0],
                       "latency_source": ["cpu-fake-quant", "cpu-fake-quant", "cpu"]})
    fig = figures.accuracy_latency(df, source="cpu / cpu-fake-quant, CPU, batch 8")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    drawn = [line.get_xdata() for line in ax.lines if len(line.get_xdata()) == 2
             and line.get_linestyle() == "-"]
    # bars for a (0.9-1.1) and b (1.8-2.3); c has no spread; nothing reaches a p99
    assert sorted((float(x[0]), float(x[1])) for x in drawn) == [(0.9, 1.1), (1.8, 2.3)]
    assert lo <= 0.9 and hi >= 2.3 and hi < 40.0
    assert "cpu / cpu-fake-quant, CPU, batch 8" in ax.get_xlabel()


def test_point_labels_do_not_overlap(tmp_path: Path) -> None:
    df = with_derived(load_sweep(make_sweep(tmp_path / "s")))
    fig = figures.accuracy_latency(df)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [Text.get_window_extent(t, renderer) for t in _labels(fig)]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    ax_box = fig.axes[0].get_window_extent(renderer)
    assert all(ax_box.contains(b.x0, b.y0) and ax_box.contains(b.x1, b.y1) for b in boxes)


def test_lower_is_better_axis_and_empty_plot() -> None:
    df = pd.DataFrame({"config": ["a", "b"], "latency_ms_p50": [1.0, 2.0],
                       "latency_ms_p99": [1.2, 2.2], "accuracy": [5.0, 3.0], "metric": "cer",
                       "higher_is_better": False, "status": "ok",
                       "int8_layers": [3, 0], "fp16_layers": [0, 0]})
    fig = figures.accuracy_latency(df)
    assert fig.axes[0].get_ylabel() == "cer (lower is better)"
    assert "2 on the Pareto front" in fig.axes[0].get_title()
    none = figures.accuracy_latency(df.assign(status="failed"))
    assert "no config" in none.axes[0].texts[0].get_text()


def test_precision_map_60_layers_is_readable(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s", n_layers=60))
    fig = figures.precision_map(sweep.plans)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 60 and labels[0] == "/stem/conv/Conv"
    assert "…/reduce_expand/conv_reduce/Conv" in labels  # long names keep their tail
    assert all(len(s) <= 34 for s in labels)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(sweep.plans)
    assert 6.5 <= fig.get_figwidth() <= 13.4  # fits the report without scrolling
    grid = ax.images[0].get_array()
    row = list(sweep.plans).index("mixed-fp16-head")
    assert grid[row, 0] == 2 and grid[row, -2] == 1  # stem fp32, head Gemm fp16
    only = figures.precision_map(sweep.plans, quantizable_only=True)
    assert len(only.axes[0].get_xticklabels()) == len(figures.quantizable_layers(sweep.plans))


def test_sensitivity_chart(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s"))
    assert sweep.sensitivity is not None
    fig = figures.sensitivity(sweep.sensitivity, metric="top1", top=5, kept="fp32",
                              all_int8=75.61)
    sqnr, regained = fig.axes
    assert [t.get_text() for t in sqnr.get_yticklabels()][0] == "/stem/conv/Conv (Conv)"
    assert len(sqnr.patches) == 5
    # the ranking key: metric with the layer alone in FP32 minus the all-INT8 metric; for the
    # first layer sweep_dirs writes 75.6 + 2.5 / 5 = 76.1 -> 76.1 - 75.61 = 0.49
    assert regained.patches[0].get_width() == pytest.approx(76.1 - 75.61, abs=1e-6)
    assert regained.patches[0].get_width() > regained.patches[-1].get_width() > 0  # ranked
    assert "in FP32" in regained.get_xlabel() and "ranking key" in regained.get_xlabel()
    assert "top 5 of" in fig._suptitle.get_text()  # type: ignore[union-attr]
    flat = sweep.sensitivity.assign(metric_fp16_only=75.61)
    assert len(figures.sensitivity(flat, all_int8=75.61).axes) == 1  # no empty panel

def test_base64_png_and_svg() -> None:
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [0, 1])
    png = base64.b64decode(figures.to_base64(fig))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    small = base64.b64decode(figures.to_base64(fig, palette=32))
    assert small.startswith(b"\x89PNG") and len(small) < len(png)
    assert figures.to_base64(fig) == figures.to_base64(fig)  # deterministic
    svg = base64.b64decode(figures.to_base64(fig, "svg"))
    assert b"<svg" in svg
    assert figures.data_uri(fig).startswith("data:image/png;base64,")
    assert figures.data_uri(fig, "svg").startswith("data:image/svg+xml;base64,")


def test_shorten() -> None:
    assert figures.shorten("/a/b/Conv", 20) == "/a/b/Conv"
    assert figures.shorten("/backbone/stage1/block0/conv_pw/Conv", 26) == "…/block0/conv_pw/Conv"
    assert len(figures.shorten("x" * 80, 20)) == 20


def test_import_quantkit_and_cli_report_stay_light() -> None:
    code = ("import sys, quantkit, quantkit.cli.report; "
            "print(any(m in sys.modules for m in ('matplotlib', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
