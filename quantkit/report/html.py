"""The self-contained HTML report: inline CSS and base64 images, no script, no network.

The page opens from a file in any browser without network access: every image is a ``data:``
URI, the stylesheet is inline, and no text the sweep recorded (paths, errors, the recipe) can
become a link (``://`` is written as an entity, so not even a URL string stays in the file).
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from quantkit.report import breakdown, figures
from quantkit.report._style import CSS as _CSS
from quantkit.report.headline import finite as _finite
from quantkit.report.load import (
    Sweep,
    estimate_columns,
    load_sweep,
    quality_column,
    with_derived,
)
from quantkit.report.markdown import (
    DASH,
    Headline,
    fmt_bytes,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    fmt_signed,
    headline,
    headline_text,
    latency_cell,
    render_markdown,
    sqnr_sentence,
    uniform_target,
    verdict,
    warnings,
)
from quantkit.sweep.latency import estimate_column


def _e(value: Any) -> str:
    """Escape text for HTML; ``://`` becomes an entity so no URL string appears in the file."""
    return html.escape(str(value), quote=True).replace("://", ":&#47;&#47;")


def _img(fig: Any, alt: str, caption: str, *, dpi: int = 110) -> str:
    """An inline PNG shown at 96 px per figure inch; wider than the page, it scrolls."""
    width = int(fig.get_figwidth() * 96)
    src = figures.data_uri(fig, "png", dpi=dpi, palette=96)
    wide = width > 1300
    cls = ' class="wide"' if wide else ""
    body = f'<img src="{src}" alt="{_e(alt)}" width="{width}">'
    if wide:
        body = f'<div class="scroll">{body}</div>'
    return f"<figure{cls}>{body}<figcaption>{_e(caption)}</figcaption></figure>"


def _table(headers: list[tuple[str, bool]], rows: list[list[str]], cls: str = "") -> str:
    """Rows are already-escaped cells; headers are (text, numeric)."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>"
                   for h, num in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if num else f"<td>{c}</td>"
                         for c, (_, num) in zip(r, headers, strict=True)) + "</tr>"
        for r in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _kv(items: dict[str, Any]) -> str:
    return '<dl class="kv">' + "".join(
        f"<dt>{_e(k)}</dt><dd>{_e(v if v is not None else DASH)}</dd>"
        for k, v in items.items()) + "</dl>"


def _date(sweep: Sweep) -> str:
    stamp = sweep.environment.get("created_utc")
    if stamp:
        try:
            dt = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            return dt.strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return str(stamp)
    mtime = os.path.getmtime(sweep.directory / "results.csv")
    return datetime.fromtimestamp(mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cards(sweep: Sweep, df: pd.DataFrame, h: Headline) -> str:
    direction = "higher" if h.higher_is_better else "lower"
    c = h.choice
    if _finite(h.speedup):
        speed = ("speed-up vs FP32", fmt_ratio(h.speedup), h.measured_on)
    elif c.source.is_cpu:
        speed = ("speed-up vs FP32", "not compared", "CPU timings only (cpu / cpu-fake-quant), "
                 "not TensorRT")
    else:
        speed = ("speed-up vs FP32", DASH, h.measured_on)
    best = h.best or DASH
    note = f"{len(sweep.ok)} of {len(df)} configs ran"
    if c.ties:
        note += "; same latency within noise: " + ", ".join(c.ties)
    cards = [("headline config", best, note),
             (f"{h.metric} vs FP32", fmt_signed(h.delta),
              f"{verdict(h.delta, h.higher_is_better)}; {direction} is better"),
             speed,
             ("model size", fmt_ratio(h.size_ratio), "INT8 bytes / FP32 bytes"),
             ("TensorRT engine", "built" if h.engine_built else "not built", h.engine)]
    out = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
                  f'<div class="n">{_e(n)}</div></div>' for k, v, n in cards)
    note_html = (f'<p class="warn" id="latency-note"><strong>{_e(h.note)}</strong></p>'
                 if h.note else "")
    return (f'<p class="headline">{_e(headline_text(h, markdown=False))}</p>'
            f'<p class="sub" id="headline-rule">{_e(c.rule)}</p>{note_html}'
            f'<div class="cards">{out}</div>')


def _spread_cell(r: Any) -> str:
    lo, hi = getattr(r, "latency_ms_p50_min", None), getattr(r, "latency_ms_p50_max", None)
    if not (_finite(lo) and _finite(hi)):
        return DASH
    if str(r.latency_source) == "estimated":
        return "one estimate"
    rounds = getattr(r, "latency_repeats", None)
    text = f"{fmt_ms(lo)}–{fmt_ms(hi)}"
    return text + (f" ({int(float(rounds))} rounds)" if rounds is not None and _finite(rounds)
                   else "")


def _results_table(sweep: Sweep, df: pd.DataFrame, h: Headline) -> str:
    col = quality_column(df)
    metric = h.metric
    common = uniform_target(df)
    gpus = estimate_columns(df)
    primary = (estimate_column(h.choice.source.target)
               if h.choice.source.kind == "estimated" else None)
    extra_gpus = [g for g in gpus if g != primary]
    # without labels the metric is agreement itself: one column for it, not two
    show_metric = col != "agreement"
    lat_head = f"latency ms ({common}) (source)" if common else "latency (source)"
    ok = df[df["status"] == "ok"]
    # an estimate has neither a tail nor a run-to-run spread: no empty columns for them
    show_p99 = bool(ok["latency_ms_p99"].notna().any())
    show_spread = bool((ok["latency_source"] != "estimated").any())
    headers = [("config", False), ("method", False), ("status", False)] + (
        [(metric, True)] if show_metric else []) + [
               ("Δ vs FP32", True), ("agree\u00adment", True), ("SQNR dB", True),
               (lat_head, True)] + (
        [("p50 spread (min–max of rounds)", True)] if show_spread else []) + (
        [("p99 ms", True)] if show_p99 else []) + [
               ("through\u00adput /s", True), ("speed-up", True),
               ("ONNX Runtime CPU p50 ms (source)", True)] + [
               (f"estimated ms, {g.removeprefix('est_ms_')}", True) for g in extra_gpus] + [
               ("model size (ratio)", True), ("layers int8 / fp16 / fp32", True),
               ("engine", False)]
    head = "".join(f'<th class="num">{_e(t)}</th>' if n else f"<th>{_e(t)}</th>"
                   for t, n in headers)
    ties = set(h.choice.ties)
    rows = []
    for r in df.itertuples():
        mark = '<span class="pareto-mark" title="on the Pareto front">★</span>' if r.pareto else ""
        if r.config in ties:
            mark += ('<span class="tie-mark" title="same latency as the headline within '
                     'noise">≈</span>')
        cls = ["failed"] if r.status != "ok" else []
        cls += ["pareto"] if r.pareto else []
        cls += ["best"] if r.config == h.best else []
        cls += ["tie"] if r.config in ties else []
        first = (f'<td class="cfg"><span class="dot {_e(r.kind)}" title="{_e(r.kind)}"></span>'
                 f"{_e(r.config)}{mark}</td><td>{_e(_method_cell(r))}</td>")
        attrs = f' class="{" ".join(cls)}"' if cls else ""
        attrs += f' data-config="{_e(r.config)}"'
        if r.status != "ok":
            err = str(r.error).strip() or "no error message recorded"
            rows.append(f"<tr{attrs}>{first}<td>{_e(str(r.status).replace('_', ' '))}</td>"
                        f'<td class="err" colspan="{len(headers) - 3}">{_e(err)}</td></tr>')
            continue
        counts = " / ".join(fmt_num(getattr(r, c), 0) for c in
                            ("int8_layers", "fp16_layers", "fp32_layers"))
        if pd.notna(r.fp8_layers) and r.fp8_layers > 0:
            counts += f" ({fmt_num(r.fp8_layers, 0)} fp8)"
        engine = str(r.engine_backend).strip() if pd.notna(r.engine_bytes) else "not built"
        if pd.notna(r.engine_bytes):
            engine += f" ({fmt_bytes(r.engine_bytes)})"
        size = fmt_bytes(r.model_bytes)
        if pd.notna(r.size_ratio):
            size += f" ({fmt_ratio(r.size_ratio)})"
        cpu_src = "cpu-fake-quant" if r.kind in ("int8", "fp8") else "cpu"
        cpu = (f"{fmt_ms(r.cpu_latency_ms_p50)} ({cpu_src})"
               if _finite(r.cpu_latency_ms_p50) else DASH)
        cells = ([fmt_num(getattr(r, col))] if show_metric else []) + [
            fmt_signed(r.delta), fmt_pct(r.agreement), fmt_num(r.sqnr_db, 1),
            latency_cell(r, short=common is not None)] + (
            [_spread_cell(r)] if show_spread else []) + (
            [fmt_ms(r.latency_ms_p99)] if show_p99 else []) + [
            fmt_num(r.throughput, 0), fmt_ratio(r.speedup), cpu] + [
            fmt_ms(df.at[r.Index, g]) for g in extra_gpus] + [size, counts]
        row_cells = "".join(f'<td class="num">{_e(c)}</td>' for c in cells)
        rows.append(f"<tr{attrs}>{first}<td class=\"st-ok\">ok</td>{row_cells}"
                    f"<td>{_e(engine)}</td></tr>")
    note = ("Colour: precision kind (green INT8, pink FP8, blue FP16, orange FP32). Bold: the "
            "headline "
            f"config. ★ on the Pareto front of {metric} against p50 latency ({h.measured_on})"
            + ("; ≈ the same latency as the headline within noise" if ties else "")
            + f". Δ, speed-up and size ratio are against {h.baseline or 'no FP32 config'}. "
            "Every latency is per inference of one batch (the batch size is named); p99, "
            "where there is one (not for estimates), is shown only in this table. The ONNX "
            "Runtime CPU column runs INT8 configs as fake quantisation (cpu-fake-quant), "
            "never a TensorRT speed. p90, cosine and the engine build time are in "
            "results.csv. Failed configs are listed with their error and left out of the "
            "plot.")
    sq = sqnr_sentence(df)
    return (f'<div class="scroll"><table id="results-table"><thead><tr>{head}</tr></thead>'
            "<tbody>" + "".join(rows) + f'</tbody></table></div><p class="sub">{_e(note)} '
            f"{_e(sq)}</p>")


def _precision(sweep: Sweep) -> str:
    if not sweep.plans:
        return "<p>No <code>configs/*/plan.json</code> in the sweep: no precision map.</p>"
    n_all = len(figures.layer_order(sweep.plans))
    quant = n_all > 100
    fig = figures.precision_map(sweep.plans, quantizable_only=quant)
    shown = len(figures.quantizable_layers(sweep.plans)) if quant else n_all
    caption = (f"Planned precision of {shown} nodes in graph order, one row per config."
               + (f" {n_all - shown} nodes that TensorRT does not quantize (kept at each "
                  "plan's default_float) are left out." if quant else ""))
    rows = [[_e(c), _e(p.default), _e(p.default_float),
             *(_e(p.counts().get(k, 0)) for k in ("int8", "fp8", "fp16", "fp32"))]
            for c, p in sweep.plans.items()]
    table = _table([("config", False), ("default", False), ("default_float", False),
                    ("int8 nodes", True), ("fp8 nodes", True), ("fp16 nodes", True),
                    ("fp32 nodes", True)], rows)
    return _img(fig, "per-layer precision map", caption) + table


def _time_breakdown(sweep: Sweep, h: Headline) -> str:
    """Where the time goes: the primary GPU's estimate per config, by precision and kernel."""
    data = breakdown.primary_estimates(sweep, h.choice.source)
    if not data:
        return ""
    gpu = next(iter(data.values()))
    label = str(gpu.get("label") or f"estimated, {gpu.get('gpu')}")
    fig = breakdown.by_precision(data, label)
    tables = []
    for config, est in data.items():
        rows = [[_e(k["name"]), _e(k["precision"]), _e(fmt_ms(k["ms"])), _e(share),
                 _e(", ".join(k.get("onnx_layers") or []) or DASH)]
                for k, share in breakdown.top_kernels(est)]
        tables.append(f"<details><summary>{_e(config)}: {_e(fmt_ms(est['latency_ms']))} ms, "
                      f"top {len(rows)} kernels</summary>"
                      + _table([("kernel", False), ("precision", False), ("ms", True),
                                ("share", True), ("ONNX nodes", False)], rows) + "</details>")
    return ("<h2 id=\"time\">Where the time goes (estimate)</h2>"
            + _img(fig, "estimated time by precision", f"Estimated engine time per config by "
                   f"kernel precision ({label}); from the kernels TensorRT-RTX compiled for "
                   "each config, each costed on the GPU's roofline plus a launch cost. A "
                   "latency model, not a measurement.") + "".join(tables))


def _sensitivity(sweep: Sweep, df: pd.DataFrame, h: Headline) -> str:
    sens = sweep.sensitivity
    if sens is None:
        return ""
    at = sweep.autotune or {}
    kept = str(at.get("kept_precision") or "fp16")
    all_int8 = at.get("int8_accuracy") if h.metric == sweep.metric else None
    fig = figures.sensitivity(sens, higher_is_better=h.higher_is_better, metric=h.metric,
                              kept=kept, all_int8=float(all_int8) if all_int8 is not None
                              and _finite(all_int8) else None)
    rows = [[_e(r.rank if pd.notna(r.rank) else DASH), _e(r.layer), _e(r.op_type),
             _e(fmt_num(r.sqnr_int8_only, 1)), _e(fmt_num(r.metric_int8_only)),
             _e(fmt_num(r.sqnr_fp16_only, 1)), _e(fmt_num(r.metric_fp16_only))]
            for r in sens.head(15).itertuples()]
    k = kept.upper()
    table = _table([("rank", True), ("layer", False), ("op", False), ("SQNR int8-only", True),
                    (f"{h.metric} int8-only", True), (f"SQNR {kept}-only", True),
                    (f"{h.metric} {kept}-only", True)], rows)
    return ("<h2 id=\"sensitivity\">Per-layer sensitivity</h2>"
            + _img(fig, "per-layer sensitivity", f"int8-only: only this layer is INT8, the rest "
                   f"float; {kept}-only: only this layer is left {k} (the plan's "
                   f"default_float), the rest INT8. Ranked by the {h.metric} regained with the "
                   f"layer alone in {k}, then by the lowest int8-only SQNR (the csv columns "
                   f"*_fp16_only hold the {kept}-only probes).")
            + f"<h3>Most sensitive layers (top {len(rows)} of {len(sens)})</h3>" + table)


def _autotune(sweep: Sweep) -> str:
    at = sweep.autotune
    if at is None:
        return ""
    kept = at.get("kept") or []
    precision = str(at.get("kept_precision") or "fp16").upper()
    items = {k: at.get(k) for k in ("target_drop", "fp32_accuracy", "int8_accuracy",
                                    "final_accuracy", "reached", "evaluations")
             if at.get(k) is not None}
    items[f"layers kept {precision}"] = (f"{len(kept)}: " + ", ".join(map(str, kept))
                                         if kept else "none")
    out = "<h2 id=\"autotune\">Autotune</h2>" + _kv(items)
    steps = [s for s in at.get("steps") or [] if isinstance(s, dict)]
    if steps:
        keys = list(dict.fromkeys(k for s in steps for k in s))
        rows = [[_e(s.get(k, "")) if not isinstance(s.get(k), float) else _e(fmt_num(s[k], 3))
                 for k in keys] for s in steps[:50]]
        out += "<h3>Search steps</h3>" + _table([(k, False) for k in keys], rows)
    tiers = at.get("tiers")
    if isinstance(tiers, dict) and tiers.get("layers"):
        out += (f"<h3>Precision tiers int8 &rarr; fp8 &rarr; float</h3><p>FP8 tier "
                f"{'on' if tiers.get('fp8_target') else 'off'}: "
                f"{_e(tiers.get('fp8_target_why', ''))}; final accuracy "
                f"{_e(fmt_num(tiers.get('final_accuracy'), 3))}.</p>"
                + _table([("layer", False), ("op", False), ("tier", False), ("why", False)],
                         [[_e(t.get("layer", "")), _e(t.get("op_type", "")),
                           _e(t.get("tier", "")), _e(t.get("reason", ""))]
                          for t in tiers["layers"] if isinstance(t, dict)]))
    return out


def _calibration(sweep: Sweep) -> str:
    rows = []
    for config, doc in sweep.config_results.items():
        cal = doc.get("calibration")
        if isinstance(cal, dict):
            settings = cal.get("settings") or {}
            text = ", ".join(f"{k}={v}" for k, v in settings.items()) if isinstance(
                settings, dict) else str(settings)
            notes = cal.get("warnings") or []
            rows.append([_e(config), _e(cal.get("method", DASH)),
                         _e(cal.get("num_samples", DASH)), _e(text or DASH),
                         _e(" ".join(str(n) for n in notes) if isinstance(notes, list)
                            else str(notes)) or "none"])
    if not rows:
        return "<p>No config recorded calibration settings (no INT8 config ran).</p>"
    return _table([("config", False), ("method", False), ("samples", True),
                   ("settings", False), ("warnings", False)], rows)


def _engines(sweep: Sweep) -> str:
    if not sweep.engines:
        return "<p>No engine sidecar (<code>configs/*/engine.json</code>): no engine was built.</p>"
    out = []
    for config, eng in sweep.engines.items():
        lay = eng.layers
        counts = lay["precision"].value_counts().to_dict() if len(lay) else {}
        plan_n = int(lay["plan_precision"].notna().sum()) if len(lay) else 0
        eng_n = int(lay["engine_precision"].notna().sum()) if len(lay) else 0
        summary = (f"{eng.backend or 'engine'} {eng.backend_version}: {len(lay)} layers ("
                   + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                   + f"); {plan_n} checked against the plan, {eng_n} against the engine's "
                   f"kernels; {len(eng.disagreements)} disagreement"
                   f"{'' if len(eng.disagreements) == 1 else 's'}.")
        out.append(f"<h3>{_e(config)}</h3><p>{_e(summary)}</p>")
        if eng.disagreements:
            rows = [[_e(d.get("layer", DASH)), _e(d.get("kind", DASH)), _e(d.get("plan", DASH)),
                     _e(d.get("network", DASH)), _e(d.get("engine", DASH)),
                     _e(d.get("message", ""))] for d in eng.disagreements]
            out.append(_table([("layer", False), ("kind", False), ("plan", False),
                               ("parsed network", False), ("engine", False),
                               ("message", False)], rows))
    return "".join(out)


def _environment(sweep: Sweep, df: pd.DataFrame) -> str:
    env = dict(sweep.environment)
    where = sorted({f"{b} / {d}" for b, d in zip(df["backend"], df["device"], strict=True)
                    if str(b).strip()})
    env.setdefault("backend", ", ".join(where) or None)
    env.setdefault("tensorrt_rtx", None)
    items = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in env.items()}
    items["tensorrt_rtx"] = items["tensorrt_rtx"] or "not installed (pip install 'quantkit[rtx]')"
    out = _kv(items)
    if sweep.recipe:
        out += f"<details><summary>recipe.yaml</summary><pre>{_e(sweep.recipe)}</pre></details>"
    return out


def render_html(sweep: Sweep, tolerance: float | None = None) -> str:
    """The whole report as one self-contained HTML string (see the module docstring).

    Args:
        sweep: a loaded sweep.
        tolerance: metric points of the headline rule (default: the recipe's, else 0.5).
    """
    from quantkit import __version__

    df = with_derived(sweep)
    h = headline(sweep, df, tolerance)
    notes = warnings(sweep)
    warn = ("<div class=\"warn\" id=\"warnings\"><strong>Warnings</strong><ul>"
            + "".join(f"<li>{_e(n.replace('`', ''))}</li>" for n in notes) + "</ul></div>"
            if notes else "")
    title = f"quantkit report: {sweep.model_name}"
    plotted = df[df["ranked"]]
    fig = figures.accuracy_latency(plotted, y=quality_column(df),
                                   higher_is_better=h.higher_is_better, metric=h.metric,
                                   baseline=h.baseline, source=h.measured_on)
    left_out = sorted(set(df.loc[(df["status"] == "ok") & ~df["ranked"], "config"]))
    plot = _img(fig, f"{h.metric} vs latency", f"Each point is a config that ran, at its p50 "
                f"latency ({h.measured_on}); the red rings and dashed steps mark the Pareto "
                f"front; the dotted line is {h.baseline or 'FP32'}; a bar through a point spans "
                "the median's range over the repeated timing rounds (run-to-run noise). p99 is "
                "in the results table."
                + (f" Not plotted (no latency of this source): {', '.join(left_out)}."
                   if left_out else "")
                + (" " + h.note if h.note else ""))
    parts = [
        f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(_date(sweep))} · sweep "
        f"<span class=\"mono\">{_e(sweep.directory.resolve().name)}</span> · {len(df)} configs"
        f" · metric {_e(h.metric)} ({'higher' if h.higher_is_better else 'lower'} is better)"
        "</p>",
        _cards(sweep, df, h), warn,
        f"<h2 id=\"pareto\">{_e(h.metric)} vs latency</h2>", plot,
        "<h2 id=\"results\">Results</h2>", _results_table(sweep, df, h),
        _time_breakdown(sweep, h),
        "<h2 id=\"precision\">Per-layer precision</h2>", _precision(sweep),
        _sensitivity(sweep, df, h), _autotune(sweep),
        "<h2 id=\"calibration\">Calibration</h2>", _calibration(sweep),
        "<h2 id=\"engine\">Engine: plan vs parsed network vs engine</h2>", _engines(sweep),
        "<h2 id=\"environment\">Environment</h2>", _environment(sweep, df),
        f"<footer>Generated by quantkit {_e(__version__)} (quantkit report). Self-contained: "
        "no scripts, no external files.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)} ({_e(_date(sweep))})</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def write_report(directory: str | os.PathLike[str] | Sweep,
                 output: str | os.PathLike[str] | None = None,
                 summary: str | os.PathLike[str] | None = None,
                 tolerance: float | None = None) -> Path:
    """Write ``report.html`` and ``summary.md`` for a sweep directory.

    Both documents are rendered in memory first and then written atomically, so a failure
    leaves no partial file behind.

    Args:
        directory: the sweep directory (or a :class:`Sweep` already loaded from it).
        output: the HTML file (default ``DIR/report.html``).
        summary: the Markdown summary (default ``summary.md`` next to the HTML file).
        tolerance: metric points of the headline rule (default: the recipe's
            ``report.tolerance``, else 0.5).

    Returns:
        The path of the HTML report.

    Raises:
        InputError: the sweep directory is unusable (see :func:`load_sweep`) or an output
            folder does not exist.
    """
    from quantkit._io import check_output_path, write_text_atomic

    sweep = directory if isinstance(directory, Sweep) else load_sweep(directory)
    out = Path(output) if output is not None else sweep.directory / "report.html"
    md = Path(summary) if summary is not None else out.parent / "summary.md"
    check_output_path(out, flag="-o")
    check_output_path(md, flag="--summary")
    page = render_html(sweep, tolerance)
    text = render_markdown(sweep, tolerance=tolerance)
    write_text_atomic(out, page)
    write_text_atomic(md, text)
    return out


__all__ = ["render_html", "write_report"]


def _method_cell(r: Any) -> str:
    """Calibration method, plus the rescue transforms applied before quantizing (if any)."""
    method = str(r.method or DASH)
    transforms = str(getattr(r, "transforms", "") or "")
    return f"{method} + {transforms.replace('+', ' + ')}" if transforms else method
