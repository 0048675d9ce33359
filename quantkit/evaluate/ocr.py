"""OCR metrics of CTC recognisers: greedy decoding, exact-string agreement, character error rate.

A CTC recogniser outputs per-step class scores, batch-major ``[N, T, classes]`` or time-major
``[T, N, classes]`` (CRNN / LSTM heads). The ``layout`` option says which (``NTC`` / ``TNC``);
by default it is detected: the axis whose size is the batch size holds the samples. Decoding
is greedy (best path): arg-max per step, repeats merged, blanks (class 0) dropped.

Without labels both metrics compare the decoded class sequences with the FP32 model's (no
dictionary needed); with text labels the sequences are turned into strings with the model's
dictionary (its ``character`` metadata entry, as PaddleOCR / RapidOCR recognisers carry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from quantkit.errors import InputError
from quantkit.evaluate.base import Metric, batch_axis_of, register_metric

#: the CTC blank class
BLANK = 0


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


def ctc_greedy(scores: np.ndarray) -> list[tuple[int, ...]]:
    """Best-path decoding of ``scores`` ``[N, T, classes]`` into class sequences per sample."""
    out = []
    for row in np.asarray(scores).argmax(axis=2):
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != BLANK
        out.append(tuple(int(k) for k in row[keep]))
    return out


class _CTCMetric(Metric):
    """Shared decoding and counting of the CTC metrics."""

    text_labels = True
    needs_labels = False
    #: the model metadata key holding the CTC dictionary, one character per line
    metadata_key: ClassVar[str] = "character"

    def __init__(self, layout: str = "auto") -> None:
        lay = str(layout).upper()
        if lay not in ("AUTO", "NTC", "TNC"):
            raise InputError(f"{self.name}: layout {layout!r} is not NTC (batch-major), TNC "
                             "(time-major) or auto.")
        self.layout = lay
        self.errors = 0
        self.chars = 0
        self.exact = 0
        self.samples = 0
        self.characters: list[str] | None = None

    def bind_model(self, model: Any) -> None:
        """Take the CTC dictionary from ``model``'s metadata, if it has one."""
        import onnx

        proto = (model if isinstance(model, onnx.ModelProto)
                 else onnx.load(str(model), load_external_data=False))
        meta = {p.key: p.value for p in proto.metadata_props}
        if self.metadata_key in meta:
            self.characters = ["", *meta[self.metadata_key].splitlines()]

    def prepare(self, outputs: Mapping[str, np.ndarray], output: str, batch: int) -> Any:
        """The scores ``[N, T, classes]`` of the batch (time-major outputs transposed)."""
        arr = np.asarray(outputs[output])
        if arr.dtype.kind != "f":
            return arr  # decoded strings
        if arr.ndim != 3:
            raise InputError(f"{self.name}: expected CTC scores [N, T, classes] or [T, N, "
                             f"classes]; the model output {output!r} has shape "
                             f"{list(arr.shape)}.")
        declared = {"NTC": 0, "TNC": 1}.get(self.layout, self.batch_axis)
        axis = batch_axis_of(arr.shape, batch, declared)
        if axis == 2:
            raise InputError(f"{self.name}: the output {output!r} {list(arr.shape)} has the "
                             "batch on its class axis; give layout=NTC or layout=TNC.")
        return arr if axis == 0 else np.swapaxes(arr, 0, 1)

    def reference_targets(self, reference: Any) -> Any:
        """The FP32 model's decoded class sequences (or its strings)."""
        if isinstance(reference, np.ndarray) and reference.dtype.kind == "f":
            return ctc_greedy(reference)
        return [str(r) for r in reference]

    def decode(self, scores: np.ndarray) -> list[str]:
        """Greedy CTC decoding of ``scores`` [N, T, classes] into strings (model dictionary).

        Like PaddleOCR's ``CTCLabelDecode``, a space is the last class when there is room for
        it; leading and trailing whitespace is dropped (the margin or the padding of a line
        image often decodes as a space).
        """
        if self.characters is None:
            raise InputError(
                f"{self.name}: the model's output is a {list(scores.shape)} score tensor, but "
                f"the model has no {self.metadata_key!r} metadata (a CTC dictionary, one "
                "character per line) to decode it; add the dictionary to the model's "
                "metadata_props, score decoded strings, or leave the labels out to compare "
                "with the FP32 model.")
        chars = self.characters
        classes = scores.shape[2]
        if classes == len(chars) + 1:
            chars = [*chars, " "]
        if classes != len(chars):
            raise InputError(
                f"{self.name}: the model's output has {classes} classes but its "
                f"{self.metadata_key!r} dictionary gives {len(chars)} (blank + "
                f"{len(self.characters) - 1} characters [+ space]); the dictionary does not "
                "belong to this model.")
        return ["".join(chars[i] for i in seq).strip() for seq in ctc_greedy(scores)]

    def update(self, outputs: Any, targets: Any) -> None:
        """Fold one batch: scores or strings, against strings or FP32 class sequences."""
        refs = list(targets)
        sequences = bool(refs) and isinstance(refs[0], tuple)
        if isinstance(outputs, np.ndarray) and outputs.dtype.kind == "f":
            if outputs.ndim != 3:
                raise InputError(f"{self.name}: expected decoded strings or CTC scores [N, T, "
                                 f"classes]; the model's output has shape "
                                 f"{list(outputs.shape)}.")
            preds: list[Any] = ctc_greedy(outputs) if sequences else self.decode(outputs)
        else:
            preds = [str(p) for p in outputs]
        if len(preds) != len(refs):
            raise InputError(f"{self.name}: {len(refs)} reference strings for {len(preds)} "
                             "predictions.")
        for p, r in zip(preds, refs, strict=True):
            if not sequences:
                r = str(r)
            self.errors += edit_distance(p, r)
            self.chars += len(r)
            self.exact += int(p == r)
        self.samples += len(refs)

    def cer(self) -> float:
        """Character error rate in percent (total edits / total reference characters)."""
        if self.chars:
            return 100.0 * self.errors / self.chars
        return 0.0 if self.samples and not self.errors else float("nan")

    def exact_match(self) -> float:
        """Percent of samples whose decoded text equals the reference exactly."""
        return 100.0 * self.exact / self.samples if self.samples else float("nan")

    def details(self) -> dict[str, float]:
        """Both values: ``cer`` and ``exact_match`` (percent)."""
        return {"cer": self.cer(), "exact_match": self.exact_match()}


@register_metric("cer")
class CharacterErrorRate(_CTCMetric):
    """Character error rate in percent: total edit distance / total reference characters.

    ``targets`` are the reference strings (a text labels file: one line per sample), or --
    without labels -- the FP32 model's decoded outputs. ``outputs`` are either the predicted
    strings or CTC scores, decoded greedily (see the module docstring). Option ``layout``:
    ``NTC``, ``TNC`` or ``auto``.
    """

    higher_is_better = False

    def result(self) -> float:
        """The CER so far."""
        return self.cer()


@register_metric("ctc-exact")
class ExactString(_CTCMetric):
    """Percent of samples whose decoded text equals the reference (FP32's, or the label)."""

    def result(self) -> float:
        """The exact-match rate so far."""
        return self.exact_match()
