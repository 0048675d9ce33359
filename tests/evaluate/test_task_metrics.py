"""Detection, OCR and spec handling of the task metrics, against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit.errors import InputError
from quantkit.evaluate.base import batch_axis_of, parse_metric
from quantkit.evaluate.detection import (
    Detections,
    average_precision,
    iou_matrix,
    match,
    nms,
)
from quantkit.evaluate.metrics import OutputsAgreement, create_metric
from quantkit.evaluate.ocr import ctc_greedy


def test_iou_by_hand() -> None:
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = np.array([[1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 2]])
    got = iou_matrix(a, b)
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7
    assert got[0, 0] == pytest.approx(1 / 7)
    assert got[0, 1] == 0.0 and got[0, 2] == pytest.approx(1.0)
    # [0,0,1,1] inside [0,0,2,2]: 1 / 4
    assert got[1, 2] == pytest.approx(0.25)
    assert iou_matrix(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))[0, 0] == 0.0


def _det(rows: list[list[float]]) -> Detections:
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return Detections(arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))


def test_greedy_matching_takes_best_score_first_and_respects_class() -> None:
    target = Detections.of([[0, 0, 10, 10, 0], [20, 20, 30, 30, 1]])
    pred = _det([[0, 0, 10, 9, 0.6, 0],      # IoU 0.9 with target 0
                 [0, 0, 10, 10, 0.9, 0],     # exact, higher score: takes target 0 first
                 [20, 20, 30, 30, 0.8, 0],   # right place, wrong class
                 [21, 21, 30, 30, 0.7, 1]])  # IoU 81/100 with target 1, same class
    tp = match(pred, target, 0.5)
    assert tp.tolist() == [False, True, False, True]
    m = create_metric("detection")
    m.update([pred], [target])
    # TP 2, FP 2, FN 0: F1 = 2*2 / (2*2 + 2 + 0)
    assert m.result() == pytest.approx(100 * 4 / 6)
    d = m.details()
    assert d["precision"] == pytest.approx(50.0) and d["recall"] == pytest.approx(100.0)
    strict = create_metric("detection:iou=0.95")
    strict.update([pred], [target])  # 81/100 < 0.95: the class-1 box no longer matches
    assert strict.result() == pytest.approx(100 * 2 / (2 + 3 + 1))


def test_average_precision_by_hand() -> None:
    # 2 targets; by score: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    # class 0: that AP; class 1: one target found first -> AP 1; mAP is their mean
    m = create_metric("detection-map")
    target = Detections.of([[0, 0, 1, 1, 0], [5, 5, 6, 6, 0], [10, 10, 11, 11, 1]])
    pred = _det([[0, 0, 1, 1, 0.9, 0], [2, 2, 3, 3, 0.8, 0], [5, 5, 6, 6, 0.7, 0],
                 [10, 10, 11, 11, 0.5, 1]])
    m.update([pred], [target])
    assert m.result() == pytest.approx(100 * (0.5 + 0.5 * 2 / 3 + 1.0) / 2)


def test_nms_keeps_the_best_box_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.3])
    classes = np.array([0, 0, 1, 0])
    # box 1 (0.9) suppresses box 0 (IoU 90/110 > 0.45); box 2 is another class
    assert nms(boxes, scores, classes, 0.45, 300).tolist() == [1, 2, 3]
    assert nms(boxes, scores, classes, 0.45, 2).tolist() == [1, 2]


def _yolov8_head() -> np.ndarray:
    """[1, 4 + 2, 8]: anchors as columns (cx, cy, w, h, score class 0, score class 1)."""
    cols = [[5, 5, 4, 4, 0.9, 0.1],     # kept: box 3..7, class 0
            [5.2, 5, 4, 4, 0.8, 0.0],   # suppressed by anchor 0 (same class, IoU ~0.9)
            [20, 20, 2, 2, 0.1, 0.6],   # kept: class 1
            [30, 30, 2, 2, 0.2, 0.1]]   # under the 0.25 score threshold
    cols += [[40, 40, 2, 2, 0.0, 0.0]] * 4  # more anchors than channels, as real heads have
    return np.asarray(cols, dtype=np.float32).T[None]


def test_yolov8_and_yolov5_decoding() -> None:
    m = create_metric("detection:format=yolov8")
    dets = m.prepare({"out": _yolov8_head()}, "out", 1)
    assert len(dets) == 1
    assert dets[0].boxes.tolist() == [[3, 3, 7, 7], [19, 19, 21, 21]]
    assert dets[0].classes.tolist() == [0, 1]
    assert dets[0].scores == pytest.approx([0.9, 0.6])
    auto = create_metric("detection").prepare({"out": _yolov8_head()}, "out", 1)
    assert auto[0].boxes.tolist() == dets[0].boxes.tolist()
    # yolov5 rows: box, objectness, class scores; score = objectness * best class score
    rows = np.array([[[5, 5, 4, 4, 0.5, 0.9, 0.1],     # 0.45: kept
                      [20, 20, 2, 2, 0.5, 0.2, 0.4],   # 0.20: dropped
                      [9, 9, 2, 2, 1.0, 0.0, 0.3]]],   # 0.30, class 1: kept
                    dtype=np.float32)
    v5 = create_metric("detection:format=yolov5").prepare({"out": rows}, "out", 1)[0]
    assert v5.scores == pytest.approx([0.45, 0.3]) and v5.classes.tolist() == [0, 1]
    assert v5.boxes.tolist() == [[3, 3, 7, 7], [8, 8, 10, 10]]


def test_nms_outputs_are_read_by_name() -> None:
    outs = {"det_boxes": np.array([[[0, 0, 4, 4], [1, 1, 2, 2], [0, 0, 0, 0]]], np.float32),
            "det_scores": np.array([[0.9, 0.5, 0.0]], np.float32),
            "det_classes": np.array([[3, 1, 0]], np.int64)}
    m = create_metric("detection:format=nms")
    d = m.prepare(outs, "det_boxes", 1)[0]
    assert d.classes.tolist() == [3, 1] and d.boxes.tolist() == [[0, 0, 4, 4], [1, 1, 2, 2]]
    auto = create_metric("detection").prepare(outs, "det_boxes", 1)[0]  # found by name
    assert auto.classes.tolist() == [3, 1]
    with pytest.raises(InputError, match="boxes=, scores=, classes="):
        m.prepare({"a": outs["det_boxes"], "b": outs["det_scores"]}, "a", 1)
    same = create_metric("detection:format=nms")
    same.update(m.prepare(outs, "det_boxes", 1), same.reference_targets(
        same.prepare(outs, "det_boxes", 1)))
    assert same.result() == 100.0


def test_ctc_greedy_decoding_by_hand() -> None:
    def scores(path: list[int], classes: int = 4) -> np.ndarray:
        s = np.zeros((len(path), classes), np.float32)
        s[np.arange(len(path)), path] = 1.0
        return s

    batch = np.stack([scores([1, 1, 0, 1, 2, 2]), scores([0, 3, 3, 3, 0, 0])])
    assert ctc_greedy(batch) == [(1, 1, 2), (3,)]
    # time-major [T, N, C]: declared, or detected (T=6 differs from N=2)
    tnc = np.swapaxes(batch, 0, 1)
    for spec in ("ctc-exact:layout=TNC", "ctc-exact"):
        m = create_metric(spec)
        prepared = m.prepare({"o": tnc}, "o", 2)
        assert ctc_greedy(prepared) == [(1, 1, 2), (3,)]
    # against the FP32 sequences: sample 0 differs by one substitution out of 3 classes
    other = np.stack([scores([1, 1, 0, 1, 3, 3]), scores([0, 3, 3, 3, 0, 0])])
    m = create_metric("ctc-exact")
    m.update(other, m.reference_targets(batch))
    assert m.result() == pytest.approx(50.0)
    assert m.details()["cer"] == pytest.approx(100 * 1 / 4)
    cer = create_metric("cer:layout=TNC")
    cer.update(cer.prepare({"o": np.swapaxes(other, 0, 1)}, "o", 2),
               cer.reference_targets(batch))
    assert cer.result() == pytest.approx(25.0) and not cer.higher_is_better


def test_batch_axis_and_per_output_agreement_count_samples() -> None:
    assert batch_axis_of((7, 3, 5), 3) == 1
    assert batch_axis_of((3, 7, 5), 3) == 0
    assert batch_axis_of((7, 3, 5), 3, declared=2) == 2
    rng = np.random.default_rng(0)
    ref = {"tnc": rng.standard_normal((7, 3, 5)), "plain": rng.standard_normal((3, 4))}
    out = {"tnc": ref["tnc"] + 0.1, "plain": ref["plain"]}
    agree = OutputsAgreement()
    agree.update(out, ref, batch=3)
    res = agree.result()
    assert res["tnc"].samples == 3 and res["plain"].samples == 3
    noise = 0.01 * ref["tnc"].size
    assert res["tnc"].sqnr_db == pytest.approx(10 * np.log10((ref["tnc"] ** 2).sum() / noise))
    assert res["plain"].sqnr_db == float("inf")


def test_specs_parse_and_bad_options_are_named(tmp_path: Path) -> None:
    s = parse_metric("detection:format=yolov8,score=0.3,iou=0.6")
    assert s.name == "detection" and dict(s.options) == {"format": "yolov8", "score": 0.3,
                                                         "iou": 0.6}
    assert parse_metric({"name": "cer", "layout": "TNC"}) == parse_metric("cer:layout=TNC")
    p = parse_metric("my/metric.py:Mine:k=2")
    assert p.plugin == "my/metric.py:Mine" and dict(p.options) == {"k": 2}
    with pytest.raises(InputError, match="unknown option 'scor'"):
        create_metric("detection:scor=0.3")
    with pytest.raises(InputError, match="score='high' is not a float"):
        create_metric("detection:score=high")
    with pytest.raises(InputError, match="not KEY=VALUE"):
        parse_metric("detection:yolov8")
    with pytest.raises(InputError, match="'nope' is unknown"):
        create_metric("nope")
    with pytest.raises(InputError, match="does not exist"):
        create_metric(f"{tmp_path / 'missing.py'}:Mine")
    with pytest.raises(InputError, match=r"iou=1.5 is not an IoU in \(0, 1\]"):
        create_metric("detection:iou=1.5")
    with pytest.raises(InputError, match="layout 'XY'"):
        create_metric("cer:layout=XY")
    assert create_metric("top1:batch_axis=1").batch_axis == 1


def test_installed_entry_point_metric_is_found_by_name(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from quantkit.evaluate import base

    (tmp_path / "qk_ep_metric.py").write_text(
        "from quantkit.evaluate import Metric\n\n"
        "class Count(Metric):\n"
        "    needs_labels = False\n"
        "    def __init__(self):\n"
        "        self.n = 0\n"
        "    def reference_targets(self, reference):\n"
        "        return reference\n"
        "    def update(self, outputs, targets):\n"
        "        self.n += len(outputs)\n"
        "    def result(self):\n"
        "        return float(self.n)\n", encoding="utf-8")
    dist = tmp_path / "qk_ep_metric-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qk-ep-metric\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[quantkit.metrics]\nsamples = qk_ep_metric:Count\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_METRICS", dict(base._METRICS))
    monkeypatch.setattr(base, "_ENTRY_POINTS_LOADED", False)
    assert "samples" in base.available_metrics()
    m = create_metric("samples")
    m.update(np.zeros((4, 2)), None)
    assert m.name == "samples" and m.result() == 4.0


def test_topk_and_cosine_score_against_fp32_without_labels() -> None:
    ref = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 1.0]])
    out = np.array([[3.0, 1.0, 2.0], [0.0, 0.0, 2.0]])
    top1 = create_metric("top1")
    top1.update(out, top1.reference_targets(ref))  # FP32 classes 1 and 2; out picks 0 and 2
    assert top1.result() == pytest.approx(50.0)
    top2 = create_metric("top5")  # k=5 over 3 classes: always a hit
    top2.update(out, top2.reference_targets(ref))
    assert top2.result() == 100.0
    cos = create_metric("cosine")
    cos.update(out, cos.reference_targets(ref))
    # (3 + 3 + 4) / 14 for the first sample, 1 for the second
    assert cos.result() == pytest.approx((10 / 14 + 1.0) / 2)
