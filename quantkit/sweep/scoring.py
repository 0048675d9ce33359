"""Score candidate models against cached FP32 outputs (shared by sweep, sensitivity, autotune).

The evaluation batches and the FP32 model's outputs are computed once and kept in memory (an
evaluation subset is small), so scoring a candidate is one ONNX Runtime pass over the batches,
with the candidate passed to ONNX Runtime as bytes (no file written per probe).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantkit.errors import InputError, PipelineError
from quantkit.evaluate.compare import compared_tensor, with_output
from quantkit.evaluate.metrics import Agreement, Metric, create_metric


@dataclass(frozen=True)
class Score:
    """How a candidate does on the evaluation set.

    ``accuracy`` is the task metric when labels exist, else the top-1 agreement with FP32
    (so "accuracy drop" always has a meaning).
    """

    accuracy: float
    agreement: float
    cosine: float
    sqnr_db: float
    max_abs_error: float


class Evaluator:
    """Evaluation batches, labels and the FP32 reference outputs, computed once.

    Args:
        reference_model: path of the FP32 model.
        batches: evaluation batches (already validated for the model).
        labels: integer labels / reference strings in batch order, or None.
            Metrics that read the model (``Metric.bind_model``, e.g. ``cer``'s CTC dictionary)
            are bound to ``reference_model``.
        metric: task metric name (default top1 with labels; agreement without).
        output: the model output to score (default: the first).
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, reference_model: str, batches: Sequence[dict[str, np.ndarray]],
                 labels: np.ndarray | None, metric: str | None, output: str | None = None,
                 threads: int | None = None) -> None:
        from quantkit.backends.onnxruntime import OrtRunner

        if not batches:
            raise InputError("the evaluation data contains no samples.")
        self.batches = list(batches)
        self.labels = labels
        self.threads = threads
        self.samples = sum(len(next(iter(b.values()))) for b in self.batches)
        if labels is not None and len(labels) != self.samples:
            raise InputError(f"labels: {len(labels)} labels for {self.samples} evaluation "
                             "samples; give one label per sample, in data order.")
        self.metric = metric or ("top1" if labels is not None else None)
        self._metric_proto: Metric | None = None
        if self.metric is not None:
            self._metric_proto = create_metric(self.metric)  # unknown metric: fail early
            self._metric_proto.bind_model(reference_model)
            if labels is None:
                raise InputError(f"metric {self.metric} needs labels "
                                 "(data.evaluation.labels in the recipe).")
        ref = OrtRunner(reference_model, threads=threads)
        self.output = output or ref.output_names[0]
        if self.output not in ref.output_names:
            raise InputError(f"output {self.output!r}: the model's outputs are "
                             f"{', '.join(ref.output_names)}.")
        self.compare = compared_tensor(reference_model, self.output)
        outs = self.outputs(reference_model, count=False)
        self.reference = [o[1] for o in outs]
        self.higher_is_better = (self._metric_proto.higher_is_better
                                 if self._metric_proto is not None else True)
        self.reference_outputs = [o[0] for o in outs]
        self.evaluations = 0

    def outputs(self, model: str | bytes | Any,
                count: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(scored output, compared tensor)`` of a model for every batch.

        The compared tensor is the scored output, or the logits when the output is a Softmax
        (probabilities saturate to 0/1 and hide quantisation error from SQNR and agreement).
        """
        from quantkit._ort import session

        names = [self.output] if self.compare == self.output else [self.output, self.compare]
        payload = model if self.compare == self.output and isinstance(model, (str, bytes)) \
            else with_output(model, self.compare)
        try:
            sess = session(payload, providers=["CPUExecutionProvider"], threads=self.threads)
            runs = [sess.run(names, b) for b in self.batches]
        except Exception as err:
            raise PipelineError(f"ONNX Runtime could not run the candidate model: {err}") \
                from err
        if count:
            self.evaluations += 1
        return [(r[0], r[-1]) for r in runs]

    def score(self, model: str | bytes | Any) -> Score:
        """Score a model (path, serialized bytes or ``onnx.ModelProto``)."""
        outs = self.outputs(model)
        agree = Agreement()
        for (_, cmp), ref in zip(outs, self.reference, strict=True):
            agree.update(cmp, ref)
        a = agree.result()
        accuracy = a.top1_agreement
        if self.metric is not None and self.labels is not None:
            task = self._new_task()
            seen = 0
            for out, _ in outs:
                task.update(out, self.labels[seen: seen + len(out)])
                seen += len(out)
            accuracy = task.result()
            if math.isnan(accuracy):
                raise PipelineError(f"metric {self.metric} returned NaN.")
        return Score(accuracy, a.top1_agreement, a.mean_cosine, a.sqnr_db, a.max_abs_error)

    def reference_score(self) -> Score:
        """The FP32 model's own score (agreement 100 %, infinite SQNR)."""
        accuracy = 100.0
        if self.metric is not None and self.labels is not None:
            task = self._new_task()
            seen = 0
            for out in self.reference_outputs:
                task.update(out, self.labels[seen: seen + len(out)])
                seen += len(out)
            accuracy = task.result()
        return Score(accuracy, 100.0, 1.0, float("inf"), 0.0)

    def _new_task(self) -> Metric:
        """A fresh metric, bound to the FP32 model once (e.g. a CTC dictionary) and copied."""
        assert self._metric_proto is not None
        return copy.deepcopy(self._metric_proto)

    def drop(self, reference: Score, candidate: Score) -> float:
        """Accuracy drop in points (positive = worse), respecting the metric's direction."""
        d = reference.accuracy - candidate.accuracy
        return d if self.higher_is_better else -d
