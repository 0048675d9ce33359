"""quantkit.backends.timing.measure: call counts, summary statistics, argument checks.

No timing assertions: the clock is replaced by a scripted one, so the statistics are exact.
"""

from __future__ import annotations

import itertools

import pytest

from quantkit.backends import timing
from quantkit.errors import InputError


def test_measure_calls_warmup_then_iterations_and_summarises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    # perf_counter: the start stamp, then (t0, t1) per timed call: 1, 2, 3, 4 ms
    ticks = iter([0.0, 0.0, 0.001, 1.0, 1.002, 2.0, 2.003, 3.0, 3.004, 4.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    stats = timing.measure(lambda: calls.append(1), batch_size=8, warmup=3, iterations=4)
    assert len(calls) == 3 + 4
    assert stats.iterations == 4 and stats.warmup == 3 and stats.batch_size == 8
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.p50_ms == pytest.approx(2.5)  # median of 1, 2, 3, 4
    assert (stats.min_ms, stats.max_ms) == (pytest.approx(1.0), pytest.approx(4.0))


def test_measure_keeps_timing_until_min_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(0.0, 0.1)  # every perf_counter call advances 100 ms
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    stats = timing.measure(lambda: None, batch_size=1, warmup=0, iterations=1, min_time_s=1.0)
    assert stats.iterations > 1


@pytest.mark.parametrize(("warmup", "iterations"), [(0, 0), (-1, 5)])
def test_measure_rejects_bad_counts(warmup: int, iterations: int) -> None:
    with pytest.raises(InputError, match="iterations must be >= 1"):
        timing.measure(lambda: None, batch_size=1, warmup=warmup, iterations=iterations)
