"""Task metrics and agreement with the FP32 reference, accumulated batch by batch.

Every metric is a small object with ``update(...)`` per batch and ``result()`` at the end, so
evaluation streams like calibration does. Task metrics are registered by name
(:func:`register_metric`) so recipes can name them; users add their own the same way.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from quantkit.errors import InputError, PipelineError

M = TypeVar("M", bound="Metric")


class Metric(abc.ABC):
    """A task metric accumulated over batches."""

    #: name used in recipes and results.csv
    name: ClassVar[str] = ""
    #: whether larger values are better (accuracy) or worse (error rates)
    higher_is_better: ClassVar[bool] = True
    #: whether the labels are strings (one text per sample) rather than integer classes
    text_labels: ClassVar[bool] = False

    def bind_model(self, model: Any) -> None:  # noqa: B027 - optional hook, default no-op
        """Read what the metric needs from the FP32 model before any ``update``.

        ``model`` is a path or an ``onnx.ModelProto``. Called once by the evaluators; the
        default does nothing (see :class:`CharacterErrorRate` for a metric that reads the
        model's metadata).
        """

    @abc.abstractmethod
    def update(self, outputs: np.ndarray, targets: Any) -> None:
        """Fold one batch of model outputs and their targets."""

    @abc.abstractmethod
    def result(self) -> float:
        """The metric over everything seen (in percent for accuracies and error rates)."""


_METRICS: dict[str, Callable[[], Metric]] = {}


def register_metric(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator registering a :class:`Metric` under ``name``."""

    def deco(cls: type[M]) -> type[M]:
        cls.name = name
        _METRICS[name] = cls
        return cls

    return deco


def create_metric(name: str) -> Metric:
    """Instantiate the metric registered as ``name``."""
    try:
        return _METRICS[name]()
    except KeyError:
        raise InputError(f"metric {name!r} is unknown; registered metrics: "
                         f"{', '.join(sorted(_METRICS))}.") from None


def available_metrics() -> list[str]:
    """Registered metric names."""
    return sorted(_METRICS)


def metric_text_labels(name: str | None) -> bool:
    """Whether the metric registered as ``name`` takes text labels (``False`` for ``None``)."""
    return name is not None and create_metric(name).text_labels


class _TopK(Metric):
    k: ClassVar[int] = 1

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


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@register_metric("cer")
class CharacterErrorRate(Metric):
    """Character error rate in percent: total edit distance / total reference characters.

    ``targets`` are the reference strings (a text labels file: one line per sample).
    ``outputs`` are either the predicted strings, or a CTC recogniser's per-step class scores
    ``[N, T, classes]`` (probabilities or logits), which are decoded greedily (best path:
    arg-max per step, repeats merged, blanks dropped; class 0 is the blank) with the character
    dictionary of the model's ``character`` metadata entry -- PaddleOCR / RapidOCR
    recognisers carry it, one character per line; like PaddleOCR's ``CTCLabelDecode``, a
    space is the last class when there is room for it. Leading and trailing whitespace of
    decoded strings is dropped (the margin or the padding of a line image often decodes as a
    space).
    """

    higher_is_better = False
    text_labels = True
    #: the model metadata key holding the CTC dictionary, one character per line
    metadata_key: ClassVar[str] = "character"

    def __init__(self) -> None:
        self.errors = 0
        self.chars = 0
        self.characters: list[str] | None = None

    def bind_model(self, model: Any) -> None:
        """Take the CTC dictionary from ``model``'s metadata, if it has one."""
        import onnx

        proto = (model if isinstance(model, onnx.ModelProto)
                 else onnx.load(str(model), load_external_data=False))
        meta = {p.key: p.value for p in proto.metadata_props}
        if self.metadata_key in meta:
            self.characters = ["", *meta[self.metadata_key].splitlines()]

    def decode(self, scores: np.ndarray) -> list[str]:
        """Greedy CTC decoding of ``scores`` [N, T, classes] into strings."""
        if self.characters is None:
            raise InputError(
                f"cer: the model's output is a {list(scores.shape)} score tensor, but the model "
                f"has no {self.metadata_key!r} metadata (a CTC dictionary, one character per "
                "line) to decode it; add the dictionary to the model's metadata_props or "
                "score decoded strings.")
        chars = self.characters
        classes = scores.shape[2]
        if classes == len(chars) + 1:
            chars = [*chars, " "]
        if classes != len(chars):
            raise InputError(
                f"cer: the model's output has {classes} classes but its {self.metadata_key!r} "
                f"dictionary gives {len(chars)} (blank + {len(self.characters) - 1} "
                "characters [+ space]); the dictionary does not belong to this model.")
        out = []
        for row in scores.argmax(axis=2):
            keep = np.ones(len(row), dtype=bool)
            keep[1:] = row[1:] != row[:-1]
            keep &= row != 0
            out.append("".join(chars[i] for i in row[keep]).strip())
        return out

    def update(self, outputs: Any, targets: Any) -> None:
        """Fold one batch (see :meth:`Metric.update`)."""
        if isinstance(outputs, np.ndarray) and outputs.dtype.kind == "f":
            if outputs.ndim != 3:
                raise InputError(f"cer: expected decoded strings or CTC scores [N, T, classes]; "
                                 f"the model's output has shape {list(outputs.shape)}.")
            outputs = self.decode(outputs)
        preds, refs = list(outputs), list(targets)
        if len(preds) != len(refs):
            raise InputError(f"cer: {len(refs)} reference strings for {len(preds)} predictions.")
        for p, r in zip(preds, refs, strict=True):
            self.errors += edit_distance(str(p), str(r))
            self.chars += len(str(r))

    def result(self) -> float:
        """The metric so far (see :meth:`Metric.result`)."""
        return 100.0 * self.errors / self.chars if self.chars else float("nan")


@register_metric("cosine")
class MeanCosine(Metric):
    """Mean cosine similarity between output embeddings and target embeddings."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

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


class Agreement:
    """Streaming agreement between a model's outputs and the FP32 reference's."""

    def __init__(self) -> None:
        self.same_top1 = 0
        self.cos_sum = 0.0
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0
        self.samples = 0

    def update(self, outputs: np.ndarray, reference: np.ndarray) -> None:
        """Fold one batch (same shapes, first axis = samples)."""
        out = np.asarray(outputs, dtype=np.float64)
        ref = np.asarray(reference, dtype=np.float64)
        if out.shape != ref.shape:
            raise PipelineError(f"output shape {out.shape} differs from the reference's "
                                f"{ref.shape}.")
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
