"""The headline of a sweep, its Markdown summary for a pull request, and number formats.

The headline compares the best INT8 config (best task metric; ties go to the higher agreement,
then the higher SQNR, then the lower p50 latency) with the FP32 config: metric difference,
latency speed-up, size ratio, and how the engine was built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quantkit.report.load import Sweep, baseline_config, quality_column, with_derived

DASH = "—"


@dataclass
class Headline:
    """The best INT8 config against FP32, and how the engine was built.

    Attributes:
        metric: the task metric (or ``agreement`` when the sweep had no labels).
        higher_is_better: direction of the metric.
        baseline: the FP32 config, or ``None``.
        best: the best INT8 config (metric, then agreement, SQNR, p50 latency), or ``None``.
        delta: best minus FP32 in metric units (NaN when unknown).
        speedup: FP32 p50 latency / best p50 latency.
        size_ratio: best model bytes / FP32 model bytes.
        measured_on: backend and device the latency was measured on.
        engine: one sentence on the TensorRT / TensorRT-RTX engine build.
        engine_built: whether any config has an engine.
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


def headline(sweep: Sweep, derived: pd.DataFrame | None = None) -> Headline:
    """The headline numbers of a sweep (see :class:`Headline`)."""
    df = with_derived(sweep) if derived is None else derived
    col = quality_column(df)
    hib = sweep.higher_is_better if col == "accuracy" else True
    metric = sweep.metric if col == "accuracy" else col
    base = baseline_config(df)
    cands = df[(df["status"] == "ok") & (df["kind"] == "int8")]
    best = None
    if not cands.empty:
        # best metric first; ties (e.g. every config at 100 %) go to the most faithful config
        # (agreement, then SQNR), then to the fastest
        sign = 1.0 if hib else -1.0
        ranked = cands.assign(
            _q=(sign * cands[col]).fillna(-np.inf), _a=cands["agreement"].fillna(-np.inf),
            _s=cands["sqnr_db"].fillna(-np.inf), _l=cands["latency_ms_p50"].fillna(np.inf),
        ).sort_values(["_q", "_a", "_s", "_l"], ascending=[False, False, False, True])
        best = str(ranked["config"].iloc[0])
    nan = float("nan")
    row = df[df["config"] == best].iloc[0] if best is not None else None
    delta = nan
    if row is not None and base is not None:
        ref = df[df["config"] == base].iloc[0]
        delta = float(row[col] - ref[col])
    ok = df[df["status"] == "ok"]
    where = sorted({f"{b} on {d}" for b, d in zip(ok["backend"], ok["device"], strict=True)
                    if str(b).strip()})
    engine, built = _engine_sentence(sweep)
    return Headline(metric, hib, base, best, delta,
                    float(row["speedup"]) if row is not None else nan,
                    float(row["size_ratio"]) if row is not None else nan,
                    ", ".join(where) or "unknown backend", engine, built)


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
    """One sentence: the best INT8 config against FP32, and the engine build."""
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    if h.best is None:
        text = "No INT8 config ran successfully."
    elif h.baseline is None:
        text = (f"Best INT8 config: {code(h.best)}. No FP32 config ran, so there is no "
                "reference to compare with.")
    else:
        speed = fmt_ratio(h.speedup)
        speed_word = "faster" if _finite(h.speedup) and h.speedup >= 1 else "slower"
        if _finite(h.speedup) and h.speedup < 1:
            speed = fmt_ratio(1 / h.speedup)
        text = (f"Best INT8 config: {code(h.best)}: {h.metric} {fmt_signed(h.delta)} vs "
                f"{code(h.baseline)} ({verdict(h.delta, h.higher_is_better)}), {speed} "
                f"{speed_word} at p50 ({h.measured_on}), {fmt_ratio(h.size_ratio)} the model "
                "size.")
    return f"{text} TensorRT engine: {h.engine}."


def warnings(sweep: Sweep) -> list[str]:
    """Failed configs, engine disagreements and load notes, one line each (Markdown)."""
    out = []
    for row in sweep.failed.itertuples():
        err = " ".join(str(row.error).split()) or "no error message recorded"
        if len(err) > 240:
            err = err[:237] + "..."
        out.append(f"`{row.config}` {str(row.status).replace('_', ' ')}: {err}")
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


def render_markdown(sweep: Sweep, derived: pd.DataFrame | None = None) -> str:
    """The PR-comment summary: headline, a short results table and warnings.

    Args:
        sweep: a loaded sweep.
        derived: :func:`~quantkit.report.load.with_derived` of it (computed when omitted).
    """
    df = with_derived(sweep) if derived is None else derived
    h = headline(sweep, df)
    col = quality_column(df)
    lines = [f"### quantkit report: {sweep.model_name}", "", headline_text(h), ""]
    # without labels the metric is agreement itself: show SQNR next to it instead
    third = "SQNR dB" if col == "agreement" else "agreement"
    lines += [f"| config | {h.metric} | Δ vs FP32 | {third} | p50 ms | speed-up | size |",
              "|:--|--:|--:|--:|--:|--:|--:|"]
    for r in df.itertuples():
        name = f"**{r.config}**" if r.config == h.best else str(r.config)
        name += " ★" if r.pareto else ""
        if r.status != "ok":
            lines.append(f"| {_esc(name)} | {str(r.status).replace('_', ' ')} | | | | | |")
            continue
        extra = fmt_num(r.sqnr_db, 1) if col == "agreement" else fmt_pct(r.agreement)
        lines.append(f"| {_esc(name)} | {fmt_num(getattr(r, col))} | {fmt_signed(r.delta)} | "
                     f"{extra} | {fmt_ms(r.latency_ms_p50)} | "
                     f"{fmt_ratio(r.speedup)} | {fmt_bytes(r.model_bytes)} |")
    direction = "higher" if h.higher_is_better else "lower"
    lines += ["", f"★ on the {h.metric}–latency Pareto front; {h.metric}: {direction} is "
              f"better; Δ and speed-up against `{h.baseline or 'n/a'}`; latency measured on "
              f"{h.measured_on}."]
    notes = warnings(sweep)
    if notes:
        lines += ["", "**Warnings**", ""] + [f"- ⚠️ {_esc(n)}" for n in notes]
    return "\n".join(lines) + "\n"


__all__ = ["Headline", "fmt_bytes", "fmt_ms", "fmt_num", "fmt_pct", "fmt_ratio", "fmt_signed",
           "headline", "headline_text", "render_markdown", "verdict", "warnings"]
