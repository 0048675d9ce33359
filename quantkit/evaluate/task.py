"""Scoring one model's outputs, shared by ``eval`` and the sweep's evaluator.

:class:`ModelOutputs` runs a model on ONNX Runtime and returns *every* output (plus the tensor
agreement compares, see :mod:`quantkit.evaluate.compare`). :class:`TaskAccumulator` folds
batches into the task metric -- against labels, or against the FP32 model's outputs for the
metrics that can (``Metric.needs_labels = False``) -- and into the agreement with FP32: on the
compared tensor (the headline ``agreement`` / ``cosine`` / ``sqnr_db``) and per model output.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantkit.backends.base import Runner
from quantkit.data import InputLayout, batch_samples, static_batch_chunks
from quantkit.errors import InputError, PipelineError
from quantkit.evaluate.base import Metric, MetricSpec, batch_axis_of, create_metric, parse_metric
from quantkit.evaluate.compare import with_output
from quantkit.evaluate.metrics import Agreement, AgreementResult, OutputsAgreement
from quantkit.model import input_specs, load_model

logger = logging.getLogger(__name__)


class ModelOutputs:
    """A model's outputs (and the compared tensor) for batches of samples, through a Runner.

    Both evaluators -- :func:`quantkit.evaluate.run.evaluate_model` and the sweeps'
    :class:`quantkit.sweep.scoring.Evaluator` -- run models through this class, and it runs
    them through the backends' :class:`~quantkit.backends.base.Runner` protocol: an
    :class:`~quantkit.backends.onnxruntime.OrtRunner` by default, or the ``runner`` given
    (any backend's; it must return the compared tensor among its outputs).

    Args:
        model: the model (path, serialized bytes or ``onnx.ModelProto``).
        compare: a tensor to return besides the outputs (added as an output when needed).
        threads: ONNX Runtime intra-op threads.
        providers: ONNX Runtime execution providers.
        where: how messages name the model.
        layout: batch axes and constant inputs.
        runner: run the model with this runner instead of ONNX Runtime.
    """

    def __init__(self, model: str | os.PathLike[str] | bytes | Any, compare: str | None = None,
                 threads: int | None = None, providers: Sequence[str] | None = None,
                 where: str | None = None, layout: InputLayout | None = None,
                 runner: Runner | None = None) -> None:
        from quantkit.backends.onnxruntime import OrtRunner

        self.where = where or (str(model) if isinstance(model, (str, os.PathLike))
                               else "the model")
        payload: str | bytes = (str(model) if isinstance(model, (str, os.PathLike)) else
                                model if isinstance(model, bytes) else
                                bytes(model.SerializeToString()))
        if runner is None:
            runner = OrtRunner(payload, threads=threads, providers=providers, name=self.where)
            if compare and compare not in runner.output_names:
                runner = OrtRunner(with_output(model, compare), threads=threads,
                                   providers=providers, name=self.where)
        self.runner: Runner = runner
        graph = _proto(model)
        #: the model's own outputs, in graph order
        self.output_names = [o.name for o in graph.graph.output]
        self.names = list(dict.fromkeys([*self.output_names, *([compare] if compare else [])]))
        #: the inputs as the model takes them (batch axes, fixed batch sizes)
        self.specs = input_specs(graph, layout)

    def run(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs (and the compared tensor) for one batch (samples first), by name.

        The batch goes to the model through :func:`quantkit.data.static_batch_chunks`, the
        chunking capture uses: samples move to each input's batch axis, and a model with a
        fixed batch size gets chunks of that size (the last one padded with copies of the last
        sample, whose outputs are dropped). Outputs of several chunks are joined on axis 0.
        """
        n = batch_samples(batch, self.specs)
        fixed = next((s.static_batch for s in self.specs if s.static_batch is not None), None)
        pad = (-n) % fixed if fixed else 0
        if pad:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
                     if any(s.name == k and s.batch_axis is not None for s in self.specs)
                     else v for k, v in batch.items()}
        parts = [self._run_feed(feed) for feed in static_batch_chunks(batch, self.specs)]
        if len(parts) == 1 and not pad:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts])[:n] for name in self.names}

    def _run_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = self.runner.infer(feed)
        except PipelineError as err:
            raise PipelineError(f"ONNX Runtime could not run {self.where}: "
                                f"{err.__cause__ or err}") from err
        missing = [n for n in self.names if n not in res]
        if missing:
            raise InputError(f"{self.where}: the runner returned no tensor {missing[0]!r}; "
                             "give a runner whose engine has it as an output.")
        return {n: res[n] for n in self.names}


def _proto(model: str | os.PathLike[str] | bytes | Any) -> Any:
    """The model's graph (no weights read) from a path, serialized bytes or a ModelProto."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        return load_model(model, load_external_data=False)
    return onnx.load_from_string(model) if isinstance(model, bytes) else model


@dataclass
class TaskResult:
    """What :class:`TaskAccumulator` measured.

    ``accuracy`` is the task metric (``None`` without one); ``against`` says what it was
    scored against (``labels`` or ``fp32``); ``agreement`` is on the compared tensor and
    ``outputs`` per model output.
    """

    accuracy: float | None = None
    details: dict[str, float] = field(default_factory=dict)
    against: str | None = None
    agreement: AgreementResult | None = None
    outputs: dict[str, AgreementResult] = field(default_factory=dict)
    samples: int = 0
    #: outputs compared without element-wise agreement (their shape differs from FP32's)
    shape_varies: list[str] = field(default_factory=list)


class TaskSetup:
    """The metric of an evaluation, bound once to the FP32 model; fresh copies per scoring.

    Args:
        spec: the metric spec (``NAME[:OPTIONS]``, a recipe mapping, ``FILE.py:CLASS``) or
            ``None`` (no task metric; ``top1`` when labels are given).
        reference_model: the FP32 model the metric binds to (e.g. a CTC dictionary).
        has_labels: whether labels are given.
        has_reference: whether FP32 outputs will be given (scoring without labels).
        where: how messages name the metric setting (``metric``, ``--metric``).
    """

    def __init__(self, spec: str | Mapping[str, Any] | MetricSpec | None,
                 reference_model: Any, *, has_labels: bool, has_reference: bool,
                 where: str = "metric") -> None:
        self.spec: MetricSpec | None = None
        if spec is None and has_labels:
            spec = "top1"
        self._proto: Metric | None = None
        self.against: str | None = None
        if spec is not None:
            self.spec = parse_metric(spec, where)
            self._proto = create_metric(self.spec, where)
            self._proto.bind_model(reference_model)
            if has_labels:
                self.against = "labels"
            elif not self._proto.needs_labels and has_reference:
                self.against = "fp32"
            elif self._proto.needs_labels:
                raise InputError(f"{where} {self.spec.label} needs labels (one per sample, in "
                                 "data order); it cannot be scored against the FP32 model.")
            else:
                raise InputError(f"{where} {self.spec.label}: give labels, or the FP32 model "
                                 "as the reference to score against it.")

    @property
    def name(self) -> str | None:
        """The metric's name for results (``None`` without a metric)."""
        if self._proto is not None and self._proto.name:
            return self._proto.name  # a plugin's own name, else its class name
        return self.spec.label if self.spec is not None else None

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction (``True`` without a metric: agreement)."""
        return self._proto.higher_is_better if self._proto is not None else True

    @property
    def batch_axis(self) -> int | None:
        """The declared samples' axis of the scored output (``None``: detected)."""
        return self._proto.batch_axis if self._proto is not None else None

    def new(self) -> Metric | None:
        """A fresh metric (a copy of the bound one) or ``None``."""
        return copy.deepcopy(self._proto) if self._proto is not None else None


class TaskAccumulator:
    """Folds batches of a model's outputs into the task metric and the agreement with FP32."""

    def __init__(self, setup: TaskSetup, output: str, compare: str,
                 labels: np.ndarray | None = None, agreement: bool = True,
                 output_names: Sequence[str] | None = None) -> None:
        self.setup = setup
        self.metric = setup.new()
        self.output, self.compare = output, compare
        self.labels = labels
        self.agree = Agreement() if agreement else None
        self.per_output = OutputsAgreement({output: setup.batch_axis}) if agreement else None
        self.output_names = list(output_names) if output_names is not None else None
        self.seen = 0
        #: outputs whose shape differs from FP32's in some batch (e.g. a variable number of
        #: detections after NMS): no element-wise agreement for them
        self.shape_varies: set[str] = set()

    def update(self, outs: Mapping[str, np.ndarray],
               reference: Mapping[str, np.ndarray] | None, batch: int) -> None:
        """Fold one batch of ``batch`` samples (``reference``: the FP32 outputs, or None)."""
        m = self.metric
        if m is not None:
            if self.setup.against == "labels":
                assert self.labels is not None
                if self.seen + batch > len(self.labels):
                    raise InputError(f"labels: {len(self.labels)} labels, but the data has more "
                                     f"samples (at least {self.seen + batch}); give one label "
                                     "per sample.")
                targets = self.labels[self.seen: self.seen + batch]
            else:
                if reference is None:
                    raise PipelineError("the FP32 outputs are needed to score "
                                        f"{self.setup.name} without labels.")
                targets = m.reference_targets(m.prepare(reference, self.output, batch))
            m.update(m.prepare(outs, self.output, batch), targets)
        if reference is not None and self.agree is not None and self.per_output is not None:
            ref = np.asarray(reference[self.compare])
            declared = self.setup.batch_axis if self.compare == self.output else None
            if np.shape(outs[self.compare]) == ref.shape:
                self.agree.update(outs[self.compare], ref,
                                  batch_axis_of(ref.shape, batch, declared))
            else:
                self.shape_varies.add(self.compare)
            names = self.output_names if self.output_names is not None else list(reference)
            same = {n: reference[n] for n in names if n in reference and n in outs}
            self.shape_varies.update(n for n, r in same.items()
                                     if np.shape(outs[n]) != np.shape(r))
            self.per_output.update(outs, {n: r for n, r in same.items()
                                          if n not in self.shape_varies}, batch)
        self.seen += batch

    def result(self) -> TaskResult:
        """The metric and the agreement over every batch folded."""
        res = TaskResult(against=self.setup.against, samples=self.seen)
        if self.metric is not None:
            res.accuracy = self.metric.result()
            res.details = dict(self.metric.details())
            if math.isnan(res.accuracy):
                raise PipelineError(f"metric {self.setup.name} returned NaN; check the metric "
                                    "and the labels.")
        if self.agree is not None and self.agree.samples and \
                self.compare not in self.shape_varies:
            res.agreement = self.agree.result()
        if self.per_output is not None:
            res.outputs = {n: a for n, a in self.per_output.result().items()
                           if n not in self.shape_varies}
        if self.shape_varies:
            logger.warning("no element-wise agreement (SQNR, cosine) for %s: the shape differs "
                           "from the FP32 model's (e.g. a variable number of detections); "
                           "the task metric compares them.", ", ".join(sorted(self.shape_varies)))
        res.shape_varies = sorted(self.shape_varies)
        return res


def warn_if_flattened(output: str, shape: Sequence[int], metric: str | None) -> None:
    """Log that flattened agreement says little about a detector / OCR output."""
    if metric is None and len(shape) > 2:
        logger.warning(
            "output %s has shape %s: without a task metric, agreement is the arg-max of the "
            "whole flattened output and SQNR/cosine are over all of it, which hides damage to "
            "detector class scores or OCR steps; choose a task metric (detection, ctc-exact, "
            "cer, cosine or a plugin).", output, list(shape))
