"""Which latencies of a sweep can be compared, and when two of them are the same within noise.

A row's primary latency (``latency_ms_p50``) comes from one source (``latency_source``: measured,
estimated, cpu-fake-quant, cpu) for one target (``latency_target``: a GPU, or the CPU). Only
latencies of one kind are compared: the *ranking source* of a sweep is the best source present
(measured > estimated > the CPU), and rows with another source are not ranked against them.
``cpu`` and ``cpu-fake-quant`` are one kind (the same CPU timed both) but neither is a TensorRT
latency: a sweep whose only latency is the CPU's never calls a ratio of them a speed-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantkit.evaluate.latency import latency_label, source_rank

#: estimates closer than this (relative) are reported as ties: the latency model's inputs
#: (a per-GPU roofline and launch cost per kernel) do not resolve smaller differences
ESTIMATE_TIE = 0.05
#: measured / CPU latencies without a spread (one timing round) tie when this close (relative)
NO_SPREAD_TIE = 0.05
_CPU = ("cpu", "cpu-fake-quant")


def source_class(source: str) -> str:
    """``measured``, ``estimated`` or ``cpu`` (both CPU sources); other text is itself."""
    return "cpu" if source in _CPU else source


@dataclass(frozen=True)
class RankingSource:
    """The latency a sweep's rows are compared by.

    Attributes:
        kind: ``measured``, ``estimated``, ``cpu`` or ``none``.
        target: the GPU (or CPU) named by the rows of that kind.
        batch: the latency batch size (samples per timed inference), 0 when unknown.
    """

    kind: str
    target: str
    batch: int

    @property
    def is_cpu(self) -> bool:
        """Whether the only latency is ONNX Runtime's on the CPU (no TensorRT figure)."""
        return self.kind == "cpu"

    def label(self, fake_quant: bool = False) -> str:
        """``estimated, H100-SXM, batch 8``; a CPU source says whether INT8 was fake-quant."""
        kind = self.kind
        if kind == "cpu":
            kind = "cpu / cpu-fake-quant" if fake_quant else "cpu"
        return latency_label(kind, self.target or None, self.batch or None)


def ranking_source(df: pd.DataFrame) -> RankingSource:
    """The best latency source that the rows which ran have (see the module docstring)."""
    ok = df[(df["status"] == "ok") & np.isfinite(df["latency_ms_p50"].to_numpy(dtype=float))] \
        if len(df) else df
    if ok.empty:
        return RankingSource("none", "", 0)
    classes = [source_class(str(s)) for s in ok["latency_source"]]
    best = min(classes, key=source_rank)
    rows = ok[[c == best for c in classes]]
    target = str(rows["latency_target"].mode().iloc[0]) if len(rows) else ""
    batches = pd.to_numeric(rows.get("latency_batch", pd.Series(dtype=float)), errors="coerce")
    batch = int(batches.dropna().iloc[0]) if batches.notna().any() else 0
    return RankingSource(best, target, batch)


def comparable(df: pd.DataFrame, src: RankingSource) -> pd.Series:
    """Rows whose primary latency is of ``src``'s kind and target (and that ran)."""
    if src.kind == "none":
        return pd.Series(False, index=df.index)
    kind = df["latency_source"].astype(str).map(source_class) == src.kind
    same = df["latency_target"].astype(str) == src.target
    finite = np.isfinite(df["latency_ms_p50"].to_numpy(dtype=float))
    return (df["status"] == "ok") & kind & same & finite


def _spread(row: pd.Series) -> tuple[float, float] | None:
    lo, hi = row.get("latency_ms_p50_min"), row.get("latency_ms_p50_max")
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    return lo, hi


def within_noise(a: pd.Series, b: pd.Series, kind: str) -> bool:
    """Whether two rows' primary latencies are the same within noise.

    Estimates tie within :data:`ESTIMATE_TIE`; timings (measured, CPU) tie when the ranges of
    their medians over the repeated timing rounds overlap, or, without a spread, within
    :data:`NO_SPREAD_TIE`.
    """
    x, y = float(a["latency_ms_p50"]), float(b["latency_ms_p50"])
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    if kind != "estimated":
        sa, sb = _spread(a), _spread(b)
        if sa is not None and sb is not None:
            return sa[0] <= sb[1] and sb[0] <= sa[1]
        return abs(x - y) <= NO_SPREAD_TIE * min(x, y)
    return abs(x - y) <= ESTIMATE_TIE * min(x, y)


def tie_rule(kind: str) -> str:
    """The tie rule of a source kind, in one sentence fragment."""
    if kind == "estimated":
        return f"estimates within {ESTIMATE_TIE:.0%} of each other are ties"
    return ("timings whose medians' ranges over the repeated rounds overlap are ties "
            f"(within {NO_SPREAD_TIE:.0%} when timed in one round)")


CPU_ONLY_NOTE = ("All latency here is ONNX Runtime on this machine's CPU, not TensorRT: INT8 "
                 "configs ran there as fake quantisation (cpu-fake-quant: each "
                 "QuantizeLinear/DequantizeLinear pair rounds and rescales in float and the "
                 "convolutions stay FP32), which is usually slower than FP32 and says nothing "
                 "about an INT8 engine's speed, so no config is called faster. Set "
                 "latency.estimate_gpus in the recipe (with quantkit[rtx] installed) for estimated "
                 "TensorRT latency, or run "
                 "the sweep where TensorRT and a GPU are present for measured latency.")

__all__ = ["CPU_ONLY_NOTE", "ESTIMATE_TIE", "NO_SPREAD_TIE", "RankingSource", "comparable",
           "ranking_source", "source_class", "tie_rule", "within_noise"]
