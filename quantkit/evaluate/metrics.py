"""Task metrics and agreement with the FP32 reference, accumulated batch by batch.

Every metric is a small object with ``update(...)`` per batch and ``result()`` at the end, so
evaluation streams like calibration does. Task metrics are registered by name
(:func:`register_metric`) so recipes can name them; users add their own the same way or as a
plugin (:mod:`quantkit.evaluate.base`). This module holds classification top-k, cosine and the
agreement measures; detection metrics live in :mod:`quantkit.evaluate.detection`, OCR metrics
in :mod:`quantkit.evaluate.ocr`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from quantkit.errors import InputError, PipelineError
from quantkit.evaluate.base import (
    Metric,
    MetricSpec,
    available_metrics,
    batch_axis_of,
    create_metric,
    metric_class,
    metric_label_kind,
    metric_text_labels,
    parse_metric,
    register_metric,
    samples_first,
)
from quantkit.evaluate.detection import DetectionF1, DetectionMAP
from quantkit.evaluate.ocr import CharacterErrorRate, ExactString, edit_distance


class _TopK(Metric):
    k: ClassVar[int] = 1
    needs_labels = False

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, outputs: np.ndarray, targets: Any) -> None:
        """Fold one batch (see :meth:`Metric.update`)."""
        logits = np.asarray(outputs).reshape(len(outputs), -1)
        labels = np.asarray(targets).reshape(-1)
        if len(labels) != len(logits):
            raise InputError(f"{self.name}: {len(labels)} labels for a batch of {len(logits)} "
                             "outputs; the labels must match the data sample for sample.")
        top = np.argsort(-logits, axis=1, kind="stable")[:, : self.k]
        self.correct += int((top == labels[:, None]).any(axis=1).sum())
        self.total += len(labels)

    def reference_targets(self, reference: Any) -> Any:
        """Without labels: the FP32 model's top-1 class is the label."""
        ref = np.asarray(reference)
        return ref.reshape(len(ref), -1).argmax(axis=1)

    def result(self) -> float:
        """The metric so far (see :meth:`Metric.result`)."""
        return 100.0 * self.correct / self.total if self.total else float("nan")


@register_metric("top1")
class Top1(_TopK):
    """Top-1 accuracy in percent (integer class labels)."""

    k = 1


@register_metric("top5")
class Top5(_TopK):
    """Top-5 accuracy in percent."""

    k = 5


@register_metric("cosine")
class MeanCosine(Metric):
    """Mean cosine similarity between output embeddings and target embeddings.

    Without labels the targets are the FP32 model's outputs (regression / embedding models).
    """

    needs_labels = False

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def reference_targets(self, reference: Any) -> Any:
        """Without labels: the FP32 model's outputs."""
        return reference

    def update(self, outputs: np.ndarray, targets: Any) -> None:
        """Fold one batch (see :meth:`Metric.update`)."""
        self.total += float(cosine_rows(outputs, np.asarray(targets)).sum())
        self.count += len(outputs)

    def result(self) -> float:
        """The metric so far (see :meth:`Metric.result`)."""
        return self.total / self.count if self.count else float("nan")


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample (rows flattened), 1.0 where both are zero."""
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    num = (x * y).sum(axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return np.asarray(out)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """``10 log10(signal / noise)``; ``inf`` for an exact match."""
    if noise_power == 0:
        return float("inf")
    if signal_power == 0:
        return float("-inf")
    return float(10.0 * np.log10(signal_power / noise_power))


@dataclass
class AgreementResult:
    """How closely a model follows the FP32 reference."""

    top1_agreement: float
    mean_cosine: float
    sqnr_db: float
    max_abs_error: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


class Agreement:
    """Streaming agreement between a model's outputs and the FP32 reference's."""

    def __init__(self) -> None:
        self.same_top1 = 0
        self.cos_sum = 0.0
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0
        self.samples = 0

    def update(self, outputs: np.ndarray, reference: np.ndarray,
               batch_axis: int = 0) -> None:
        """Fold one batch (same shapes; the samples on ``batch_axis``, 0 by default)."""
        out = np.asarray(outputs, dtype=np.float64)
        ref = np.asarray(reference, dtype=np.float64)
        if out.shape != ref.shape:
            raise PipelineError(f"output shape {out.shape} differs from the reference's "
                                f"{ref.shape}.")
        if out.ndim == 0:
            out, ref = out.reshape(1), ref.reshape(1)
        if batch_axis:
            out, ref = np.moveaxis(out, batch_axis, 0), np.moveaxis(ref, batch_axis, 0)
        n = len(out)
        flat_o, flat_r = out.reshape(n, -1), ref.reshape(n, -1)
        self.same_top1 += int((flat_o.argmax(axis=1) == flat_r.argmax(axis=1)).sum())
        self.cos_sum += float(cosine_rows(flat_o, flat_r).sum())
        diff = flat_o - flat_r
        self.signal += float((flat_r * flat_r).sum())
        self.noise += float((diff * diff).sum())
        self.max_abs = max(self.max_abs, float(np.abs(diff).max()) if diff.size else 0.0)
        self.samples += n

    def result(self) -> AgreementResult:
        """Top-1 agreement (percent), mean cosine, SQNR (dB) and max abs error."""
        n = self.samples
        return AgreementResult(
            top1_agreement=100.0 * self.same_top1 / n if n else float("nan"),
            mean_cosine=self.cos_sum / n if n else float("nan"),
            sqnr_db=sqnr_db(self.signal, self.noise),
            max_abs_error=self.max_abs,
            samples=n,
        )


class OutputsAgreement:
    """:class:`Agreement` of every model output, each on its own samples' axis.

    The samples' axis of an output is ``axes[name]`` when given, else axis 0 or the one axis
    whose size is the batch size (:func:`quantkit.evaluate.base.batch_axis_of`), so a
    time-major ``[T, N, C]`` output counts N samples, not T x N.
    """

    def __init__(self, axes: Mapping[str, int | None] | None = None) -> None:
        self.axes = dict(axes or {})
        self.by_output: dict[str, Agreement] = {}

    def update(self, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
               batch: int) -> None:
        """Fold one batch of ``batch`` samples; only float outputs are compared."""
        for name, ref in reference.items():
            ref = np.asarray(ref)
            if ref.dtype.kind != "f" or name not in outputs:
                continue
            axis = batch_axis_of(ref.shape, batch, self.axes.get(name))
            self.by_output.setdefault(name, Agreement()).update(outputs[name], ref, axis)

    def result(self) -> dict[str, AgreementResult]:
        """Per output name, in the model's order."""
        return {name: a.result() for name, a in self.by_output.items()}


__all__ = ["Agreement", "AgreementResult", "CharacterErrorRate", "DetectionF1", "DetectionMAP",
           "ExactString", "MeanCosine", "Metric", "MetricSpec", "OutputsAgreement", "Top1",
           "Top5", "available_metrics", "batch_axis_of", "cosine_rows", "create_metric",
           "edit_distance", "metric_class", "metric_label_kind", "metric_text_labels",
           "parse_metric", "register_metric", "samples_first", "sqnr_db"]
