"""Numeric kernels against slow, independent re-derivations of the published algorithms."""

from __future__ import annotations

import numpy as np
import pytest
from reference import entropy_amax_reference, kl_reference, mse_amax_reference

from quantkit.calibrators import entropy_amax, kl_divergences, mse_amax, percentile_amax


def _hist(kind: str, rng: np.random.Generator, nbins: int = 400) -> np.ndarray:
    if kind == "normal":
        x = np.abs(rng.standard_normal(50_000))
    elif kind == "heavy":
        x = np.abs(rng.standard_t(2, 50_000))
    elif kind == "sparse":
        x = np.abs(rng.standard_normal(50_000)) * (rng.random(50_000) < 0.03)
    elif kind == "gap":  # every value in [2, 4]: the low candidates have an empty Q
        x = rng.uniform(2, 4, 20_000)
    elif kind == "spikes":
        x = rng.choice([0.5, 1.0, 3.0], 20_000)
    else:
        raise ValueError(kind)
    counts, _ = np.histogram(x, bins=nbins, range=(0, x.max()))
    return counts


@pytest.mark.parametrize("kind", ["normal", "heavy", "sparse", "gap", "spikes"])
def test_kl_of_every_candidate_matches_reference(kind: str) -> None:
    counts = _hist(kind, np.random.default_rng(3))
    cand, kl = kl_divergences(counts)
    ref = np.array(kl_reference(counts))
    assert list(cand) == list(range(128, len(counts) + 1))
    both_nan = np.isnan(kl) & np.isnan(ref)
    both_inf = np.isinf(kl) & np.isinf(ref)
    fin = ~(both_nan | both_inf)
    assert np.array_equal(np.isnan(kl), np.isnan(ref))
    np.testing.assert_allclose(kl[fin], ref[fin], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["normal", "heavy", "sparse", "gap", "spikes"])
def test_entropy_amax_matches_reference(kind: str) -> None:
    counts = _hist(kind, np.random.default_rng(4))
    width = 0.0123
    assert entropy_amax(counts, width) == entropy_amax_reference(counts, width)


def test_entropy_gap_skips_nan_candidates() -> None:
    # docs/tensorrt_rules.md#entropy-calibration, step 5: the reference may pick a NaN
    # candidate; we must not.
    counts = _hist("gap", np.random.default_rng(5), nbins=2048)
    amax = entropy_amax(counts, 4 / 2048)
    assert amax > 2.0


def test_entropy_degenerate_histograms() -> None:
    assert entropy_amax(np.zeros(2048, dtype=np.int64), 0.1) == 0.0
    one = np.zeros(2048, dtype=np.int64)
    one[2047] = 10
    assert entropy_amax(one, 1 / 2048) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["normal", "heavy", "sparse"])
def test_mse_amax_matches_reference(kind: str) -> None:
    counts = _hist(kind, np.random.default_rng(6), nbins=600)
    assert mse_amax(counts, 0.01) == pytest.approx(mse_amax_reference(counts, 0.01), rel=1e-6)


def test_percentile_is_left_edge_of_bin() -> None:
    counts = np.zeros(2048, dtype=np.int64)
    counts[:100] = 1  # 100 values in bins 0..99
    # 99% of the mass is reached inside bin 98 -> amax = left edge of bin 98
    assert percentile_amax(counts, 0.5, 99.0) == pytest.approx(98 * 0.5)
    assert percentile_amax(counts, 0.5, 100.0) == pytest.approx(99 * 0.5)


def test_kl_search_vectorised_full_size_runs() -> None:
    counts = _hist("normal", np.random.default_rng(7), nbins=2048)
    cand, kl = kl_divergences(counts)
    assert len(cand) == 1921 and not np.isnan(kl).any()
