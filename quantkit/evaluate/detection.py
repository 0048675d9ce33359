"""Detection metrics: decode YOLO-family outputs, match boxes by IoU and class, F1 and mAP.

Decoding (option ``format``):

* ``yolov8``: a raw head ``[N, 4 + C, A]`` -- per anchor a box ``cx, cy, w, h`` and C class
  scores, no objectness (YOLOv8 / YOLO11 exports);
* ``yolov5``: ``[N, A, 5 + C]`` -- box, objectness, C class scores; a box's score is
  objectness x best class score (YOLOv5 / YOLOX exports);
* ``nms``: outputs already filtered by NMS in the model: a boxes tensor ``[N, K, 4]``
  (``x1, y1, x2, y2``), a scores tensor ``[N, K]`` and a classes tensor ``[N, K]``, named by
  the options ``boxes`` / ``scores`` / ``classes`` (default: the outputs whose names contain
  ``box``, ``score`` and ``class`` or ``label``);
* ``auto`` (default): ``nms`` when the model has the three outputs (found by name as above, or
  named by the options), else ``yolov8`` when the output's middle axis is shorter than its
  last, else ``yolov5``.

Raw heads keep the boxes whose score is at least ``score`` and run class-aware greedy NMS at
``nms_iou`` (in numpy), at most ``max_det`` boxes per image. ``box`` says how raw boxes are
written (``xywh``, the default for raw heads, or ``xyxy``, the default for NMS outputs).

Matching: per image and class, predictions in decreasing score order each take the unmatched
target box of the same class with the highest IoU, when that IoU is at least ``iou``. Targets
are the FP32 model's detections (no labels needed) or labels: a JSON file with one list per
image of ``[x1, y1, x2, y2, class]`` boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantkit.errors import InputError
from quantkit.evaluate.base import Metric, register_metric, typed_options


@dataclass(frozen=True)
class DetectionOptions:
    """Decoding and matching settings of the detection metrics (see the module docstring)."""

    format: str = "auto"
    score: float = 0.25
    iou: float = 0.5
    nms_iou: float = 0.45
    max_det: int = 300
    box: str = "auto"
    boxes: str | None = None
    scores: str | None = None
    classes: str | None = None


@dataclass
class Detections:
    """The boxes of one image: ``boxes`` [K, 4] as x1, y1, x2, y2, ``scores`` [K], ``classes``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def of(cls, rows: Any) -> Detections:
        """From labels: ``[[x1, y1, x2, y2, class], ...]`` (score 1)."""
        if isinstance(rows, Detections):
            return rows
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5) if len(rows) else \
            np.zeros((0, 5))
        return cls(arr[:, :4], np.ones(len(arr)), arr[:, 4].astype(np.int64))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [K, 4] with every box of ``b`` [M, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float,
        max_det: int) -> np.ndarray:
    """Indices kept by class-aware greedy NMS, best score first, at most ``max_det``."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order) and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        same = classes[rest] == classes[i]
        overlap = iou_matrix(boxes[i][None], boxes[rest])[0] > iou
        order = rest[~(same & overlap)]
    return np.asarray(keep, dtype=np.int64)


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """Centre/size boxes to corner boxes."""
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def match(pred: Detections, target: Detections, iou: float) -> np.ndarray:
    """Per prediction (in ``pred``'s order), whether it matches a target (greedy by score)."""
    tp = np.zeros(len(pred.scores), dtype=bool)
    if not len(pred.scores) or not len(target.classes):
        return tp
    ious = iou_matrix(pred.boxes, target.boxes)
    ious[pred.classes[:, None] != target.classes[None, :]] = -1.0
    taken = np.zeros(len(target.classes), dtype=bool)
    for i in np.argsort(-pred.scores, kind="stable"):
        cand = np.where(taken, -1.0, ious[i])
        j = int(cand.argmax())
        if cand[j] >= iou:
            taken[j] = True
            tp[i] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, targets: int) -> float:
    """Area under the precision envelope over recall (all-point interpolation), in [0, 1]."""
    if targets == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(hits), np.cumsum(1.0 - hits)
    recall = ctp / targets
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    r = np.concatenate([[0.0], recall])
    p = np.concatenate([[1.0], precision])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the envelope: best precision at recall >= r
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


class _Detection(Metric):
    """Shared decoding, matching and counting of the detection metrics."""

    needs_labels = False

    def __init__(self, **options: Any) -> None:
        self.opts = typed_options(DetectionOptions, options, f"metric {self.name}")
        if self.opts.format not in ("auto", "yolov8", "yolov5", "nms"):
            raise InputError(f"metric {self.name}: format {self.opts.format!r} is not yolov8 "
                             "([N, 4+C, A]), yolov5 ([N, A, 5+C]), nms (boxes, scores, classes "
                             "outputs) or auto.")
        for key in ("iou", "nms_iou"):
            if not 0 < getattr(self.opts, key) <= 1:
                raise InputError(f"metric {self.name}: {key}={getattr(self.opts, key)} is not "
                                 "an IoU in (0, 1].")
        if self.opts.max_det < 1:
            raise InputError(f"metric {self.name}: max_det={self.opts.max_det} must be >= 1.")
        if self.opts.box not in ("auto", "xywh", "xyxy"):
            raise InputError(f"metric {self.name}: box {self.opts.box!r} is not xywh, xyxy or "
                             "auto (xywh for raw heads, xyxy for NMS outputs).")
        self.tp = self.fp = self.fn = 0
        self.per_class: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.targets: dict[int, int] = {}

    # -- decoding -----------------------------------------------------------------------
    def _nms_names(self, names: Sequence[str]) -> tuple[str, str, str] | None:
        o = self.opts

        def pick(given: str | None, keys: tuple[str, ...]) -> str | None:
            if given is not None:
                if given not in names:
                    raise InputError(f"metric {self.name}: output {given!r} does not exist; "
                                     f"the model's outputs are {', '.join(names)}.")
                return given
            hits = [n for n in names if any(k in n.lower() for k in keys)]
            return hits[0] if len(hits) == 1 else None

        found = (pick(o.boxes, ("box",)), pick(o.scores, ("score", "conf")),
                 pick(o.classes, ("class", "label")))
        if all(found):
            return found  # type: ignore[return-value]
        if o.format == "nms":
            raise InputError(f"metric {self.name}: format nms needs a boxes, a scores and a "
                             f"classes output; the model's outputs are {', '.join(names)}; "
                             "name them with the options boxes=, scores=, classes=.")
        return None

    def prepare(self, outputs: Mapping[str, np.ndarray], output: str, batch: int) -> Any:
        """The decoded detections of each image of the batch."""
        o = self.opts
        names = self._nms_names(list(outputs)) if o.format == "nms" or (
            o.format == "auto" and len(outputs) > 1) else None
        if names is not None:
            return self._from_nms(*(np.asarray(outputs[n]) for n in names))
        arr = np.asarray(outputs[output], dtype=np.float64)
        if arr.ndim != 3:
            raise InputError(f"metric {self.name}: the output {output!r} has shape "
                             f"{list(arr.shape)}; a raw YOLO head is [N, 4+C, A] (format "
                             "yolov8) or [N, A, 5+C] (format yolov5); for NMS outputs give "
                             "format=nms.")
        fmt = o.format if o.format != "auto" else (
            "yolov8" if arr.shape[1] < arr.shape[2] else "yolov5")
        rows = np.swapaxes(arr, 1, 2) if fmt == "yolov8" else arr
        first = 4 if fmt == "yolov8" else 5
        if rows.shape[2] < first + (0 if fmt == "yolov5" else 1):
            raise InputError(f"metric {self.name}: the output {output!r} {list(arr.shape)} is "
                             f"too narrow for format {fmt}.")
        return [self._decode(r, fmt) for r in rows]

    def _decode(self, rows: np.ndarray, fmt: str) -> Detections:
        o = self.opts
        if fmt == "yolov8":
            cls_scores = rows[:, 4:]
            classes, scores = cls_scores.argmax(axis=1), cls_scores.max(axis=1)
        elif rows.shape[1] > 5:
            cls_scores = rows[:, 5:]
            classes, scores = cls_scores.argmax(axis=1), rows[:, 4] * cls_scores.max(axis=1)
        else:  # one class: objectness only
            classes, scores = np.zeros(len(rows), dtype=np.int64), rows[:, 4]
        keep = scores >= o.score
        boxes = rows[keep, :4]
        boxes = boxes if o.box == "xyxy" else xywh_to_xyxy(boxes)
        scores, classes = scores[keep], classes[keep].astype(np.int64)
        idx = nms(boxes, scores, classes, o.nms_iou, o.max_det)
        return Detections(boxes[idx], scores[idx], classes[idx])

    def _from_nms(self, boxes: np.ndarray, scores: np.ndarray,
                  classes: np.ndarray) -> list[Detections]:
        n = len(boxes)
        b = np.asarray(boxes, dtype=np.float64).reshape(n, -1, 4)
        s = np.asarray(scores, dtype=np.float64).reshape(n, -1)
        c = np.asarray(classes).reshape(n, -1).astype(np.int64)
        if self.opts.box == "xywh":
            b = xywh_to_xyxy(b.reshape(-1, 4)).reshape(n, -1, 4)
        out = []
        for i in range(n):
            keep = s[i] >= self.opts.score
            out.append(Detections(b[i][keep], s[i][keep], c[i][keep]))
        return out

    def reference_targets(self, reference: Any) -> Any:
        """The FP32 model's detections are the targets."""
        return reference

    # -- accumulation -------------------------------------------------------------------
    def update(self, outputs: Any, targets: Any) -> None:
        """Fold one batch of decoded detections against targets (detections or label rows)."""
        preds, refs = list(outputs), list(targets)
        if len(preds) != len(refs):
            raise InputError(f"metric {self.name}: {len(refs)} label entries for a batch of "
                             f"{len(preds)} images; give one list of boxes per image.")
        for p, t in zip(preds, refs, strict=True):
            pred, target = Detections.of(p), Detections.of(t)
            tp = match(pred, target, self.opts.iou)
            self.tp += int(tp.sum())
            self.fp += int((~tp).sum())
            self.fn += len(target.classes) - int(tp.sum())
            for k in np.unique(np.concatenate([pred.classes, target.classes])):
                sel = pred.classes == k
                self.per_class.setdefault(int(k), []).append((pred.scores[sel], tp[sel]))
                self.targets[int(k)] = self.targets.get(int(k), 0) + \
                    int((target.classes == k).sum())

    def f1(self) -> float:
        """F1 of the matched boxes in percent (100 when neither side has a box)."""
        den = 2 * self.tp + self.fp + self.fn
        return 100.0 * 2 * self.tp / den if den else 100.0

    def mean_ap(self) -> float:
        """Mean over classes with target boxes of the average precision, in percent."""
        aps = []
        for k, n in self.targets.items():
            if n:
                parts = self.per_class.get(k, [])
                scores = np.concatenate([s for s, _ in parts]) if parts else np.zeros(0)
                hits = np.concatenate([h for _, h in parts]) if parts else np.zeros(0, bool)
                aps.append(average_precision(scores, hits, n))
        if not aps:
            return 100.0 if self.fp == 0 else 0.0
        return 100.0 * float(np.mean(aps))

    def details(self) -> dict[str, float]:
        """F1, precision, recall and mAP (percent), and the box counts."""
        tp, fp, fn = self.tp, self.fp, self.fn
        return {"f1": self.f1(), "map": self.mean_ap(),
                "precision": 100.0 * tp / (tp + fp) if tp + fp else 100.0,
                "recall": 100.0 * tp / (tp + fn) if tp + fn else 100.0,
                "true_positives": float(tp), "false_positives": float(fp),
                "false_negatives": float(fn)}


@register_metric("detection")
class DetectionF1(_Detection):
    """F1 (percent) of the boxes matched to the targets' by IoU and class."""

    def result(self) -> float:
        """The F1 so far."""
        return self.f1()


@register_metric("detection-map")
class DetectionMAP(_Detection):
    """mAP-style agreement (percent): mean average precision at the matching IoU."""

    def result(self) -> float:
        """The mAP so far."""
        return self.mean_ap()


__all__ = ["DetectionF1", "DetectionMAP", "DetectionOptions", "Detections",
           "average_precision", "iou_matrix", "match", "nms", "xywh_to_xyxy"]
