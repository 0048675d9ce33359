"""Latency measurement on the host clock: warm-up, timed iterations, percentiles, throughput.

GPU runners time with CUDA events instead (:mod:`quantkit.backends.runner`); both report a
:class:`~quantkit.backends.base.LatencyStats`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from quantkit.backends.base import LatencyStats
from quantkit.errors import InputError

__all__ = ["FAKE_QUANT_NOTE", "SOURCES", "LatencyStats", "cpu_source", "latency_label", "measure",
           "source_rank"]


def measure(fn: Callable[[], object], *, batch_size: int, warmup: int = 5,
            iterations: int = 30, min_time_s: float = 0.0,
            repeats: int = 1) -> LatencyStats:
    """Time ``fn`` (one inference of ``batch_size`` samples) with ``time.perf_counter``.

    With ``repeats`` > 1 the timed runs are made in that many rounds of ``iterations`` each, so
    the result carries the run-to-run spread of the median (see
    :class:`~quantkit.backends.base.LatencyStats`).

    Args:
        fn: runs one inference; its result is discarded.
        batch_size: samples per call, for the throughput.
        warmup: untimed calls first (allocations, kernel selection, caches).
        iterations: timed calls (at least this many).
        min_time_s: keep timing until this much time has passed, too (per round).
        repeats: rounds of timed calls.
    """
    if iterations < 1 or warmup < 0 or repeats < 1:
        raise InputError("latency: iterations and repeats must be >= 1 and warm-up >= 0.")
    for _ in range(warmup):
        fn()
    rounds: list[list[float]] = []
    for _ in range(repeats):
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < iterations or time.perf_counter() - start < min_time_s:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        rounds.append(times)
    return LatencyStats.from_repeats(rounds, warmup=warmup, batch_size=batch_size)


#: where a latency comes from, best first (the report's primary latency is the best available)
SOURCES = ("measured", "estimated", "cpu-fake-quant", "cpu")
#: one sentence on what ``cpu-fake-quant`` is, for every place that shows such a number
FAKE_QUANT_NOTE = ("cpu-fake-quant: ONNX Runtime on the CPU runs the Q/DQ model in float "
                   "(each QuantizeLinear/DequantizeLinear pair rounds and rescales, the "
                   "convolutions stay FP32), so INT8 configs are usually slower than FP32 there; "
                   "it measures the accuracy path, not a TensorRT engine's speed.")


def cpu_source(has_qdq: bool) -> str:
    """``cpu-fake-quant`` for a Q/DQ model on ONNX Runtime's CPU provider, else ``cpu``."""
    return "cpu-fake-quant" if has_qdq else "cpu"


def source_rank(source: str) -> int:
    """Position of ``source`` in :data:`SOURCES` (unknown sources last)."""
    return SOURCES.index(source) if source in SOURCES else len(SOURCES)


def latency_label(source: str, target: str | None = None, batch: int | None = None) -> str:
    """How a latency was obtained, in words: ``estimated, H100-SXM, batch 8``.

    Args:
        source: one of :data:`SOURCES`.
        target: the GPU (measured / estimated) or the CPU.
        batch: samples per timed inference.
    """
    parts = [source or "unknown source"]
    if target:
        parts.append(str(target))
    if batch:
        parts.append(f"batch {int(batch)}")
    return ", ".join(parts)
