"""pareto_front against a brute-force definition of Pareto dominance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantkit.report import pareto_front


def brute_force(x: np.ndarray, y: np.ndarray, higher_is_better: bool) -> list[bool]:
    """On the front = finite and no other finite point at least as good in both and better in
    one (lower x; higher y, or lower y when lower is better)."""
    out = []
    for i in range(len(x)):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            out.append(False)
            continue
        dominated = False
        for j in range(len(x)):
            if j == i or not (np.isfinite(x[j]) and np.isfinite(y[j])):
                continue
            y_ge = y[j] >= y[i] if higher_is_better else y[j] <= y[i]
            y_gt = y[j] > y[i] if higher_is_better else y[j] < y[i]
            if x[j] <= x[i] and y_ge and (x[j] < x[i] or y_gt):
                dominated = True
                break
        out.append(not dominated)
    return out


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_matches_brute_force(seed: int, higher_is_better: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    # few distinct values so ties in x, in y and in both are common
    x = rng.integers(1, 8, n).astype(float)
    y = rng.integers(70, 78, n).astype(float)
    x[rng.random(n) < 0.1] = np.nan
    y[rng.random(n) < 0.1] = np.nan
    df = pd.DataFrame({"latency_ms_p50": x, "accuracy": y},
                      index=[f"c{i}" for i in range(n)])
    got = pareto_front(df, higher_is_better=higher_is_better)
    assert list(got.index) == list(df.index)
    assert got.tolist() == brute_force(x, y, higher_is_better)


def test_continuous_values_and_custom_columns() -> None:
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"p99": rng.random(200), "agreement": rng.random(200)})
    got = pareto_front(df, "p99", "agreement")
    assert got.tolist() == brute_force(df["p99"].to_numpy(), df["agreement"].to_numpy(), True)
    assert got.sum() >= 1


def test_failed_rows_are_never_on_the_front() -> None:
    df = pd.DataFrame({"config": ["a", "b", "c"], "latency_ms_p50": [1.0, 2.0, 0.5],
                       "accuracy": [70.0, 75.0, 99.0], "status": ["ok", "ok", "failed"]})
    assert pareto_front(df).tolist() == [True, True, False]


def test_lower_is_better_metric() -> None:
    """CER: lower is better, so the slow low-error config and the fast one are both kept."""
    df = pd.DataFrame({"latency_ms_p50": [1.0, 2.0, 3.0], "accuracy": [5.0, 3.0, 4.0]})
    assert pareto_front(df, higher_is_better=False).tolist() == [True, True, False]
    assert pareto_front(df, higher_is_better=True).tolist() == [True, False, False]


def test_equal_points_are_all_kept_and_empty_frame() -> None:
    df = pd.DataFrame({"latency_ms_p50": [1.0, 1.0, 2.0], "accuracy": [80.0, 80.0, 80.0]})
    assert pareto_front(df).tolist() == [True, True, False]
    empty = pd.DataFrame({"latency_ms_p50": [], "accuracy": []})
    assert pareto_front(empty).tolist() == []
