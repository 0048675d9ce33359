"""The compiled (numba) binning kernel gives the numpy path's bins, bit for bit.

The reference is :func:`quantkit.calibrators.histogram.bin_indices`, the reference calibrator's
float32 formula ``int(float32(float32(x * B) / hi0))`` spelled out literally, plus the
coarsening shift. The kernel bins by multiplying by ``1 / width`` and takes the exact division
near bin edges; these tests aim at those edges.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantkit.calibrators import _kernel, create_calibrator
from quantkit.calibrators.histogram import AbsHistogram, bin_indices
from quantkit.errors import InputError

pytest.importorskip("numba", reason="pip install numba (the 'fast' extra) to test the kernel")

FINITE = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@pytest.fixture(autouse=True)
def _numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_kernel.ENV, "numba")


def kernel_counts(values: np.ndarray, hi0: np.float32, nbins: int,
                  coarsen: int = 0) -> np.ndarray | None:
    kernel = _kernel.get_kernel()
    assert kernel is not None
    acc = np.zeros(nbins, dtype=np.int64)
    width = np.float32(hi0 / np.float32(2048))
    ok = kernel(np.ascontiguousarray(values, dtype=np.float32), width,
                np.float32(nbins << coarsen), np.float32(2048), 2048, coarsen, acc)
    return acc if ok else None


def reference_counts(values: np.ndarray, hi0: np.float32, nbins: int,
                     coarsen: int = 0) -> np.ndarray:
    idx = bin_indices(np.abs(values.astype(np.float32)), hi0, 2048, coarsen)
    return np.bincount(idx, minlength=nbins)


def edge_values(hi0: np.float32, nbins: int) -> np.ndarray:
    """Every bin edge k * width, its float32 neighbours and a few ulps around, both signs."""
    width = hi0 / np.float32(2048)
    edges = np.arange(0, nbins + 1, dtype=np.float32) * width
    out = [edges, [hi0]]
    up, down = edges.copy(), edges.copy()
    for _ in range(4):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(0))
        out += [up, down]
    vals = np.concatenate(out).astype(np.float32)
    vals = vals[np.isfinite(vals) & (vals >= 0)]
    limit = np.float32(nbins) * width
    vals = vals[vals < limit * np.float32(0.999)]
    return np.concatenate([vals, -vals[::3]]).astype(np.float32)


# (widths below float32's smallest normal, or x * 2048 overflowing, take the numpy path: see
# test_binning_threads.py)
@pytest.mark.parametrize("hi0", [1.0, 3.0, 0.1, 6.1e-5, 1e30, 2.0**-100, 123.456,
                                 float(np.float32(1) / np.float32(3))])
@pytest.mark.parametrize("nbins", [2048, 5000])
def test_bins_near_every_edge_equal_the_reference(hi0: float, nbins: int) -> None:
    h = np.float32(hi0)
    vals = edge_values(h, nbins)
    got = kernel_counts(vals, h, nbins)
    assert got is not None
    assert got.tolist() == reference_counts(vals, h, nbins).tolist()


@pytest.mark.parametrize("coarsen", [1, 3])
def test_coarsened_bins_equal_the_reference(coarsen: int) -> None:
    h = np.float32(2.5)
    vals = edge_values(h, 4096)
    got = kernel_counts(vals, h, 4096 >> coarsen, coarsen)
    assert got is not None
    assert got.tolist() == reference_counts(vals, h, 4096 >> coarsen, coarsen).tolist()


@settings(max_examples=200, deadline=None)
@given(values=hnp.arrays(np.float32, st.integers(1, 500), elements=FINITE),
       hi0=st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), width=32),
       grow=st.integers(1, 4))
def test_random_values_equal_the_reference(values: np.ndarray, hi0: float, grow: int) -> None:
    h = np.float32(hi0)
    nbins = 2048 * grow
    values = values[np.abs(values) < h * np.float32(grow) * np.float32(0.999)]
    got = kernel_counts(values, h, nbins)
    assert got is not None
    assert got.tolist() == reference_counts(values, h, nbins).tolist()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 10.0])
def test_a_value_that_does_not_fit_declines_and_changes_nothing(bad: float) -> None:
    hist = AbsHistogram()
    hist.update(np.array([1.0, 0.5, -0.25], dtype=np.float32))
    before = hist.counts.copy()
    batch = np.linspace(-1, 1, 1001, dtype=np.float32)
    batch[777] = bad
    assert not hist.try_accumulate(batch)
    assert hist.counts.tolist() == before.tolist()


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse"])
def test_calibrators_give_the_same_state_with_either_path(
        method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    batches = [{"relu": np.maximum(rng.standard_normal((8, 16, 20, 20)), 0).astype(np.float32)
                * s, "t": rng.standard_t(2, (8, 300)).astype(np.float32) * s}
               for s in (1.0, 1.0, 2.5, 0.5, 3.0, 1.0)]
    states = {}
    for mode in ("numpy", "numba"):
        monkeypatch.setenv(_kernel.ENV, mode)
        cal = create_calibrator(method)
        for b in batches:
            cal.update_many(b)
        states[mode] = (cal.compute_amax(), cal.state())
    assert states["numpy"][0] == states["numba"][0]
    for name in ("relu", "t"):
        a, b = states["numpy"][1]["tensors"][name], states["numba"][1]["tensors"][name]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_kernel_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_kernel.ENV, "numpy")
    assert _kernel.get_kernel() is None
    monkeypatch.setenv(_kernel.ENV, "fortran")
    with pytest.raises(InputError, match="QUANTKIT_HISTOGRAM_KERNEL"):
        _kernel.get_kernel()


def test_auto_uses_the_kernel_for_large_batches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_kernel.ENV, "auto")
    assert _kernel.get_kernel(_kernel.MIN_VALUES - 1) is None
    assert _kernel.get_kernel(_kernel.MIN_VALUES) is not None


def test_preload_loads_the_kernel_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_kernel, "_cache", {})
    monkeypatch.setenv(_kernel.ENV, "numpy")
    assert _kernel.preload() is None
    monkeypatch.setenv(_kernel.ENV, "auto")
    thread = _kernel.preload()
    assert thread is not None
    thread.join(timeout=120)
    assert _kernel._cache.get("auto") is not None
    assert _kernel.preload() is None  # already loaded
