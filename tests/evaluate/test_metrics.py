"""Metrics and agreement against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit.backends.base import LatencyStats
from quantkit.capture import calibrate
from quantkit.errors import InputError
from quantkit.evaluate.latency import measure
from quantkit.evaluate.layers import layer_sqnr
from quantkit.evaluate.metrics import Agreement, create_metric, edit_distance
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from tests.builders.cnn import small_cnn


def test_topk_streams_like_one_batch() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((100, 10))
    labels = rng.integers(0, 10, 100)
    m1, m5 = create_metric("top1"), create_metric("top5")
    for lo in range(0, 100, 30):
        m1.update(logits[lo: lo + 30], labels[lo: lo + 30])
        m5.update(logits[lo: lo + 30], labels[lo: lo + 30])
    assert m1.result() == pytest.approx(100 * np.mean(logits.argmax(1) == labels))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert m5.result() == pytest.approx(100 * np.mean([labels[i] in top5[i]
                                                        for i in range(100)]))
    with pytest.raises(InputError, match="3 labels for a batch of 4"):
        create_metric("top1").update(logits[:4], labels[:3])


@pytest.mark.parametrize("a, b, d", [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0),
                                     ("flaw", "lawn", 2)])
def test_edit_distance(a: str, b: str, d: int) -> None:
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_cer() -> None:
    m = create_metric("cer")
    m.update(["hel1o", "world"], ["hello", "world!"])
    assert m.result() == pytest.approx(100 * 2 / 11)
    assert not m.higher_is_better


def test_agreement_against_direct_formulas() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((64, 10))
    out = ref + rng.standard_normal((64, 10)) * 0.1
    acc = Agreement()
    acc.update(out[:20], ref[:20])
    acc.update(out[20:], ref[20:])
    r = acc.result()
    assert r.top1_agreement == pytest.approx(100 * np.mean(out.argmax(1) == ref.argmax(1)))
    cos = [np.dot(o, f) / np.linalg.norm(o) / np.linalg.norm(f) for o, f in zip(out, ref,
                                                                                 strict=True)]
    assert r.mean_cosine == pytest.approx(np.mean(cos))
    assert r.sqnr_db == pytest.approx(10 * np.log10((ref ** 2).sum() / ((out - ref) ** 2).sum()))
    assert r.max_abs_error == pytest.approx(np.abs(out - ref).max())
    same = Agreement()
    same.update(ref, ref)
    assert same.result().sqnr_db == float("inf")


def test_latency_summary_percentiles() -> None:
    times = [float(k) for k in range(1, 101)]
    s = LatencyStats.from_times(times, warmup=0, batch_size=8)
    assert s.p50_ms == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert s.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert s.throughput == pytest.approx(8 / (s.mean_ms / 1000))
    calls = []
    stats = measure(lambda: calls.append(1), batch_size=1, warmup=3, iterations=10)
    assert len(calls) == 13 and stats.iterations == 10


def test_latency_rounds_give_the_median_and_its_spread() -> None:
    # three rounds: medians 2, 11 and 4 -> p50 = median of medians = 4, spread 2..11;
    # p99 pools the nine runs
    rounds = [[1.0, 2.0, 3.0], [10.0, 11.0, 12.0], [4.0, 4.0, 5.0]]
    s = LatencyStats.from_repeats(rounds, warmup=1, batch_size=4)
    assert (s.p50_ms, s.p50_min_ms, s.p50_max_ms, s.repeats) == (4.0, 2.0, 11.0, 3)
    assert s.iterations == 9 and s.per_sample_ms == 1.0
    assert s.p99_ms == pytest.approx(np.percentile(np.array(rounds).ravel(), 99))
    assert s.mean_ms == pytest.approx(np.mean(rounds))
    calls = []
    timed = measure(lambda: calls.append(1), batch_size=2, warmup=2, iterations=5, repeats=3)
    assert len(calls) == 2 + 15 and timed.repeats == 3 and timed.iterations == 15
    assert timed.p50_min_ms <= timed.p50_ms <= timed.p50_max_ms  # type: ignore[operator]


def test_layer_sqnr_orders_int8_below_fp16(tmp_path: Path) -> None:
    path = small_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    scales = calibrate(path, [{"x": x}], method="minmax").scales
    for label, cfg in (("int8", {}), ("fp16", {"default": "fp16", "default_float": "fp16"})):
        res = quantize_model(onnx.load(str(path)), scales, PrecisionConfig.from_mapping(cfg))
        save_model(res.model, tmp_path / f"{label}.onnx")
    s8 = layer_sqnr(path, tmp_path / "int8.onnx", [{"x": x}])
    s16 = layer_sqnr(path, tmp_path / "fp16.onnx", [{"x": x}])
    assert s8["x"] == float("inf")  # the graph input itself is not changed
    for name in ("c1", "r1", "c2", "logits"):
        assert 15 < s8[name] < s16[name], (name, s8[name], s16[name])
