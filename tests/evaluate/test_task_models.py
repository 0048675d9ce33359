"""Task metrics on real ONNX Runtime runs: a detector-like head, a time-major OCR head, plugins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.cli.main import main
from quantkit.evaluate.run import evaluate_model
from tests.builders.tasks import ANCHORS, detector


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from quantkit.capture import calibrate
    from quantkit.model import load_model, save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    d = tmp_path_factory.mktemp("det")
    fp32 = detector(d / "det.onnx")
    x = np.random.default_rng(0).random((16, 8, 1, ANCHORS)).astype(np.float32)
    np.save(d / "x.npy", x)
    scales = calibrate(fp32, str(d / "x.npy"), method="minmax", batch_size=8).scales
    save_model(quantize_model(load_model(fp32), scales, PrecisionConfig()).model, d / "q.onnx")
    return {"fp32": fp32, "int8": d / "q.onnx", "x": d / "x.npy", "dir": d}


def test_detection_metric_catches_class_damage_that_cosine_hides(det: dict[str, Path]) -> None:
    import onnxruntime as ort

    res = evaluate_model(det["int8"], str(det["x"]), reference=det["fp32"],
                         metric="detection", latency_iterations=0, batch_size=8)
    a = res.agreement
    assert a is not None and res.metric_against == "fp32" and res.samples == 16
    assert a.mean_cosine > 0.999 and a.sqnr_db > 25  # the flattened view looks fine
    assert res.accuracy is not None and res.accuracy < 75  # half the classes flipped
    assert res.details["recall"] < 75
    # independently: the class-score rows themselves are wrecked
    x = np.load(det["x"])
    ref = ort.InferenceSession(str(det["fp32"])).run(None, {"x": x})[0]
    q = ort.InferenceSession(str(det["int8"])).run(None, {"x": x})[0]
    cls_sqnr = 10 * np.log10((ref[:, 4:] ** 2).sum() / ((q[:, 4:] - ref[:, 4:]) ** 2).sum())
    assert cls_sqnr < 10
    assert res.outputs["output0"].sqnr_db == pytest.approx(a.sqnr_db)
    same = evaluate_model(det["fp32"], str(det["x"]), reference=det["fp32"],
                          metric="detection-map", latency_iterations=0)
    assert same.accuracy == 100.0


def _ocr(path: Path, bias: float = 0.0) -> Path:
    """x [N, T, 4] (+ bias on class 2) -> Transpose -> logits [T, N, 4]; dictionary a, b, c."""
    b = np.array([0, 0, bias, 0], np.float32)
    nodes = [helper.make_node("Add", ["x", "b"], ["s"], name="add"),
             helper.make_node("Transpose", ["s"], ["logits"], name="tnc", perm=[1, 0, 2])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [5, "N", 4])
    model = helper.make_model(helper.make_graph(nodes, "ocr", [x], [y],
                                                [numpy_helper.from_array(b, "b")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"character": "a\nb\nc"})
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def ocr(tmp_path: Path) -> dict[str, Path]:
    # paths: [1,1,_,2,2] -> "ab"; [3,_,3,_,_] -> "cc"; all blank -> ""; blanks score 0.6
    x = np.zeros((3, 5, 4), np.float32)
    for i, path in enumerate([[1, 1, 0, 2, 2], [3, 0, 3, 0, 0], [0, 0, 0, 0, 0]]):
        for t, k in enumerate(path):
            x[i, t, k] = 0.6 if k == 0 else 1.0
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.txt").write_text("ab\ncc\n\n", encoding="utf-8")
    # +0.7 on class 2 turns every blank step into class 2 ("b"):
    # "ab" stays "ab"; "cc" -> "cbcb"; "" -> "b"
    return {"fp32": _ocr(tmp_path / "ocr.onnx"), "bad": _ocr(tmp_path / "bad.onnx", 0.7),
            "x": tmp_path / "x.npy", "labels": tmp_path / "labels.txt", "dir": tmp_path}


def test_time_major_ocr_counts_samples_not_steps(ocr: dict[str, Path]) -> None:
    res = evaluate_model(ocr["bad"], str(ocr["x"]), reference=ocr["fp32"], metric="ctc-exact",
                         latency_iterations=0)
    assert res.samples == 3 and res.outputs["logits"].samples == 3
    assert res.accuracy == pytest.approx(100 / 3)  # only "ab" decodes the same
    # class sequences: 0 edits of 2, 2 insertions of 2, 1 insertion of 0 -> 3 / 4
    assert res.details["cer"] == pytest.approx(75.0)
    ref = np.load(ocr["x"])
    ref_sqnr = 10 * np.log10((ref ** 2).sum() / (0.7 ** 2 * ref.size / 4))
    assert res.outputs["logits"].sqnr_db == pytest.approx(ref_sqnr)


def test_cer_against_text_labels_on_a_time_major_output(ocr: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    args = ["--data", str(ocr["x"]), "--labels", str(ocr["labels"]), "--metric",
            "cer:layout=TNC", "--iterations", "0", "--json"]
    assert main(["eval", str(ocr["fp32"]), *args]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.0
    assert main(["eval", str(ocr["bad"]), *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    # "ab" vs "ab": 0; "cbcb" vs "cc": 2; "b" vs "": 1 -> 3 edits / 4 reference characters
    assert doc["accuracy"] == pytest.approx(75.0) and doc["samples"] == 3
    assert doc["details"]["exact_match"] == pytest.approx(100 / 3)


PLUGIN = '''
import numpy as np
from quantkit.evaluate import Metric


class Within(Metric):
    """Percent of samples whose largest absolute difference from FP32 is at most tol."""

    needs_labels = False

    def __init__(self, tol: float = 0.5) -> None:
        self.tol, self.hits, self.n = tol, 0, 0

    def reference_targets(self, reference):
        return reference

    def update(self, outputs, targets):
        diff = np.abs(np.asarray(outputs) - np.asarray(targets)).reshape(len(outputs), -1)
        self.hits += int((diff.max(axis=1) <= self.tol).sum())
        self.n += len(outputs)

    def result(self):
        return 100.0 * self.hits / self.n
'''


def test_plugin_metric_from_a_file_through_the_cli(ocr: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plugin = ocr["dir"] / "within.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    base = ["eval", str(ocr["bad"]), "--data", str(ocr["x"]), "--reference", str(ocr["fp32"]),
            "--iterations", "0", "--json", "--metric"]
    # every sample differs by exactly 0.7 (the class-2 bias), counted over N=3, not T*N
    for tol, want in ((0.8, 100.0), (0.5, 0.0)):
        assert main([*base, f"{plugin}:Within:tol={tol}"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["metric"] == "Within" and doc["accuracy"] == want
        assert doc["samples"] == 3
    assert main([*base, f"{plugin}:Nope"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: --metric:" in err and "no Metric subclass named 'Nope'" in err
    assert "Traceback" not in err


def test_the_sweep_evaluator_scores_time_major_outputs_the_same(ocr: dict[str, Path]) -> None:
    from quantkit.sweep import Evaluator

    x = np.load(ocr["x"])
    ev = Evaluator(str(ocr["fp32"]), [{"x": x[:2]}, {"x": x[2:]}], None, "ctc-exact")
    assert ev.samples == 3 and ev.reference_score().accuracy == 100.0
    s = ev.score(str(ocr["bad"]))
    assert s.accuracy == pytest.approx(100 / 3) and dict(s.details)["cer"] == pytest.approx(75)
    # T=5 steps over N=2 and N=1 samples: the same SQNR eval reports for the output
    ref_sqnr = 10 * np.log10((x ** 2).sum() / (0.7 ** 2 * x.size / 4))
    assert s.outputs[0][0] == "logits" and s.outputs[0][1] == pytest.approx(ref_sqnr)


def _nms_like(path: Path, threshold: float) -> Path:
    """x [1, K, 6] (x1, y1, x2, y2, score, class) -> the rows scoring above ``threshold``.

    Three outputs whose length depends on the data, as after NMS: boxes [1, k, 4], scores
    [1, k], classes [1, k] (int64).
    """
    def const(name: str, values: list[int] | float) -> onnx.TensorProto:
        arr = np.array(values, np.float32 if isinstance(values, float) else np.int64)
        return numpy_helper.from_array(arr, name)

    inits = [const("thr", threshold), const("z", [0]), const("f", [4]), const("s", [5]),
             const("c", [6]), const("ax2", [2]), const("ax0", [0])]
    nodes = [
        helper.make_node("Slice", ["x", "z", "f", "ax2"], ["b"]),
        helper.make_node("Slice", ["x", "f", "s", "ax2"], ["s3"]),
        helper.make_node("Slice", ["x", "s", "c", "ax2"], ["c3"]),
        helper.make_node("Squeeze", ["s3", "ax2"], ["sc"]),
        helper.make_node("Squeeze", ["c3", "ax2"], ["cl"]),
        helper.make_node("Greater", ["sc", "thr"], ["keep2"]),
        helper.make_node("Squeeze", ["keep2", "ax0"], ["keep"]),
        helper.make_node("Compress", ["b", "keep"], ["det_boxes"], axis=1),
        helper.make_node("Compress", ["sc", "keep"], ["det_scores"], axis=1),
        helper.make_node("Compress", ["cl", "keep"], ["clf"], axis=1),
        helper.make_node("Cast", ["clf"], ["det_classes"], to=TensorProto.INT64),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])
    outs = [helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, "k", 4]),
            helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, "k"]),
            helper.make_tensor_value_info("det_classes", TensorProto.INT64, [1, "k"])]
    model = helper.make_model(helper.make_graph(nodes, "nms", [x], outs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_nms_outputs_of_varying_length_are_scored_by_the_metric(tmp_path: Path) -> None:
    from quantkit.errors import InputError
    from quantkit.sweep import Evaluator

    rows = [[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.5, 1], [40, 40, 50, 50, 0.4, 0],
            [60, 60, 70, 70, 0.2, 1]]
    x = np.array([rows, rows], np.float32)  # 2 images, one per batch (the model's batch is 1)
    ref, cand = _nms_like(tmp_path / "ref.onnx", 0.3), _nms_like(tmp_path / "cand.onnx", 0.6)
    ev = Evaluator(str(ref), [{"x": x[:1]}, {"x": x[1:]}], None, "detection:format=nms")
    s = ev.score(str(cand))
    # per image FP32 keeps 3 boxes, the candidate 1 (the 0.9 one): TP 1, FP 0, FN 2
    assert s.accuracy == pytest.approx(100 * 2 / (2 + 0 + 2))
    assert np.isnan(s.sqnr_db) and s.outputs == ()  # no element-wise comparison possible
    plain = Evaluator(str(ref), [{"x": x[:1]}], None, None)
    with pytest.raises(InputError, match="shape differs from the FP32 model's"):
        plain.score(str(cand))


def test_box_labels_and_bad_metric_options_through_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.5, 1], [40, 40, 50, 50, 0.4, 0],
            [60, 60, 70, 70, 0.2, 1]]
    np.save(tmp_path / "x.npy", np.array([rows, rows], np.float32))
    labels = [[[0, 0, 10, 10, 0], [20, 20, 30, 30, 1]]] * 2
    (tmp_path / "boxes.json").write_text(json.dumps(labels))
    base = ["--data", str(tmp_path / "x.npy"), "--batch-size", "1", "--labels",
            str(tmp_path / "boxes.json"), "--iterations", "0", "--json"]
    for threshold, f1 in ((0.3, 100 * 4 / 5),    # TP 2, FP 1 (the 0.4 box), FN 0
                          (0.6, 100 * 2 / 3)):   # TP 1, FP 0, FN 1
        model = _nms_like(tmp_path / f"m{threshold}.onnx", threshold)
        assert main(["eval", str(model), *base, "--metric", "detection:format=nms"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["accuracy"] == pytest.approx(f1) and doc["metric_against"] == "labels"
    code = main(["eval", str(model), *base, "--metric", "detection:score=abc"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert "--metric detection: option score='abc' is not a float" in " ".join(err.split())
    (tmp_path / "bad.json").write_text(json.dumps([[[0, 0, 10, 10]]]))
    code = main(["eval", str(model), *base[:4], "--labels", str(tmp_path / "bad.json"),
                 "--metric", "detection"])
    assert code == 2 and "[x1, y1, x2, y2, class]" in capsys.readouterr().err
