"""quantkit's calibrators vs NVIDIA ModelOpt's torch HistogramCalibrator (the TensorRT reference).

ModelOpt (plain `nvidia-modelopt`, CPU torch) is in the `dev` extra. Its histogram collection
is the pytorch-quantization / TensorRT algorithm (docs/tensorrt_rules.md#entropy-calibration).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
calib = pytest.importorskip("modelopt.torch.quantization.calib")

from reference import mse_amax_reference  # noqa: E402

from quantkit.calibrators import (  # noqa: E402
    EntropyCalibrator,
    MinMaxCalibrator,
    MSECalibrator,
    PercentileCalibrator,
)


def _batches(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    n = 30_000
    if kind == "normal":
        return [rng.standard_normal(n).astype(np.float32) for _ in range(4)]
    if kind == "heavy_outliers":
        return [np.concatenate([rng.standard_t(3, n), [40.0 + 10 * k]]).astype(np.float32)
                for k in range(4)]
    if kind == "relu":
        return [np.maximum(rng.standard_normal((8, 16, 15, 15)), 0).astype(np.float32)
                for _ in range(4)]
    if kind == "sparse":
        return [(rng.standard_normal(n) * (rng.random(n) < 0.05)).astype(np.float32)
                for _ in range(4)]
    if kind == "growing":
        return [(rng.standard_normal(n) * (1 + 0.3 * k)).astype(np.float32) for k in range(4)]
    raise ValueError(kind)


def _modelopt(batches: list[np.ndarray], method: str, **kw: float) -> float:
    ref = calib.HistogramCalibrator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in batches:
            ref.collect(torch.from_numpy(b))
        return float(ref.compute_amax(method, **kw))


KINDS = ["normal", "heavy_outliers", "relu", "sparse", "growing"]


@pytest.mark.parametrize("order", ["forward", "reversed"])
@pytest.mark.parametrize("kind", KINDS)
def test_entropy_equals_modelopt(kind: str, order: str) -> None:
    batches = _batches(kind, np.random.default_rng(11))
    if order == "reversed":
        batches = batches[::-1]
    cal = EntropyCalibrator()
    for b in batches:
        cal.update("t", b)
    assert cal.compute_amax()["t"] == pytest.approx(_modelopt(batches, "entropy"), rel=1e-6)


@pytest.mark.parametrize("pct", [99.0, 99.9, 99.99])
@pytest.mark.parametrize("kind", KINDS)
def test_percentile_equals_modelopt(kind: str, pct: float) -> None:
    batches = _batches(kind, np.random.default_rng(12))
    cal = PercentileCalibrator(percentile=pct)
    for b in batches:
        cal.update("t", b)
    ref = _modelopt(batches, "percentile", percentile=pct)
    assert cal.compute_amax()["t"] == pytest.approx(ref, rel=1e-6)


def test_zero_first_batch_is_handled_where_the_reference_crashes() -> None:
    rng = np.random.default_rng(13)
    data = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]
    cal = EntropyCalibrator()
    cal.update("t", np.zeros(5000, np.float32))
    for b in data:
        cal.update("t", b)
    # bins[0] is overwritten by bins[1] before the search, so the zeros do not matter
    assert cal.compute_amax()["t"] == pytest.approx(_modelopt(data, "entropy"), rel=1e-6)
    zero = EntropyCalibrator()
    zero.update("z", np.zeros(100, np.float32))
    assert zero.compute_amax() == {"z": 0.0}


def test_minmax_is_exact_max_abs() -> None:
    rng = np.random.default_rng(14)
    batches = _batches("heavy_outliers", rng)
    cal = MinMaxCalibrator()
    for b in batches:
        cal.update("t", -b)
    assert cal.compute_amax()["t"] == float(max(np.abs(b).max() for b in batches))


def _modelopt_hist(batches: list[np.ndarray]) -> tuple[np.ndarray, float]:
    ref = calib.HistogramCalibrator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in batches:
            ref.collect(torch.from_numpy(b))
    edges = ref._calib_bin_edges.numpy()
    return ref._calib_hist.numpy().astype(np.int64), float(edges[1] - edges[0])


def _top_edge_batches(grow_first: bool) -> list[np.ndarray]:
    """A clipped activation: many values exactly at the first batch's max (4.0).

    The second batch grows the range to 6.0; the third stays inside it. With
    ``grow_first=False`` a batch inside the first range comes before the growth.
    """
    rng = np.random.default_rng(21)
    first = np.concatenate([rng.uniform(0, 4, 3000), np.full(500, 4.0)]).astype(np.float32)
    grow = np.concatenate([rng.uniform(0, 6, 3000), np.full(700, 4.0)]).astype(np.float32)
    inside = np.concatenate([rng.uniform(0, 4, 3000), np.full(300, 4.0)]).astype(np.float32)
    return [first, grow, inside] if grow_first else [first, inside, grow, inside]


@pytest.mark.parametrize("grow_first", [True, False])
def test_values_at_the_old_top_edge_after_growth_bin_as_the_reference(grow_first: bool) -> None:
    batches = _top_edge_batches(grow_first)
    ref_hist, ref_width = _modelopt_hist(batches)
    cal = MSECalibrator()
    for b in batches:
        cal.update("t", b)
    hist = cal.histogram("t")
    assert hist.width == pytest.approx(ref_width, rel=1e-6)
    # the 4.0 values: bin 2047 from the batches seen before the growth, bin 2048 after it
    # (the reference re-bins over the grown range, where 4.0 is the left edge of bin 2048)
    before = 500 if grow_first else 500 + 300
    assert hist.counts[2047] == ref_hist[2047] and ref_hist[2047] >= before
    assert hist.counts[2048] == ref_hist[2048] and ref_hist[2048] >= 700 + 300
    # and so MSE's amax is the one the reference algorithm picks on the reference histogram
    assert cal.compute_amax()["t"] == pytest.approx(mse_amax_reference(ref_hist, ref_width),
                                                     rel=1e-6)

