"""Score candidate models against cached FP32 outputs (shared by sweep, sensitivity, autotune).

The evaluation batches and the FP32 model's outputs are computed once and kept in memory (an
evaluation subset is small), so scoring a candidate is one ONNX Runtime pass over the batches,
with the candidate passed to ONNX Runtime as bytes (no file written per probe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantkit.data import InputLayout, batch_samples
from quantkit.errors import InputError
from quantkit.evaluate.compare import compared_tensor, load
from quantkit.evaluate.metrics import AgreementResult, MetricSpec
from quantkit.evaluate.task import (
    ModelOutputs,
    TaskAccumulator,
    TaskResult,
    TaskSetup,
    warn_if_flattened,
)
from quantkit.model import input_specs


@dataclass(frozen=True)
class Score:
    """How a candidate does on the evaluation set.

    ``accuracy`` is the task metric (against labels, or against the FP32 model's outputs for
    metrics that can do without labels), else the top-1 agreement with FP32 (so "accuracy
    drop" always has a meaning). ``details`` holds the metric's secondary values (e.g.
    precision / recall / mAP next to a detection F1) and ``outputs`` the SQNR (dB) and mean
    cosine of every model output: ``(name, sqnr_db, cosine)``.
    """

    accuracy: float
    agreement: float
    cosine: float
    sqnr_db: float
    max_abs_error: float
    details: tuple[tuple[str, float], ...] = ()
    outputs: tuple[tuple[str, float, float], ...] = ()

    def output_summary(self) -> str:
        """``name: SQNR dB / cosine`` of every output, ``; ``-separated (results, reports)."""
        return "; ".join(f"{n}: {s:.1f} dB / {c:.4f}" for n, s, c in self.outputs)


class Evaluator:
    """Evaluation batches, labels and the FP32 reference outputs, computed once.

    Args:
        reference_model: path of the FP32 model.
        batches: evaluation batches (already validated for the model).
        labels: integer labels / reference strings / boxes in batch order, or None.
            Metrics that read the model (``Metric.bind_model``, e.g. ``cer``'s CTC dictionary)
            are bound to ``reference_model``.
        metric: task metric spec (``NAME[:OPTIONS]``, a recipe mapping or ``FILE.py:CLASS``;
            default top1 with labels; without labels, metrics that can are scored against the
            FP32 outputs, else FP32 agreement).
        output: the model output to score (default: the first).
        threads: ONNX Runtime intra-op threads.
        layout: constant inputs and batch axes (``--constant`` / ``--batch-axis``) the batches
            were read with; the models are fed the same way, and each input's batch axis
            counts the samples of a batch.
    """

    def __init__(self, reference_model: str, batches: Sequence[dict[str, np.ndarray]],
                 labels: np.ndarray | None,
                 metric: str | Mapping[str, Any] | MetricSpec | None,
                 output: str | None = None, threads: int | None = None,
                 layout: InputLayout | None = None) -> None:
        if not batches:
            raise InputError("the evaluation data contains no samples.")
        self.batches = list(batches)
        self.labels = labels
        self.threads = threads
        #: how the model's inputs are fed (constants, batch axes), as the data was read
        self.layout = layout
        self.specs = input_specs(load(reference_model), layout)
        self.samples = sum(batch_samples(b, self.specs) for b in self.batches)
        if labels is not None and len(labels) != self.samples:
            raise InputError(f"labels: {len(labels)} labels for {self.samples} evaluation "
                             "samples; give one label per sample, in data order.")
        self.task = TaskSetup(metric, reference_model, has_labels=labels is not None,
                              has_reference=True)
        #: the task metric's name (``None``: FP32 agreement)
        self.metric = self.task.name
        self.higher_is_better = self.task.higher_is_better
        self.output_names = [o.name for o in load(reference_model).graph.output]
        self.output = output or self.output_names[0]
        if self.output not in self.output_names:
            raise InputError(f"output {self.output!r}: the model's outputs are "
                             f"{', '.join(self.output_names)}.")
        self.compare = compared_tensor(reference_model, self.output)
        self.reference_outputs = self._run(reference_model, count=False)
        warn_if_flattened(self.output, self.reference_outputs[0][self.output].shape,
                          self.metric)
        self.evaluations = 0

    def _run(self, model: str | bytes | Any, count: bool = True) -> list[dict[str, np.ndarray]]:
        runner = ModelOutputs(model, self.compare, self.threads, ["CPUExecutionProvider"],
                              where="the candidate model", layout=self.layout)
        if count:
            self.evaluations += 1
        return [runner.run(b) for b in self.batches]

    def outputs(self, model: str | bytes | Any,
                count: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(scored output, compared tensor)`` of a model for every batch.

        The compared tensor is the scored output, or the logits when the output is a Softmax
        (probabilities saturate to 0/1 and hide quantisation error from SQNR and agreement).
        """
        return [(o[self.output], o[self.compare]) for o in self._run(model, count)]

    def evaluate(self, model: str | bytes | Any) -> TaskResult:
        """The task metric, agreement and per-output agreement of a model."""
        return self._fold(self._run(model))

    def _fold(self, outs: Sequence[Mapping[str, np.ndarray]]) -> TaskResult:
        acc = TaskAccumulator(self.task, self.output, self.compare, self.labels,
                              output_names=self.output_names)
        for out, ref, batch in zip(outs, self.reference_outputs, self.batches, strict=True):
            acc.update(out, ref, batch_samples(batch, self.specs))
        return acc.result()

    def score(self, model: str | bytes | Any) -> Score:
        """Score a model (path, serialized bytes or ``onnx.ModelProto``)."""
        return _score(self.evaluate(model))

    def reference_score(self) -> Score:
        """The FP32 model's own score (agreement 100 %, infinite SQNR)."""
        res = self._fold(self.reference_outputs)
        return _score(res)

    def drop(self, reference: Score, candidate: Score) -> float:
        """Accuracy drop in points (positive = worse), respecting the metric's direction."""
        d = reference.accuracy - candidate.accuracy
        return d if self.higher_is_better else -d


def _score(res: TaskResult) -> Score:
    a = res.agreement
    if a is None:  # the compared output's shape differs from FP32's
        if res.accuracy is None:
            raise InputError(f"output {', '.join(res.shape_varies)}: its shape differs from the "
                             "FP32 model's (e.g. a variable number of detections), so it cannot "
                             "be compared element-wise; choose a task metric (e.g. detection "
                             "with format=nms).")
        nan = float("nan")
        a = AgreementResult(nan, nan, nan, nan, res.samples)
    accuracy = res.accuracy if res.accuracy is not None else a.top1_agreement
    return Score(accuracy, a.top1_agreement, a.mean_cosine, a.sqnr_db, a.max_abs_error,
                 tuple(sorted(res.details.items())),
                 tuple((n, r.sqnr_db, r.mean_cosine) for n, r in res.outputs.items()))
