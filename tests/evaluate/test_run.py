"""evaluate_model and `quantkit eval` on real ONNX Runtime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _models import small_cnn

from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.evaluate.run import evaluate_model, load_labels


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
    assert res.latency is not None and res.latency.iterations == 5
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
    assert doc["accuracy"] == pytest.approx(75.0) and doc["latency"]["iterations"] == 3
    code = main(["eval", str(d / "m.onnx"), "--data", str(d / "x.npy"), "--labels",
                 str(d / "nope.npy")])
    assert code == 2 and "--labels" in capsys.readouterr().err
