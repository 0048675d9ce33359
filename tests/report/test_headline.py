"""The headline rule, fed hand-set numbers: tolerance, fastest INT8, ties, latency sources."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from quantkit.report.headline import choose, latency_note, recipe_tolerance
from quantkit.report.sources import ranking_source, within_noise


def _rows(*rows: tuple[Any, ...], source: str = "estimated", target: str = "L4") -> pd.DataFrame:
    """(config, int8 layers, accuracy, p50, [p50 min, p50 max, [source]]) per row."""
    out = []
    for r in rows:
        name, int8, acc, p50 = r[:4]
        lo, hi = (r[4], r[5]) if len(r) > 5 else (p50, p50)
        src = r[6] if len(r) > 6 else source
        out.append({"config": name, "status": "ok", "int8_layers": int8, "fp16_layers": 0,
                    "method": "", "accuracy": acc, "agreement": 100.0, "sqnr_db": 40.0,
                    "latency_ms_p50": p50, "latency_ms_p50_min": lo, "latency_ms_p50_max": hi,
                    "latency_source": src,
                    "latency_target": target if src in ("estimated", "measured") else "CPU",
                    "latency_batch": 8})
    return pd.DataFrame(out)


def test_fastest_int8_within_tolerance_wins() -> None:
    df = _rows(("fp32", 0, 95.6, 1.00), ("int8-a", 7, 95.6, 0.70), ("int8-b", 7, 95.2, 0.40),
               ("int8-c", 7, 94.9, 0.20))
    c = choose(df, tolerance=0.5)
    # int8-c is 0.7 points below the best (95.6): out; int8-b is 0.4 below: in, and fastest
    assert c.best == "int8-b" and c.by_latency
    assert c.candidates == ["int8-a", "int8-b"] and c.reference == "fp32"
    assert c.ties == []
    assert "fastest by latency (estimated, L4, batch 8)" in c.rule
    assert "within 0.5 accuracy points of the best (fp32: 95.60)" in c.rule
    assert choose(df, tolerance=1.0).best == "int8-c"
    assert choose(df, tolerance=0.0).best == "int8-a"


def test_estimates_within_five_percent_are_ties() -> None:
    df = _rows(("fp32", 0, 95.6, 1.00), ("a", 7, 95.6, 0.500), ("b", 5, 95.6, 0.524),
               ("c", 6, 95.6, 0.526))
    c = choose(df)
    # 0.524 is 4.8 % above 0.500: a tie; 0.526 is 5.2 % above: not
    assert c.best == "a" and c.ties == ["b"]


def test_measured_ties_are_overlapping_ranges_over_rounds() -> None:
    df = _rows(("fp32", 0, 90.0, 2.0, 1.9, 2.1), ("a", 7, 90.0, 1.00, 0.95, 1.10),
               ("b", 7, 90.0, 1.08, 1.05, 1.20), ("c", 7, 90.0, 1.20, 1.15, 1.30),
               source="measured", target="NVIDIA L4")
    c = choose(df)
    # b's range (1.05-1.20) overlaps a's (0.95-1.10); c's (1.15-1.30) does not
    assert c.best == "a" and c.ties == ["b"]
    assert "ranges over the repeated rounds overlap" in c.rule
    row = df.set_index("config")
    assert within_noise(row.loc["a"], row.loc["b"], "measured")
    assert not within_noise(row.loc["a"], row.loc["c"], "measured")


def test_cpu_fake_quant_never_ranks_when_an_estimate_exists() -> None:
    # int8-x's estimate failed: its primary latency is a CPU fake-quant timing (0.01 ms, the
    # "fastest" number in the frame), which must neither win nor be compared with estimates
    df = _rows(("fp32", 0, 95.6, 1.00), ("int8-a", 7, 95.6, 0.60),
               ("int8-x", 7, 95.6, 0.01, 0.01, 0.01, "cpu-fake-quant"))
    assert ranking_source(df).kind == "estimated"
    c = choose(df)
    assert c.best == "int8-a" and c.ties == []
    assert "1 candidate(s) without that latency are not ranked" in c.rule
    assert latency_note(c) == ""


def test_cpu_only_picks_the_most_accurate_and_says_why() -> None:
    df = _rows(("fp32", 0, 95.6, 0.08, 0.079, 0.081, "cpu"),
               ("int8-fast", 5, 95.2, 0.15, 0.14, 0.16, "cpu-fake-quant"),
               ("int8-acc", 7, 95.5, 0.27, 0.26, 0.28, "cpu-fake-quant"))
    c = choose(df)
    assert c.source.is_cpu and not c.by_latency
    assert c.best == "int8-acc"  # not the lower fake-quant time
    assert "latency does not rank them because the only latency is ONNX Runtime's" in c.rule
    note = latency_note(c)
    assert note.startswith("All latency here is ONNX Runtime on this machine's CPU, not TensorRT")
    assert "no config is called faster" in note


def test_no_int8_config_within_tolerance() -> None:
    df = _rows(("fp32", 0, 95.6, 1.0), ("fp16", 0, 95.6, 0.6), ("int8", 7, 93.8, 0.4))
    c = choose(df, tolerance=0.5)
    assert c.best is None and c.closest == "int8" and c.candidates == []


def test_lower_is_better_metric() -> None:
    df = _rows(("fp32", 0, 5.0, 1.0), ("a", 7, 5.3, 0.5), ("b", 7, 5.6, 0.3))
    c = choose(df, tolerance=0.5, higher_is_better=False, metric="cer")
    # CER 5.3 is 0.3 worse than 5.0: in; 5.6 is 0.6 worse: out
    assert c.best == "a" and c.candidates == ["a"]
    assert "within 0.5 cer points" in c.rule


@pytest.mark.parametrize(("text", "expected"), [
    ("report: {tolerance: 1.5}\n", 1.5), ("report: {tolerance: -1}\n", 0.5),
    ("name: x\n", 0.5), (None, 0.5), ("report: [1, 2]\n", 0.5), (": : :\n", 0.5)])
def test_recipe_tolerance(text: str | None, expected: float) -> None:
    assert recipe_tolerance(text) == expected
