"""The report's headline: which config to ship, by a rule the report states.

Rule: among the configs that ran, find the best metric; the candidates are the configs with
INT8 layers whose metric is within ``tolerance`` metric points of it (default 0.5; recipe
``report.tolerance``, ``quantkit report --tolerance``). The headline is the fastest candidate by
the sweep's ranking latency (measured on a GPU, else estimated for a GPU: see
:mod:`quantkit.report.sources`); candidates within noise of it are named as ties. When the only
latency is ONNX Runtime's on the CPU (a Q/DQ model runs there as fake quantisation, slower than
FP32 and unrelated to TensorRT) latency does not rank them: the most accurate candidate is the
headline (then agreement, then SQNR) and the report says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantkit.report.load import QUANTIZED_KINDS, config_kind, quality_column
from quantkit.report.sources import (
    CPU_ONLY_NOTE,
    RankingSource,
    comparable,
    ranking_source,
    tie_rule,
    within_noise,
)

#: default tolerance of the headline rule, in metric points
DEFAULT_TOLERANCE = 0.5


@dataclass
class Choice:
    """The outcome of the headline rule (see the module docstring).

    Attributes:
        best: the headline config, or ``None`` when no INT8 config is within tolerance.
        ties: candidates whose latency is the same as ``best``'s within noise (fastest first).
        reference: the config with the best metric, and its value.
        candidates: INT8 configs within tolerance of the reference.
        closest: the most accurate INT8 config (the headline's stand-in when there is none).
        by_latency: whether latency chose among the candidates.
        source: the latency the candidates were compared by.
        tolerance: the tolerance, in metric points.
        rule: the rule as one sentence for the report.
    """

    best: str | None
    ties: list[str] = field(default_factory=list)
    reference: str | None = None
    reference_value: float = float("nan")
    candidates: list[str] = field(default_factory=list)
    closest: str | None = None
    by_latency: bool = False
    source: RankingSource = field(default_factory=lambda: RankingSource("none", "", 0))
    tolerance: float = DEFAULT_TOLERANCE
    rule: str = ""


def _by_metric(rows: pd.DataFrame, col: str, sign: float) -> pd.DataFrame:
    return rows.assign(
        _q=(sign * rows[col]).fillna(-np.inf), _a=rows["agreement"].fillna(-np.inf),
        _s=rows["sqnr_db"].fillna(-np.inf),
    ).sort_values(["_q", "_a", "_s"], ascending=False, kind="stable")


def choose(results: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE,
           column: str | None = None, higher_is_better: bool = True,
           metric: str | None = None) -> Choice:
    """Apply the headline rule to a results frame (``Sweep.results`` or any frame like it).

    Args:
        results: one row per config with config, status, the metric column, agreement,
            sqnr_db, int8_layers (or a ``kind`` column), latency_ms_p50, latency_source,
            latency_target and optionally latency_ms_p50_min / _max / latency_batch.
        tolerance: metric points from the best config that still count as "as accurate".
        column: the metric column (default :func:`~quantkit.report.load.quality_column`).
        higher_is_better: direction of the metric.
        metric: the metric's name in the rule sentence (default: the column's name).
    """
    df = results.copy()
    col = column or quality_column(df)
    name = metric or col
    if "kind" not in df.columns:
        df["kind"] = [config_kind(r) for _, r in df.iterrows()]
    sign = 1.0 if higher_is_better else -1.0
    ok = df[(df["status"] == "ok") & np.isfinite(df[col].to_numpy(dtype=float))]
    src = ranking_source(df)
    if ok.empty:
        return Choice(None, source=src, tolerance=tolerance,
                      rule="No config ran with a metric value; nothing to choose.")
    top = _by_metric(ok, col, sign).iloc[0]
    ref, ref_value = str(top["config"]), float(top[col])
    int8 = ok[ok["kind"].isin(QUANTIZED_KINDS)]  # INT8 and/or FP8 layers
    closest = str(_by_metric(int8, col, sign)["config"].iloc[0]) if len(int8) else None
    within = sign * (int8[col] - ref_value) >= -tolerance - 1e-9
    cands = int8[within]
    points = f"{tolerance:g} {name} point{'' if tolerance == 1 else 's'}"
    base = (f"among the configs with INT8 layers within {points} of the best "
            f"({ref}: {ref_value:.2f})")
    out = Choice(None, reference=ref, reference_value=ref_value,
                 candidates=[str(c) for c in cands["config"]], closest=closest,
                 source=src, tolerance=tolerance)
    ranked = cands[comparable(cands, src)] if len(cands) else cands
    if src.is_cpu or ranked.empty:
        why = ("latency does not rank them because the only latency is ONNX Runtime's on the "
               "CPU, not TensorRT's" if src.is_cpu or src.kind == "none"
               else f"none of them has a {src.label()} latency")
        out.rule = (f"Headline rule: {base}, the most accurate (then the highest agreement and "
                    f"SQNR); {why}.")
        if len(cands):
            out.best = str(_by_metric(cands, col, sign)["config"].iloc[0])
        return out
    order = ranked.assign(_l=ranked["latency_ms_p50"].astype(float),
                          _q=-sign * ranked[col]).sort_values(["_l", "_q"], kind="stable")
    winner = order.iloc[0]
    out.best = str(winner["config"])
    out.by_latency = True
    out.ties = [str(r["config"]) for _, r in order.iloc[1:].iterrows()
                if within_noise(winner, r, src.kind)]
    left_out = len(cands) - len(ranked)
    stat = "" if src.kind == "estimated" else " p50"
    out.rule = (f"Headline rule: the fastest by{stat} latency ({src.label()}), {base}; "
                f"{tie_rule(src.kind)}"
                + (f"; {left_out} candidate(s) without that latency are not ranked"
                   if left_out else "") + ".")
    return out


def latency_note(choice: Choice) -> str:
    """The sentence a CPU-only latency needs (empty when a GPU latency ranks the configs)."""
    return CPU_ONLY_NOTE if choice.source.is_cpu else ""


def recipe_tolerance(recipe_text: str | None) -> float:
    """``report.tolerance`` of a sweep's recipe.yaml, else :data:`DEFAULT_TOLERANCE`."""
    if not recipe_text:
        return DEFAULT_TOLERANCE
    import yaml

    try:
        doc = yaml.safe_load(recipe_text)
        value = float(doc["report"]["tolerance"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return DEFAULT_TOLERANCE
    return value if math.isfinite(value) and value >= 0 else DEFAULT_TOLERANCE


def finite(value: object) -> bool:
    """Whether ``value`` is a finite number."""
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


__all__ = ["DEFAULT_TOLERANCE", "Choice", "choose", "finite", "latency_note", "recipe_tolerance"]
