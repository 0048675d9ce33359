"""The headline of a sweep, its Markdown summary for a pull request, and number formats.

The headline is chosen by the rule of :mod:`quantkit.report.headline` (the fastest config with
INT8 layers among those within a tolerance of the best metric) and compared with the FP32 config:
metric difference, speed-up (only between TensorRT latencies, measured or estimated: never of
CPU timings), size ratio, and how the engine was built. Every latency shown names its source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from quantkit.evaluate.latency import latency_label
from quantkit.report.headline import Choice, choose, latency_note, recipe_tolerance
from quantkit.report.load import Sweep, baseline_config, quality_column, with_derived

DASH = "—"


@dataclass
class Headline:
    """The headline config against FP32, and how the engine was built.

    Attributes:
        metric: the task metric (or ``agreement`` when the sweep had no labels).
        higher_is_better: direction of the metric.
        baseline: the FP32 config, or ``None``.
        best: the headline config (:func:`quantkit.report.headline.choose`), or ``None``.
        delta: best minus FP32 in metric units (NaN when unknown).
        speedup: FP32 p50 / best p50 of the ranking latency (NaN for CPU-only latency).
        size_ratio: best model bytes / FP32 model bytes.
        measured_on: the ranking latency in words (``estimated, H100-SXM, batch 8``).
        engine: one sentence on the TensorRT / TensorRT-RTX engine build.
        engine_built: whether any config has an engine.
        choice: the rule's outcome (ties, tolerance, the rule sentence).
        note: the sentence a CPU-only latency needs, else empty.
    """

    metric: str
    higher_is_better: bool
    baseline: str | None
    best: str | None
    delta: float
    speedup: float
    size_ratio: float
    measured_on: str
    engine: str
    engine_built: bool
    choice: Choice = field(default_factory=lambda: Choice(None))
    note: str = ""


def _engine_sentence(sweep: Sweep) -> tuple[str, bool]:
    df = sweep.results
    backends = df["engine_backend"].astype(str).str.strip()
    built = df[(df["status"] == "ok") & (df["engine_bytes"].notna()
                                         | df["config"].isin(list(sweep.engines)))]
    if not built.empty:
        engine = next((sweep.engines[c] for c in built["config"] if c in sweep.engines), None)
        label = engine.backend if engine else str(built["engine_backend"].iloc[0])
        version = engine.backend_version if engine else " ".join(label.split()[1:2])
        name = "TensorRT-RTX" if "rtx" in label.lower() else "TensorRT"
        return (f"built with {name}{' ' + version if version else ''} for {len(built)} of "
                f"{len(df)} configs", True)
    failed = int(df["status"].eq("build_failed").sum())
    if failed:
        return f"build failed for {failed} config{'s' if failed > 1 else ''}", False
    missing = backends[backends.str.contains("not installed")]
    if not missing.empty and "rtx" not in missing.iloc[0]:
        return "not built: install quantkit[tensorrt]", False
    rtx = sweep.environment.get("tensorrt_rtx")
    if rtx and missing.empty:
        return f"not built (TensorRT-RTX {rtx} is installed; the recipe asks for no build)", False
    return "not built: install quantkit[rtx]", False


def headline(sweep: Sweep, derived: pd.DataFrame | None = None,
             tolerance: float | None = None) -> Headline:
    """The headline numbers of a sweep (see :class:`Headline`).

    Args:
        sweep: a loaded sweep.
        derived: :func:`~quantkit.report.load.with_derived` of it (computed when omitted).
        tolerance: metric points of the headline rule (default: the recipe's
            ``report.tolerance``, else 0.5).
    """
    df = with_derived(sweep) if derived is None else derived
    col = quality_column(df)
    hib = sweep.higher_is_better if col == "accuracy" else True
    metric = sweep.metric if col == "accuracy" else col
    base = baseline_config(df)
    tol = recipe_tolerance(sweep.recipe) if tolerance is None else tolerance
    choice = choose(df, tolerance=tol, column=col, higher_is_better=hib, metric=metric)
    best = choice.best
    nan = float("nan")
    shown = best or choice.closest
    row = df[df["config"] == shown].iloc[0] if shown is not None else None
    delta = nan
    if row is not None and base is not None:
        ref = df[df["config"] == base].iloc[0]
        delta = float(row[col] - ref[col])
    has_qdq = bool((df["latency_source"] == "cpu-fake-quant").any())
    engine, built = _engine_sentence(sweep)
    return Headline(metric, hib, base, best, delta,
                    float(row["speedup"]) if row is not None and best is not None else nan,
                    float(row["size_ratio"]) if row is not None else nan,
                    choice.source.label(fake_quant=has_qdq) if choice.source.kind != "none"
                    else "no latency", engine, built, choice, latency_note(choice))


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_num(value: Any, digits: int = 2) -> str:
    """``84.375`` -> ``84.38``; infinity (SQNR of an exact match) -> ``∞``; NaN/None -> ``—``."""
    if _finite(value):
        return f"{float(value):,.{digits}f}"
    if isinstance(value, (int, float)) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return DASH


def fmt_signed(value: Any, digits: int = 2) -> str:
    """``-0.391`` -> ``−0.39`` (a real minus sign), ``+0.00``; NaN -> ``—``."""
    if not _finite(value):
        return DASH
    text = f"{float(value):+.{digits}f}"
    return text.replace("-", "\u2212")


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A percentage column (agreement): ``99.22`` -> ``99.2%``."""
    return f"{float(value):.{digits}f}%" if _finite(value) else DASH


def fmt_ratio(value: Any, digits: int = 2) -> str:
    """``1.4234`` -> ``1.42×``."""
    return f"{float(value):.{digits}f}×" if _finite(value) else DASH


def fmt_ms(value: Any) -> str:
    """Milliseconds with 3 significant digits (``0.0421``, ``1.23``, ``123``)."""
    if not _finite(value):
        return DASH
    v = float(value)
    return f"{v:#.3g}" if v < 100 else f"{v:,.0f}"


def fmt_bytes(value: Any) -> str:
    """``123456`` -> ``120.6 KiB``."""
    if not _finite(value):
        return DASH
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def verdict(delta: float, higher_is_better: bool) -> str:
    """``better`` / ``worse`` / ``same`` for a metric difference."""
    if not _finite(delta) or delta == 0:
        return "same"
    return "better" if (delta > 0) == higher_is_better else "worse"


def headline_text(h: Headline, markdown: bool = True) -> str:
    """One sentence: the headline config against FP32, and the engine build."""
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    c = h.choice
    if h.best is None and c.closest is None:
        text = "No INT8 config ran successfully."
    elif h.best is None:
        text = (f"No INT8 config is within {c.tolerance:g} {h.metric} points of the best "
                f"({code(c.reference or '?')}: {fmt_num(c.reference_value)}); the most accurate "
                f"INT8 config, {code(c.closest or '?')}, is {fmt_signed(h.delta)} vs "
                f"{code(h.baseline or 'FP32')}.")
    elif h.baseline is None:
        text = (f"Headline config: {code(h.best)}. No FP32 config ran, so there is no "
                "reference to compare with.")
    else:
        text = (f"Headline config: {code(h.best)}: {h.metric} {fmt_signed(h.delta)} vs "
                f"{code(h.baseline)} ({verdict(h.delta, h.higher_is_better)})")
        if _finite(h.speedup):
            speed = fmt_ratio(h.speedup if h.speedup >= 1 else 1 / h.speedup)
            text += (f", {speed} {'faster' if h.speedup >= 1 else 'slower'} "
                     f"({h.measured_on})")
        text += f", {fmt_ratio(h.size_ratio)} the model size"
        if c.ties:
            text += ("; the same latency within noise: " + ", ".join(code(t) for t in c.ties))
        text += "."
    return f"{text} TensorRT engine: {h.engine}."


def latency_cell(row: Any, value: Any = None, short: bool = False) -> str:
    """A primary latency with its source: ``0.0521 ms (estimated, H100-SXM, batch 8)``.

    ``short`` names the source only (``0.0521 (estimated)``), for tables whose header or note
    names the target and batch size.
    """
    v = getattr(row, "latency_ms_p50", None) if value is None else value
    if not _finite(v):
        return DASH
    if short:
        return f"{fmt_ms(v)} ({getattr(row, 'latency_source', '') or 'unknown source'})"
    return f"{fmt_ms(v)} ms ({row_label(row)})"


def uniform_target(df: pd.DataFrame) -> str | None:
    """``H100-SXM, batch 8`` when every timed row shares target and batch, else ``None``."""
    ok = df[(df["status"] == "ok") & df["latency_ms_p50"].notna()]
    if ok.empty:
        return None
    targets = set(ok["latency_target"].astype(str))
    batches = set(ok.get("latency_batch", pd.Series(dtype=float)).astype(float).dropna())
    if len(targets) != 1 or len(batches) > 1:
        return None
    batch = next(iter(batches), float("nan"))
    return str(next(iter(targets))) + (f", batch {int(batch)}" if _finite(batch) else "")


def row_label(row: Any) -> str:
    """A row's primary latency source in words (``estimated, H100-SXM, batch 8``)."""
    batch = getattr(row, "latency_batch", None)
    return latency_label(str(getattr(row, "latency_source", "") or "unknown source"),
                         str(getattr(row, "latency_target", "") or "") or None,
                         int(float(batch)) if batch is not None and _finite(batch) else None)


def warnings(sweep: Sweep) -> list[str]:
    """Failed configs, calibration warnings, engine disagreements and load notes (Markdown)."""
    out = []
    for row in sweep.failed.itertuples():
        err = " ".join(str(row.error).split()) or "no error message recorded"
        if len(err) > 240:
            err = err[:237] + "..."
        out.append(f"`{row.config}` {str(row.status).replace('_', ' ')}: {err}")
    seen: dict[str, list[str]] = {}
    for row in sweep.ok.itertuples():
        text = " ".join(str(getattr(row, "calibration_warnings", "") or "").split())
        if text:
            seen.setdefault(text, []).append(str(row.config))
    for text, configs in seen.items():
        out.append(f"calibration of {', '.join(f'`{c}`' for c in configs)}: {text}")
    for config, eng in sweep.engines.items():
        if eng.disagreements:
            first = eng.disagreements[0].get("message") or str(eng.disagreements[0])
            n = len(eng.disagreements)
            out.append(f"`{config}` engine: {n} disagreement{'s' if n > 1 else ''} between the "
                       f"plan, the parsed network and the engine (first: {first})")
    out.extend(sweep.warnings)
    return out


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sqnr_sentence(df: pd.DataFrame) -> str:
    """Which tensor SQNR, cosine and agreement compare (``sqnr_tensor``), or empty."""
    names = sorted({str(t) for t in df.get("sqnr_tensor", pd.Series(dtype=str))
                    if isinstance(t, str) and t.strip()})
    if not names:
        return ""
    return (f"SQNR, cosine and agreement compare the tensor {', '.join(names)} with FP32's "
            "(the logits when the scored output is a Softmax).")


def render_markdown(sweep: Sweep, derived: pd.DataFrame | None = None,
                    tolerance: float | None = None) -> str:
    """The PR-comment summary: headline, its rule, a short results table and warnings.

    Args:
        sweep: a loaded sweep.
        derived: :func:`~quantkit.report.load.with_derived` of it (computed when omitted).
        tolerance: metric points of the headline rule (default: the recipe's, else 0.5).
    """
    df = with_derived(sweep) if derived is None else derived
    h = headline(sweep, df, tolerance)
    col = quality_column(df)
    lines = [f"### quantkit report: {sweep.model_name}", "", headline_text(h), "",
             h.choice.rule]
    if h.note:
        lines += ["", f"**{h.note}**"]
    lines.append("")
    # without labels the metric is agreement itself: show SQNR next to it instead
    third = "SQNR dB" if col == "agreement" else "agreement"
    common = uniform_target(df)
    lat_head = f"latency ms ({common}; source)" if common else "latency (source)"
    lines += [f"| config | {h.metric} | Δ vs FP32 | {third} | {_esc(lat_head)} | speed-up "
              "| size |", "|:--|--:|--:|--:|--:|--:|--:|"]
    ties = set(h.choice.ties)
    for r in df.itertuples():
        name = f"**{r.config}**" if r.config == h.best else str(r.config)
        name += " ★" if r.pareto else ""
        name += " ≈" if r.config in ties else ""
        if r.status != "ok":
            lines.append(f"| {_esc(name)} | {str(r.status).replace('_', ' ')} | | | | | |")
            continue
        extra = fmt_num(r.sqnr_db, 1) if col == "agreement" else fmt_pct(r.agreement)
        lines.append(f"| {_esc(name)} | {fmt_num(getattr(r, col))} | {fmt_signed(r.delta)} | "
                     f"{extra} | {_esc(latency_cell(r, short=common is not None))} | "
                     f"{fmt_ratio(r.speedup)} | {fmt_bytes(r.model_bytes)} |")
    direction = "higher" if h.higher_is_better else "lower"
    notes = [f"**bold**: headline config; ★ on the {h.metric}–latency Pareto front "
             f"({h.measured_on})"
             + ("; ≈ the same latency as the headline within noise" if ties else "")
             + f"; {h.metric}: {direction} is better; Δ and speed-up against "
             f"`{h.baseline or 'n/a'}`"
             + ("" if not h.choice.source.is_cpu else "; no speed-up: CPU timings only") + "."]
    sq = sqnr_sentence(df)
    if sq:
        notes.append(sq)
    lines += ["", " ".join(notes)]
    warn = warnings(sweep)
    if warn:
        lines += ["", "**Warnings**", ""] + [f"- ⚠️ {_esc(n)}" for n in warn]
    return "\n".join(lines) + "\n"


__all__ = ["Headline", "fmt_bytes", "fmt_ms", "fmt_num", "fmt_pct", "fmt_ratio", "fmt_signed",
           "headline", "headline_text", "latency_cell", "render_markdown", "row_label",
           "sqnr_sentence", "uniform_target", "verdict", "warnings"]
