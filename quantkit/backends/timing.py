"""Host-clock latency measurement shared by the runners: warm-up, timed calls, percentiles.

Lives in the backends layer so that a runner (:mod:`quantkit.backends.onnxruntime`) can time
itself without importing :mod:`quantkit.evaluate`, which sits above the backends. GPU runners
time with CUDA events instead (:mod:`quantkit.backends.runner`); both report a
:class:`~quantkit.backends.base.LatencyStats`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from quantkit.backends.base import LatencyStats
from quantkit.errors import InputError


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
        raise InputError("latency: iterations must be >= 1, repeats >= 1 and warm-up >= 0.")
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


__all__ = ["measure"]
