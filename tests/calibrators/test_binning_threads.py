"""The one-division binning shortcut and the threaded ``update_many``.

The reference for the bins is :func:`quantkit.calibrators.histogram.bin_indices`, which spells out
the reference calibrator's float32 formula ``int(float32(float32(x * B) / hi0))`` literally.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantkit.calibrators import create_calibrator
from quantkit.calibrators.base import NonFiniteError, update_threads
from quantkit.calibrators.histogram import AbsHistogram, _exact_width, bin_indices

FINITE = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)


def reference_counts(first: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
    """Each batch binned with the literal formula; a batch that needs more than 2048 bins grows
    the histogram before it is binned, and from then on a value exactly at ``hi0`` is the left
    edge of bin 2048 instead of the top of bin 2047 (the reference re-bins over the grown
    range)."""
    hi0 = np.float32(np.abs(first).max())
    nbins, parts = 2048, []
    for b in [first, *batches]:
        a = np.abs(b).reshape(-1)
        if a.size:
            nbins = max(nbins, int(bin_indices(a, hi0, 2048, 0).max()) + 1)
        parts.append(bin_indices(a, hi0, 2048, 0, top_in_last=nbins == 2048))
    return np.bincount(np.concatenate(parts), minlength=2048)


@settings(max_examples=150, deadline=None)
@given(first=hnp.arrays(np.float32, st.integers(1, 300), elements=FINITE),
       later=st.lists(hnp.arrays(np.float32, st.integers(0, 300), elements=FINITE), max_size=3))
def test_histogram_bins_equal_the_reference_formula(first: np.ndarray,
                                                    later: list[np.ndarray]) -> None:
    if not np.abs(first).max() > 0:
        first = np.append(first, np.float32(1.0))
    hi0 = float(np.abs(first).max())
    # keep later batches within a few thousand bins of the first range (no coarsening here)
    later = [np.clip(b, -3 * hi0, 3 * hi0) for b in later]
    hist = AbsHistogram()
    for b in [first, *later]:
        hist.update(b)
    ref = reference_counts(first, later)
    assert hist.counts[: len(ref)].tolist() == ref.tolist()
    assert not hist.counts[len(ref):].any()


@pytest.mark.parametrize("hi0", [1.0, 3.0, 0.1, 6.1e-5, 1e30, 2.0**-120, 7.3e-36])
def test_shortcut_is_bit_identical_near_bin_edges(hi0: float) -> None:
    h = np.float32(hi0)
    edges = np.arange(0, 2049, dtype=np.float32) * (h / np.float32(2048))
    around = np.concatenate([np.nextafter(edges, np.float32(0)), edges,
                             np.nextafter(edges, np.float32(np.inf)), [h]]).astype(np.float32)
    around = around[np.isfinite(around) & (around <= h)]
    hist = AbsHistogram()
    hist.update(np.concatenate([[h], around]).astype(np.float32))
    ref = np.bincount(bin_indices(np.concatenate([[h], around]).astype(np.float32), h, 2048, 0),
                      minlength=2048)
    assert hist.counts.tolist() == ref.tolist()


def test_shortcut_declines_where_it_would_not_be_exact() -> None:
    assert _exact_width(np.float32(1.0), 2048, 1.0) == np.float32(1 / 2048)
    assert _exact_width(np.float32(1.0), 2000, 1.0) is None  # not a power of two
    assert _exact_width(np.float32(1e-36), 2048, 1e-36) is None  # width would be subnormal
    assert _exact_width(np.float32(1.0), 2048, 1e36) is None  # x * 2048 overflows


def batch_of_tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(4, 8, 30, 30), (4, 16, 15, 15), (4, 100), (3,), (4, 32, 8, 8)]
    return {f"t{i}": (rng.standard_t(3, size=s) * (i + 1)).astype(np.float32)
            for i, s in enumerate(shapes)}


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse", "minmax"])
def test_threaded_update_many_equals_sequential(method: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    results = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("QUANTKIT_UPDATE_THREADS", threads)
        assert update_threads() == int(threads)
        cal = create_calibrator(method)
        for seed in range(4):
            cal.update_many(batch_of_tensors(seed))
        results[threads] = (cal.tensor_names, cal.compute_amax(), cal.state())
    (names1, amax1, state1), (names3, amax3, state3) = results["1"], results["3"]
    assert names1 == names3 == [f"t{i}" for i in range(5)]
    assert amax1 == amax3
    for name in names1:
        for key, value in state1["tensors"][name].items():
            np.testing.assert_array_equal(value, state3["tensors"][name][key])


def test_threaded_update_reports_the_first_bad_tensor_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTKIT_UPDATE_THREADS", "4")
    batch = batch_of_tensors(0)
    batch["t1"] = batch["t1"].copy()
    batch["t1"].flat[7] = np.nan
    batch["t3"] = batch["t3"].copy()
    batch["t3"][0] = np.inf
    cal = create_calibrator("entropy")
    for _ in range(5):  # whatever thread finishes first, the error names t1
        with pytest.raises(NonFiniteError, match="tensor 't1'"):
            cal.update_many(batch)


def test_update_threads_default_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTKIT_UPDATE_THREADS", raising=False)
    assert 1 <= update_threads() <= 8
    monkeypatch.setenv("QUANTKIT_UPDATE_THREADS", "zero")
    assert 1 <= update_threads() <= 8


@pytest.mark.parametrize("first,later", [(1.66e35, 3.0e38), (1e-30, 3.0e38), (1.0, 1e30)])
def test_extreme_ranges_stay_finite_and_count_every_value(first: float, later: float) -> None:
    hist = AbsHistogram()
    hist.update(np.array([first, -first / 2, 0.0], dtype=np.float32))
    hist.update(np.array([later, -later, first], dtype=np.float32))
    assert hist.total == 6
    assert len(hist.counts) <= 1 << 18
    assert np.isfinite(hist.width) and hist.width > 0
    cal = create_calibrator("entropy")
    cal.update("t", np.array([first, later], dtype=np.float32))
    assert np.isfinite(cal.compute_amax()["t"])


@settings(max_examples=100, deadline=None)
@given(first=hnp.arrays(np.float32, st.integers(1, 200), elements=FINITE),
       later=st.lists(hnp.arrays(np.float32, st.integers(1, 200),
                                 elements=st.floats(-4, 4, width=32)), min_size=1, max_size=4),
       coarsen=st.integers(0, 2))
def test_one_pass_path_equals_the_general_path(first: np.ndarray, later: list[np.ndarray],
                                               coarsen: int) -> None:
    """try_accumulate (bin and check in one pass) vs update (max first, then bin)."""
    if not np.abs(first).max() > 0:
        first = np.append(first, np.float32(1.0))
    general, one_pass = AbsHistogram(), AbsHistogram()
    general.update(first)
    one_pass.update(first)
    for _ in range(coarsen):
        general._coarsen_once()
        one_pass._coarsen_once()
    for b in later:
        b = b * np.float32(np.abs(first).max())
        general.update(b)
        if not one_pass.try_accumulate(b):
            one_pass.update(b)  # what HistogramCalibrator.update falls back to
    assert one_pass.coarsen == general.coarsen
    assert one_pass.counts.tolist() == general.counts.tolist()


def test_one_pass_path_declines_nonfinite_and_out_of_range() -> None:
    h = AbsHistogram()
    h.update(np.array([1.0, -0.5], dtype=np.float32))
    counts = h.counts.copy()
    assert not h.try_accumulate(np.array([0.5, np.nan], dtype=np.float32))
    assert not h.try_accumulate(np.array([0.5, -np.inf], dtype=np.float32))
    assert not h.try_accumulate(np.array([0.5, 1.01], dtype=np.float32))  # needs a new bin
    assert h.counts.tolist() == counts.tolist()  # nothing was added
    assert h.try_accumulate(np.array([0.5, -1.0], dtype=np.float32))  # the top value fits
    assert h.total == 4 and h.counts[-1] == 2


def test_states_restore_into_independent_writable_histograms() -> None:
    h = AbsHistogram()
    h.update(np.array([1.0, 0.25], dtype=np.float32))
    state = h.state()
    state["counts"].setflags(write=False)  # as Ray hands objects back
    a, b = AbsHistogram.from_state(state), AbsHistogram.from_state(state)
    a.update(np.array([0.5], dtype=np.float32))
    assert a.total == 3 and b.total == 2 and state["counts"].sum() == 2
