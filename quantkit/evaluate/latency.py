"""Latency measurement: warm-up, timed iterations, percentiles, throughput."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from quantkit.errors import InputError


@dataclass
class LatencyStats:
    """Latency of one call (milliseconds) and throughput (samples per second)."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    iterations: int
    batch_size: int
    timer: str = "perf_counter"

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict for CSV/JSON."""
        return asdict(self)


def summarize(times_s: list[float] | np.ndarray, batch_size: int,
              timer: str = "perf_counter") -> LatencyStats:
    """Percentiles of per-call times (seconds) as :class:`LatencyStats`."""
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    if t.size == 0:
        raise InputError("no timed iterations: use at least one iteration.")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    mean = float(t.mean())
    return LatencyStats(float(p50), float(p90), float(p99), mean,
                        batch_size / (mean / 1e3) if mean > 0 else float("inf"),
                        int(t.size), batch_size, timer)


def measure(fn: Callable[[], object], *, batch_size: int, warmup: int = 5,
            iterations: int = 30, min_time_s: float = 0.0) -> LatencyStats:
    """Time ``fn`` (one inference of ``batch_size`` samples) on the host clock.

    Args:
        fn: runs one inference; its result is discarded.
        batch_size: samples per call, for the throughput.
        warmup: untimed calls first (allocations, kernel selection, caches).
        iterations: timed calls (at least this many).
        min_time_s: keep timing until this much time has passed, too.
    """
    if iterations < 1 or warmup < 0:
        raise InputError("latency: iterations must be >= 1 and warm-up >= 0.")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summarize(times, batch_size)
