"""evaluate_model and `quantkit eval` on real ONNX Runtime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.evaluate.run import evaluate_model, load_labels
from tests.builders.cnn import small_cnn


@pytest.fixture()
def d(tmp_path: Path) -> Path:
    small_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    probs = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    labels = probs.argmax(1)
    labels[:10] = (labels[:10] + 1) % 10  # 10 of 40 wrong -> 75 % top-1
    np.save(tmp_path / "labels.npy", labels)
    (tmp_path / "labels.txt").write_text("label\n" + "\n".join(map(str, labels)) + "\n")
    return tmp_path


def test_accuracy_agreement_latency(d: Path) -> None:
    res = evaluate_model(d / "m.onnx", str(d / "x.npy"), labels=load_labels(d / "labels.npy"),
                         reference=d / "m.onnx", batch_size=16, latency_iterations=5)
    assert res.samples == 40 and res.accuracy == pytest.approx(75.0)
    assert res.agreement is not None and res.agreement.top1_agreement == 100.0
    assert res.agreement.sqnr_db == float("inf")
    assert res.latency is not None and res.latency.iterations == 5 * 3  # 3 rounds by default
    assert res.latency.batch_size == 16
    row = res.as_row()
    assert row["backend"] == "onnxruntime" and row["model_bytes"] > 0
    assert np.array_equal(load_labels(d / "labels.txt"), load_labels(d / "labels.npy"))


def test_label_count_mismatch(d: Path) -> None:
    np.save(d / "short.npy", np.zeros(39, dtype=np.int64))
    with pytest.raises(InputError, match="39 labels"):
        evaluate_model(d / "m.onnx", str(d / "x.npy"), labels=load_labels(d / "short.npy"),
                       latency_iterations=0)


def test_cli(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--labels",
                 str(d / "labels.npy"), "--iterations", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["accuracy"] == pytest.approx(75.0) and doc["latency"]["iterations"] == 3 * 3
    code = main(["eval", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--labels",
                 str(d / "nope.npy")])
    assert code == 2 and "--labels" in capsys.readouterr().err


def _int8(d: Path) -> Path:
    from quantkit.capture import calibrate
    from quantkit.model import load_model, save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    scales = calibrate(d / "m.onnx", str(d / "x.npy"), method="minmax", batch_size=8).scales
    save_model(quantize_model(load_model(d / "m.onnx"), scales, PrecisionConfig()).model,
               d / "q.onnx")
    return d / "q.onnx"


def test_latency_is_per_batch_with_its_source(d: Path) -> None:
    res = evaluate_model(d / "m.onnx", str(d / "x.npy"), batch_size=16, latency_iterations=4,
                         latency_repeats=2)
    row = res.as_row()
    assert row["latency_batch"] == 16 and row["latency_source"] == "cpu"
    assert row["latency_target"].startswith("CPU: ")
    assert row["latency_ms_per_sample"] == pytest.approx(row["latency_ms_p50"] / 16)
    assert row["cpu_latency_ms_p50"] == row["latency_ms_p50"]  # the CPU is the only source
    assert res.latency is not None and res.latency.repeats == 2
    assert res.latency.p50_min_ms <= res.latency.p50_ms <= res.latency.p50_max_ms  # type: ignore
    q = evaluate_model(_int8(d), str(d / "x.npy"), batch_size=8, latency_iterations=2)
    assert q.as_row()["latency_source"] == "cpu-fake-quant"


def test_sqnr_compares_the_logits_like_the_sweep(d: Path) -> None:
    """small_cnn ends in a Softmax: eval and sweep both compare its input, the logits."""
    from quantkit.sweep import Evaluator

    q = _int8(d)
    res = evaluate_model(q, str(d / "x.npy"), reference=d / "m.onnx", batch_size=40,
                         latency_iterations=0)
    assert res.sqnr_tensor == "logits" and res.as_row()["sqnr_tensor"] == "logits"
    # by hand: 10 log10(sum ref^2 / sum (ref - q)^2) over the logits
    import onnx

    def logits(path: Path) -> np.ndarray:
        m = onnx.load(str(path))
        m.graph.output.append(onnx.ValueInfoProto(name="logits"))
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(["logits"], {"x": np.load(d / "x.npy")})[0].astype(np.float64)

    ref, got = logits(d / "m.onnx"), logits(q)
    expected = 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum())
    assert res.agreement is not None
    assert res.agreement.sqnr_db == pytest.approx(expected, rel=1e-4)
    ev = Evaluator(str(d / "m.onnx"), [{"x": np.load(d / "x.npy")}], None, None)
    assert ev.compare == "logits"
    assert ev.score(str(q)).sqnr_db == pytest.approx(res.agreement.sqnr_db, rel=1e-6)


def test_cli_table_says_per_batch_and_source(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", str(_int8(d)), "--data", str(d / "x.npy"), "--batch-size", "8",
                 "--iterations", "2", "--repeats", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "latency p50 ms (per batch of 8)" in out and "latency p50 ms per sample" in out
    assert "cpu-fake-quant, CPU: " in out and ", batch 8" in out
    assert "says nothing about a TensorRT engine's speed" in out
    code = main(["eval", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--engine",
                 str(d / "none.engine")])
    assert code == 2 and "no such file" in " ".join(capsys.readouterr().err.split())


@pytest.mark.gpu
def test_engine_is_measured_on_the_gpu(d: Path) -> None:  # pragma: no cover - needs a GPU
    from quantkit.backends import BuildOptions, get_backend

    rtx = get_backend("tensorrt-rtx")
    if not rtx.available():
        pytest.skip("needs quantkit[rtx]")
    rtx.build(d / "m.onnx", d / "m.engine", BuildOptions(shapes={"x": (8, 3, 8, 8)}))
    res = evaluate_model(d / "m.onnx", str(d / "x.npy"), batch_size=8, latency_iterations=5,
                         engine=d / "m.engine")
    row = res.as_row()
    assert row["latency_source"] == "measured" and row["latency_target"]
    assert res.latency is not None and res.latency.timer == "cuda-events"
    assert row["cpu_latency_ms_p50"] is not None


def test_float_class_labels(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npy"
    np.save(whole, np.array([0.0, 2.0, 1.0], np.float32))
    assert load_labels(whole).tolist() == [0, 2, 1]
    assert load_labels(whole).dtype.kind == "i"
    frac = tmp_path / "frac.npy"
    np.save(frac, np.array([0.0, 1.5, 1.0], np.float32))
    with pytest.raises(InputError, match=r"frac.npy: holds non-integer values \(e.g. 1.5\)"):
        load_labels(frac)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([0.0, np.nan], np.float32))
    with pytest.raises(InputError, match="non-integer"):
        load_labels(nan)
