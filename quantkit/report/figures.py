"""Matplotlib figures of a sweep: accuracy vs latency (Pareto), precision map, sensitivity.

Figures are plain :class:`matplotlib.figure.Figure` objects drawn on the Agg canvas; pyplot is
never used, so building them neither changes a notebook's backend nor keeps figures alive in
pyplot's registry. Notebooks display them directly; :func:`to_base64` / :func:`data_uri`
render them for the HTML report.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from quantkit.qdq.plan import PrecisionPlan
from quantkit.report.load import config_kind, pareto_front, quality_column

#: colours per precision (Okabe-Ito, readable with colour-vision deficiency)
PRECISION_COLORS = {"int8": "#009E73", "fp8": "#CC79A7", "fp16": "#56B4E9", "fp32": "#E69F00",
                    "other": "#BBBBBB"}
_KIND_MARKERS = {"fp32": "s", "fp16": "D", "int8": "o", "fp8": "^"}
_MAP_KINDS = ("int8", "fp16", "fp32", "fp8", "other")  # grid codes 0..4


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_base64(fig: Figure, fmt: str = "png", dpi: int = 110, palette: int = 0) -> str:
    """Render ``fig`` as PNG or SVG and return it base64-encoded (deterministic bytes).

    Args:
        fig: the figure.
        fmt: ``png`` or ``svg``.
        dpi: resolution of a PNG.
        palette: when > 0, reduce a PNG to this many colours (about 3-4 times smaller; the
            report uses 96, which keeps text antialiasing).
    """
    buf = io.BytesIO()
    if fmt == "svg":
        import matplotlib

        with matplotlib.rc_context({"svg.hashsalt": "quantkit", "svg.fonttype": "none"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
    elif fmt == "png":
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        if palette:
            from PIL import Image

            buf.seek(0)
            image = Image.open(buf).convert("RGB").quantize(colors=palette,
                                                            method=Image.Quantize.MEDIANCUT)
            buf = io.BytesIO()
            image.save(buf, format="png", optimize=True)
    else:
        raise ValueError(f"fmt must be png or svg, not {fmt!r}")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def data_uri(fig: Figure, fmt: str = "png", dpi: int = 110, palette: int = 0) -> str:
    """``data:image/png;base64,...`` (or SVG) for an ``<img src>`` that needs no file."""
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{to_base64(fig, fmt, dpi, palette)}"


def shorten(name: str, width: int = 32) -> str:
    """Shorten a long layer name, keeping its last path components: ``…/block3/conv1/Conv``.

    A last component longer than ``width`` is cut in the middle instead.
    """
    if len(name) <= width:
        return name
    parts = name.split("/")
    tail = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + 1 + len(tail) + 2 > width:
            break
        tail = f"{part}/{tail}"
    if len(tail) + 2 <= width and tail != name:
        return "…/" + tail
    half = (width - 1) // 2
    return name[:half] + "…" + name[-(width - 1 - half):]


# ---------------------------------------------------------------------------------------------
# accuracy vs latency


def _candidates() -> list[tuple[float, float, str, str]]:
    """Label offsets in points: close ones first, then farther ones (drawn with a leader)."""
    out = []
    for radius in (8.0, 18.0, 30.0, 44.0):
        for angle in (30, -30, 150, -150, 90, -90, 0, 180, 60, -60, 120, -120):
            dx = radius * np.cos(np.radians(angle))
            dy = radius * np.sin(np.radians(angle))
            ha = "left" if dx > 1 else "right" if dx < -1 else "center"
            va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
            out.append((float(dx), float(dy), ha, va))
    return out


def _distance(box: Bbox, point: Any) -> float:
    dx = max(box.x0 - point[0], 0.0, point[0] - box.x1)
    dy = max(box.y0 - point[1], 0.0, point[1] - box.y1)
    return float(np.hypot(dx, dy))


def _place_labels(fig: Figure, ax: Any, points: Sequence[tuple[float, float, str]],
                  lines: Sequence[tuple[float, float, float]] = ()) -> None:
    """Annotate each point at the closest offset whose box overlaps no label, marker or line.

    ``lines`` are horizontal segments ``(x0, x1, y)`` in data units (latency whiskers). Labels
    that had to move away from their point get a thin leader line.
    """
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw_without_rendering()
    # Freeze the constrained layout: labels placed from pixel positions must not move the axes.
    fig.set_layout_engine("none")
    axes_box = ax.get_window_extent(renderer)
    pts = [ax.transData.transform((x, y)) for x, y, _ in points]
    pad = 7 * fig.dpi / 72  # the Pareto ring's radius
    markers = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in pts]
    for x0, x1, y in lines:
        (a, b), (c, _) = ax.transData.transform([(x0, y), (x1, y)])
        markers.append(Bbox.from_extents(a + pad, b - 1.5, c, b + 1.5))
    labels: list[Bbox] = []
    style = {"fontsize": 8, "color": "#1d2329", "textcoords": "offset points"}
    for k, (x, y, text) in enumerate(points):
        others = labels + markers[:k] + markers[k + 1:]  # own marker: k < len(points)
        placed = False
        for dx, dy, ha, va in _candidates():
            leader = abs(dx) + abs(dy) > 12
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), ha=ha, va=va, **style,
                              arrowprops={"arrowstyle": "-", "color": "#5f6b76", "lw": 0.7,
                                          "shrinkA": 1, "shrinkB": 6} if leader else None)
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer).expanded(1.08, 1.25)
            inside = axes_box.contains(box.x0, box.y0) and axes_box.contains(box.x1, box.y1)
            own = _distance(box, pts[k])
            # a label without a leader must sit clearly nearer its own point than any other
            clear = leader or all(_distance(box, p) > 1.5 * own + 3
                                  for j, p in enumerate(pts) if j != k)
            if inside and clear and not any(box.overlaps(t) for t in others):
                labels.append(box)
                placed = True
                break
            ann.remove()
        if not placed:  # crowded: the first position, overlapping
            ann = ax.annotate(text, (x, y), xytext=(7, 4), ha="left", va="bottom", **style)
            labels.append(Text.get_window_extent(ann, renderer))


def _limits(ax: Any, xs: np.ndarray, ys: np.ndarray, log_x: bool | None) -> None:
    """Axis limits from the latencies drawn (p50 points and their noise bars).

    Equal values (every config at 100 %) get a readable range instead of a degenerate one.
    """
    if log_x is None:
        log_x = bool(xs.min() > 0 and xs.max() / xs.min() > 10)
    if log_x:
        ax.set_xscale("log")
        lo, hi = np.log10(xs.min()), np.log10(xs.max())
        pad = max((hi - lo) * 0.15, 0.05)
        ax.set_xlim(10 ** (lo - pad), 10 ** (hi + pad))
    else:
        pad = max((xs.max() - xs.min()) * 0.15, abs(xs.max()) * 0.05, 1e-6)
        ax.set_xlim(max(xs.min() - pad, 0.0) if xs.min() >= 0 else xs.min() - pad,
                    xs.max() + pad)
    span = ys.max() - ys.min()
    pad = span * 0.15 if span > 0 else max(abs(ys.max()) * 0.01, 0.5)
    ax.set_ylim(ys.min() - pad, ys.max() + pad)


def accuracy_latency(df: pd.DataFrame, *, y: str | None = None,
                     higher_is_better: bool | None = None, metric: str | None = None,
                     baseline: str | None = None, log_x: bool | None = None,
                     source: str | None = None) -> Figure:
    """Scatter of task metric against p50 latency, with the Pareto front marked.

    Failed configs (``status`` not ``ok``) and configs without a latency or metric are left out.
    A bar through a point spans the median's range over repeated timing rounds
    (``latency_ms_p50_min`` / ``_max``: run-to-run noise); p99 is not drawn (a tail 30x the
    median would squash every point into a corner), the report's table shows it.

    Args:
        df: ``Sweep.results`` (or any frame with config, latency_ms_p50 and the y column).
        y: the quality column (default: accuracy, else agreement, else sqnr_db).
        higher_is_better: direction of ``y`` (default: the ``higher_is_better`` column).
        metric: axis label for ``y`` (default: the ``metric`` column).
        baseline: config drawn as a dashed reference line (e.g. ``fp32``).
        log_x: log-scale latency axis (default: when latencies span more than 10x).
        source: where the latency comes from, for the axis label (``estimated, L4, batch 8``;
            default: the ``latency_source`` column's values).
    """
    y = y or quality_column(df)
    if higher_is_better is None:
        higher_is_better = bool(df["higher_is_better"].iloc[0]) if (
            y == "accuracy" and "higher_is_better" in df.columns and len(df)) else True
    if metric is None:
        names = [m for m in df.get("metric", pd.Series(dtype=str)) if isinstance(m, str) and m]
        metric = (names[0] if names else "accuracy") if y == "accuracy" else y
    if source is None:
        kinds = sorted({str(s) for s in df.get("latency_source", pd.Series(dtype=str))
                        if isinstance(s, str) and s})
        source = ", ".join(kinds) or "source not recorded"
    status = df["status"] if "status" in df.columns else pd.Series("ok", index=df.index)
    ok = df[(status == "ok") & np.isfinite(df["latency_ms_p50"].astype(float))
            & np.isfinite(df[y].astype(float))]
    front = pareto_front(ok, "latency_ms_p50", y, higher_is_better=higher_is_better)
    fig = _figure(9.6, 5.4)
    ax = fig.add_subplot()
    if ok.empty:
        ax.text(0.5, 0.5, "no config has both a latency and a metric", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
        ax.set_axis_off()
        return fig
    kinds = [config_kind(r) for _, r in ok.iterrows()]
    whiskers: list[tuple[float, float, float]] = []
    if {"latency_ms_p50_min", "latency_ms_p50_max"} <= set(ok.columns):
        for (_, r), kind in zip(ok.iterrows(), kinds, strict=True):
            lo, hi = float(r["latency_ms_p50_min"]), float(r["latency_ms_p50_max"])
            if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
                whiskers.append((lo, hi, r[y]))
                ax.plot([lo, hi], [r[y], r[y]], lw=2.2, color=PRECISION_COLORS[kind],
                        alpha=0.55, zorder=1, solid_capstyle="butt")
    for kind in ("fp32", "fp16", "int8", "fp8"):
        sel = np.array([k == kind for k in kinds])
        if sel.any():
            ax.scatter(ok["latency_ms_p50"][sel], ok[y][sel], s=42, zorder=3,
                       marker=_KIND_MARKERS[kind], color=PRECISION_COLORS[kind],
                       edgecolors="#333333", linewidths=0.6, label=kind.upper())
    fr = ok[front].sort_values("latency_ms_p50")
    ax.plot(fr["latency_ms_p50"], fr[y], ls="--", lw=1.2, color="#C0392B", zorder=2,
            drawstyle="steps-post" if len(fr) > 1 else "default")
    ax.scatter(fr["latency_ms_p50"], fr[y], s=170, facecolors="none", edgecolors="#C0392B",
               linewidths=1.6, zorder=4, label="Pareto front")
    if baseline is not None and (ok["config"] == baseline).any():
        ref = float(ok.loc[ok["config"] == baseline, y].iloc[0])
        ax.axhline(ref, color="#888888", lw=0.8, ls=":", zorder=0)
    xs = ok["latency_ms_p50"].to_numpy(dtype=float)
    if whiskers:  # the noise bars stay inside the axes (they are at most a few % wide)
        xs = np.concatenate([xs, [w[0] for w in whiskers], [w[1] for w in whiskers]])
    _limits(ax, xs, ok[y].to_numpy(dtype=float), log_x)
    better = "higher is better" if higher_is_better else "lower is better"
    stat = "latency" if source.startswith("estimated") else "latency p50"
    bars = "; bar: range of the median over timing rounds" if whiskers else ""
    ax.set_xlabel(f"{stat}, ms per batch ({source}); lower is better{bars}", fontsize=8)
    ax.set_ylabel(f"{metric} ({better})", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, lw=0.4, alpha=0.5)
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    ax.set_title(f"{metric} vs latency ({len(ok)} configs, {int(front.sum())} on the Pareto "
                 "front)", fontsize=9.5)
    order = list(fr.itertuples()) + [r for r in ok[~front].itertuples()]
    _place_labels(fig, ax, [(float(r.latency_ms_p50), float(getattr(r, y)), str(r.config))
                            for r in order], whiskers)
    return fig


# ---------------------------------------------------------------------------------------------
# per-layer precision map


def layer_order(plans: Mapping[str, PrecisionPlan]) -> list[str]:
    """All planned nodes in graph order (the largest plan first, then any extra nodes)."""
    seen: dict[str, None] = {}
    for plan in sorted(plans.values(), key=lambda p: -len(p.nodes)):
        for name in plan.nodes:
            seen.setdefault(name, None)
    return list(seen)


def quantizable_layers(plans: Mapping[str, PrecisionPlan]) -> list[str]:
    """Nodes that some plan did not leave at ``default_float`` for being non-quantizable."""
    keep = set()
    for plan in plans.values():
        for node in plan.nodes.values():
            if not node.reason.startswith("default_float (not quantizable)"):
                keep.add(node.name)
    return [n for n in layer_order(plans) if n in keep]


def precision_map(plans: Mapping[str, PrecisionPlan], *, layers: Sequence[str] | None = None,
                  quantizable_only: bool = False, label_width: int = 34) -> Figure:
    """One row of coloured cells per config: the precision of each layer (int8/fp16/fp32).

    Args:
        plans: ``{config: PrecisionPlan}`` (``Sweep.plans``).
        layers: the layers to show, in order (default: every planned node in graph order).
        quantizable_only: leave out nodes every plan keeps at default_float because TensorRT
            does not quantize them (Relu, Flatten, ...); their float type follows the plan.
        label_width: layer names longer than this are shortened in the middle.
    """
    names = list(layers) if layers is not None else (
        quantizable_layers(plans) if quantizable_only else layer_order(plans))
    configs = list(plans)
    codes = {k: i for i, k in enumerate(_MAP_KINDS[:-1])}
    grid = np.full((max(len(configs), 1), max(len(names), 1)), len(codes), dtype=int)
    for i, cfg in enumerate(configs):
        for j, name in enumerate(names):
            node = plans[cfg].nodes.get(name)
            if node is not None:
                grid[i, j] = codes.get(node.precision, len(codes))
    label_len = max([len(shorten(n, label_width)) for n in names] + [4])
    left = 0.075 * max(len(c) for c in configs or ["x"]) + 0.5
    # Fill the report's 13.3 in (1280 px) width; cells never under 0.12 in, where the 6-7 pt
    # labels still fit (about 100 layers); wider maps scroll in the report.
    cell = min(0.28, max(0.12, (13.2 - left) / max(len(names), 1)))
    width = max(left + cell * len(names) + 0.1, 6.5)
    height = 0.32 * len(configs) + 0.072 * label_len + 1.0
    fig = _figure(width, height)
    ax = fig.add_subplot()
    cmap = ListedColormap([PRECISION_COLORS[k] for k in _MAP_KINDS])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(_MAP_KINDS) - 0.5, aspect="auto",
              interpolation="nearest")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([shorten(n, label_width) for n in names], rotation=90,
                       fontsize=7 if cell >= 0.14 else 6, family="monospace")
    ax.set_yticks(range(len(configs)))
    ax.set_yticklabels(configs, fontsize=8)
    ax.set_xticks(np.arange(-0.5, len(names), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(configs), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=2)
    for side in ax.spines.values():
        side.set_visible(False)
    handles = [Patch(color=PRECISION_COLORS[k], label=k.upper() if k != "other" else "not in plan")
               for k in _MAP_KINDS if (grid == _MAP_KINDS.index(k)).any()]
    fig.legend(handles=handles, loc="outside upper left", ncols=5, fontsize=7.5, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# sensitivity


def sensitivity(df: pd.DataFrame, *, higher_is_better: bool = True, metric: str = "metric",
                top: int = 40, label_width: int = 40, kept: str = "fp16",
                all_int8: float | None = None, reference: float | None = None) -> Figure:
    """Ranked per-layer sensitivity, drawn by the keys it is ranked by.

    Layers are ranked (``rank``, 1 = most sensitive) by the metric regained when the layer alone
    leaves INT8 (runs in ``kept``, the plan's default_float), then by the lowest output SQNR
    with the layer alone in INT8. The left panel shows that SQNR; the right panel the regained
    metric (against the all-INT8 metric ``all_int8``; without it, the metric value itself).

    Args:
        df: ``Sweep.sensitivity`` (layer, op_type, sqnr_int8_only, metric_int8_only,
            sqnr_fp16_only, metric_fp16_only, rank; the ``fp16_only`` columns hold the
            probes that kept the layer in ``kept``).
        higher_is_better: direction of the metric.
        metric: the metric's name for the axis label.
        top: show the ``top`` most sensitive layers.
        label_width: layer names longer than this are shortened in the middle.
        kept: the float precision a layer left out of INT8 runs in (``fp16`` / ``fp32``).
        all_int8: the metric with every layer INT8 (autotune.json ``int8_accuracy``).
        reference: unused; kept for callers of the previous signature.
    """
    del reference
    data = df.sort_values("rank", na_position="last").head(top)
    labels = [f"{shorten(str(r.layer), label_width)} ({r.op_type})" for r in data.itertuples()]
    values = data["metric_fp16_only"].to_numpy(dtype=float)
    has_metric = bool(np.isfinite(values).any())
    note = ""
    k = kept.upper()
    if has_metric and all_int8 is not None and math.isfinite(all_int8):
        values = (values - all_int8) if higher_is_better else (all_int8 - values)
        mlabel = (f"{metric} regained with only this layer in {k}\n(vs all-INT8; higher = "
                  "more sensitive; the ranking key)")
        if not np.nan_to_num(values).any():  # an empty panel says less than a sentence
            has_metric = False
            note = f"; {metric} unchanged for every layer"
    else:
        mlabel = f"{metric} with only this layer in {k}\n(the ranking key)"
    height = 0.22 * len(data) + 1.4
    fig = _figure(10.0 if has_metric else 7.0, height)
    panels = fig.subplots(1, 2 if has_metric else 1, sharey=True, squeeze=False)[0]
    pos = np.arange(len(data))
    sqnr = data["sqnr_int8_only"].to_numpy(dtype=float)
    panels[0].barh(pos, np.nan_to_num(sqnr), color=PRECISION_COLORS["int8"], height=0.7)
    panels[0].set_xlabel("output SQNR dB, only this layer INT8\n(lower = more sensitive; "
                         "the tie-break)", fontsize=8)
    panels[0].set_yticks(pos)
    panels[0].set_yticklabels(labels, fontsize=7, family="monospace")
    panels[0].invert_yaxis()
    if has_metric:
        colors = [PRECISION_COLORS["fp32"] if v > 0 else PRECISION_COLORS["fp16"]
                  for v in np.nan_to_num(values)]
        panels[1].barh(pos, np.nan_to_num(values), color=colors, height=0.7)
        panels[1].axvline(0, color="#555555", lw=0.6)
        panels[1].set_xlabel(mlabel, fontsize=8)
    for ax in panels:
        ax.tick_params(axis="x", labelsize=7.5)
        ax.grid(True, axis="x", lw=0.4, alpha=0.5)
    shown = f"top {len(data)} of {len(df)}" if len(df) > len(data) else f"{len(df)}"
    fig.suptitle(f"per-layer sensitivity ({shown} layers, most sensitive first{note})",
                 fontsize=9.5)
    return fig


__all__ = ["PRECISION_COLORS", "accuracy_latency", "data_uri", "layer_order", "precision_map",
           "quantizable_layers", "sensitivity", "shorten", "to_base64"]
