"""Histogram binning, merging of shards, state round trips and non-finite handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantkit.calibrators import (
    AbsHistogram,
    Calibrator,
    EntropyCalibrator,
    MinMaxCalibrator,
    MSECalibrator,
    NonFiniteError,
    PercentileCalibrator,
    create_calibrator,
)
from quantkit.calibrators.histogram import MAX_BINS
from quantkit.errors import InputError, PipelineError

torch = pytest.importorskip("torch")


def test_first_batch_binning_equals_torch_histc() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(200_000).astype(np.float32) * 3)
    h = AbsHistogram()
    h.update(x)
    ref = torch.histc(torch.from_numpy(x), bins=2048, min=0, max=float(x.max()))
    assert np.array_equal(h.counts, ref.numpy().astype(np.int64))


def test_batches_inside_first_range_equal_torch_histc() -> None:
    rng = np.random.default_rng(1)
    a = np.abs(rng.standard_normal(50_000).astype(np.float32)) * 2
    b = np.abs(rng.standard_normal(50_000).astype(np.float32))  # smaller max: no growth
    h = AbsHistogram()
    h.update(a)
    h.update(b)
    hi = float(a.max())
    ref = (torch.histc(torch.from_numpy(a), bins=2048, min=0, max=hi)
           + torch.histc(torch.from_numpy(b), bins=2048, min=0, max=hi))
    assert np.array_equal(h.counts, ref.numpy().astype(np.int64))


def test_growth_keeps_width_and_old_counts() -> None:
    h = AbsHistogram()
    h.update(np.array([0.0, 1.0, 2.0], np.float32))
    old = h.counts.copy()
    w = h.width
    h.update(np.array([5.0], np.float32))
    assert h.width == w
    assert len(h.counts) == int(5.0 / w) + 1
    assert np.array_equal(h.counts[: len(old)], old)
    assert h.total == 4


def test_coarsening_bounds_memory_and_merges() -> None:
    h = AbsHistogram()
    h.update(np.array([1.0], np.float32))
    h.update(np.array([1e6], np.float32))
    assert len(h.counts) <= MAX_BINS and h.coarsen > 0 and h.total == 2
    fine = AbsHistogram()
    fine.update(np.array([1.0], np.float32))
    fine.update(np.array([0.5], np.float32))
    h.merge(fine)
    assert h.total == 4


def _split_points(n_batches: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, n_batches - 1), max_size=3, unique=True).map(sorted)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), cuts=_split_points(6),
       method=st.sampled_from(["entropy", "minmax", "percentile", "mse"]))
def test_shards_merged_equal_one_pass(seed: int, cuts: list[int], method: str) -> None:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 3, 6)
    batches = [(rng.standard_t(4, 3000) * s).astype(np.float32) for s in scale]
    one = create_calibrator(method)
    for b in batches:
        one.update("t", b)
    # shard 0 sees the first batch; the others are seeded with its widths (empty_like)
    bounds = [0, *cuts, len(batches)]
    shards: list[Calibrator] = []
    first = create_calibrator(method)
    first.update("t", batches[0])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        shard = first.empty_like()
        for b in batches[max(lo, 1) if lo == 0 else lo: hi]:
            shard.update("t", b)
        shards.append(shard)
    merged = first
    for shard in reversed(shards):  # merge order must not matter
        merged.merge(shard)
    assert merged.compute_amax() == one.compute_amax()
    if method != "minmax":
        assert np.array_equal(merged.histogram("t").counts[: len(one.histogram("t").counts)],
                              one.histogram("t").counts)


def test_merge_with_different_widths_is_refused() -> None:
    a, b = EntropyCalibrator(), EntropyCalibrator()
    a.update("t", np.array([1.0, 2.0], np.float32))
    b.update("t", np.array([3.0], np.float32))
    with pytest.raises(PipelineError, match="different bin widths"):
        a.merge(b)
    with pytest.raises(InputError, match="same method"):
        a.merge(MinMaxCalibrator())  # type: ignore[arg-type]


def test_fixed_widths_make_order_irrelevant() -> None:
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal(2000) * (k + 1)).astype(np.float32) for k in range(4)]
    results = []
    for order in (batches, batches[::-1]):
        cal = EntropyCalibrator(widths={"t": 0.005})
        for b in order:
            cal.update("t", b)
        results.append(cal.compute_amax())
    assert results[0] == results[1]


@pytest.mark.parametrize("klass", [EntropyCalibrator, MinMaxCalibrator, PercentileCalibrator,
                                   MSECalibrator])
def test_state_round_trip(klass: type[Calibrator]) -> None:
    rng = np.random.default_rng(4)
    cal = klass()
    for _ in range(3):
        cal.update("a", rng.standard_normal(1000).astype(np.float32))
        cal.update("b", rng.random(1000).astype(np.float32))
    back = Calibrator.from_state(cal.state())
    assert type(back) is klass and back.compute_amax() == cal.compute_amax()


def test_nonfinite_values_raise_or_are_skipped() -> None:
    x = np.array([1.0, np.nan, 2.0, np.inf], np.float32)
    with pytest.raises(NonFiniteError, match="tensor 'act'.*2 of 4.*allow_nonfinite=True"):
        EntropyCalibrator().update("act", x)
    cal = MinMaxCalibrator(allow_nonfinite=True)
    cal.update("act", x)
    assert cal.compute_amax() == {"act": 2.0} and cal.nonfinite_counts == {"act": 2}


def test_float16_and_float64_inputs_are_binned_as_float32() -> None:
    x = np.linspace(-3, 3, 1001)
    a, b = EntropyCalibrator(), EntropyCalibrator()
    a.update("t", x)
    b.update("t", x.astype(np.float32))
    assert a.compute_amax() == b.compute_amax()
