"""Evaluate one model: task metric, agreement with the FP32 reference, latency, environment."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.backends.base import LatencyStats
from quantkit.errors import InputError
from quantkit.evaluate.compare import compared_tensor
from quantkit.evaluate.latency import cpu_source, measure
from quantkit.evaluate.metrics import AgreementResult, MetricSpec
from quantkit.evaluate.task import (
    ModelOutputs,
    TaskAccumulator,
    TaskSetup,
    warn_if_flattened,
)
from quantkit.options import DataOptions, TimingOptions, refuse_unknown, resolve_options


@dataclass
class EvalResult:
    """What :func:`evaluate_model` measured.

    ``latency`` is the primary latency (``latency_source`` on ``latency_target``): an engine
    measured on a GPU when one was given, else ONNX Runtime on the CPU, which is also kept in
    ``cpu_latency`` (``cpu-fake-quant`` for a Q/DQ model: fake quantisation in float, not a
    TensorRT speed). Each is per inference of one batch of ``latency.batch_size`` samples.
    """

    model: str
    samples: int
    metric: str | None = None
    accuracy: float | None = None
    agreement: AgreementResult | None = None
    latency: LatencyStats | None = None
    model_bytes: int = 0
    environment: dict[str, Any] = field(default_factory=dict)
    sqnr_tensor: str | None = None
    latency_source: str | None = None
    latency_target: str | None = None
    cpu_latency: LatencyStats | None = None
    #: the scored output
    output: str | None = None
    #: what the task metric was scored against: ``labels`` or ``fp32`` (the reference model)
    metric_against: str | None = None
    #: the metric's secondary values (e.g. precision, recall, mAP of a detection F1)
    details: dict[str, float] = field(default_factory=dict)
    #: agreement with the reference for every model output (SQNR, cosine, ...), by name
    outputs: dict[str, AgreementResult] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """Flat dict with the results.csv column names (docs/cli.md#sweep)."""
        a, lat, cpu = self.agreement, self.latency, self.cpu_latency
        return {
            "metric": self.metric, "accuracy": self.accuracy,
            "agreement": a.top1_agreement if a else None,
            "cosine": a.mean_cosine if a else None,
            "sqnr_db": a.sqnr_db if a else None,
            "max_abs_error": a.max_abs_error if a else None,
            "sqnr_tensor": self.sqnr_tensor if a else None,
            "latency_ms_p50": lat.p50_ms if lat else None,
            "latency_ms_p90": lat.p90_ms if lat else None,
            "latency_ms_p99": lat.p99_ms if lat else None,
            "latency_ms_p50_min": lat.p50_min_ms if lat else None,
            "latency_ms_p50_max": lat.p50_max_ms if lat else None,
            "latency_batch": lat.batch_size if lat else None,
            "latency_ms_per_sample": lat.per_sample_ms if lat else None,
            "throughput": lat.throughput if lat else None,
            "latency_source": self.latency_source if lat else None,
            "latency_target": self.latency_target if lat else None,
            "cpu_latency_ms_p50": cpu.p50_ms if cpu else None,
            "cpu_latency_ms_p99": cpu.p99_ms if cpu else None,
            "model_bytes": self.model_bytes,
            "backend": self.environment.get("backend"),
            "device": self.environment.get("device"),
            "samples": self.samples,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = asdict(self)
        for key in ("latency", "cpu_latency"):
            stats = getattr(self, key)
            if stats is not None:
                out[key] = stats.to_json()
        return out


def load_labels(path: str | os.PathLike[str], *, text: bool = False) -> np.ndarray:
    """Labels in data order, one per sample.

    Integer class labels (the default) come from ``.npy`` (no pickle), or ``.txt`` / ``.csv``
    (first column, an optional header line). With ``text=True`` (metrics whose labels are
    strings, e.g. ``cer``) each line of a UTF-8 text file is one label, verbatim (only the line
    break is removed; empty lines are empty labels), or a ``.npy`` holds a string array. A
    ``.json`` file holds box labels for the detection metrics: a list with one entry per image,
    each a list of ``[x1, y1, x2, y2, class]`` boxes.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return _load_box_labels(p)
    if not p.is_file():
        kinds = "a .txt file (one text per line) or a .npy string array" if text else \
            ".npy, .txt or .csv"
        raise InputError(f"labels={str(p)!r}: no such file ({kinds}, one label per sample in data "
                         "order).")
    if text:
        return _load_text_labels(p)
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            rows = [ln.split(",")[0].strip() for ln in p.read_text(encoding="utf-8").splitlines()
                    if ln.strip()]
            if rows and not rows[0].lstrip("-").isdigit():
                rows = rows[1:]  # a header line
            arr = np.array([int(r) for r in rows])
    except (ValueError, OSError) as err:
        raise InputError(f"labels={str(p)!r}: not readable as integer labels: {err}") from err
    return _class_labels(np.asarray(arr).reshape(-1), p)


def _class_labels(arr: np.ndarray, p: Path) -> np.ndarray:
    """Integer class indices; float arrays only when every value is a whole number."""
    if arr.dtype.kind in "iu":
        return arr
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if not bad.any():
            return arr.astype(np.int64)
        example = arr[np.argmax(bad)]
        raise InputError(f"labels={str(p)!r}: holds non-integer values (e.g. "
                         f"{float(example):g}); class "
                         "labels must be integer class indices. Regression or text labels need "
                         "a metric that reads them (metric=cosine, metric=cer...).")
    raise InputError(f"labels={str(p)!r}: holds {arr.dtype} values; class labels must be integer "
                     "class indices.")


def _load_box_labels(p: Path) -> np.ndarray:
    import json

    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(doc, list):
            raise ValueError("the top level is not a list (one entry per image)")
        images = []
        for i, boxes in enumerate(doc):
            arr = np.asarray(boxes, dtype=np.float64)
            if arr.size and (arr.ndim != 2 or arr.shape[1] != 5):
                raise ValueError(f"entry {i} is not a list of [x1, y1, x2, y2, class] boxes")
            images.append(arr.reshape(-1, 5))
    except (ValueError, TypeError, OSError) as err:
        raise InputError(f"labels {p}: not readable as box labels (JSON: one list per image of "
                         f"[x1, y1, x2, y2, class] boxes): {err}") from err
    out = np.empty(len(images), dtype=object)
    out[:] = images
    return out


def _load_text_labels(p: Path) -> np.ndarray:
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
            if arr.dtype.kind == "S":
                arr = np.char.decode(arr, "utf-8")
            if arr.dtype.kind != "U":
                raise ValueError(f"a {arr.dtype} array, not strings")
            return np.asarray(arr).reshape(-1)
        content = p.read_text(encoding="utf-8")
    except (ValueError, OSError) as err:  # UnicodeDecodeError is a ValueError
        raise InputError(f"labels={str(p)!r}: not readable as text labels (a UTF-8 .txt file, one "
                         f"text per line, or a .npy string array): {err}") from err
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line break
    return np.array([ln.removesuffix("\r") for ln in lines], dtype=str)


def environment(runner_description: dict[str, Any]) -> dict[str, Any]:
    """Backend, device and library versions for the report."""
    import onnx

    from quantkit import __version__

    env = dict(runner_description)
    env.update({"quantkit": __version__, "onnx": onnx.__version__, "numpy": np.__version__,
                "python": platform.python_version(), "os": platform.platform()})
    return env


def evaluate_model(model: str | os.PathLike[str], data: Any, *,
                   labels: np.ndarray | None = None,
                   reference: str | os.PathLike[str] | None = None,
                   metric: str | Mapping[str, Any] | MetricSpec | None = None,
                   output: str | None = None,
                   engine: str | os.PathLike[str] | None = None,
                   data_options: DataOptions | Mapping[str, Any] | None = None,
                   **settings: Any) -> EvalResult:
    """Accuracy, agreement with ``reference`` and latency of an ONNX model on ONNX Runtime.

    Args:
        model: the model to evaluate (FP32, FP16 or Q/DQ ONNX).
        data: a data source (``--data`` value, iterable of batches, ...).
        labels: labels in data order (integer classes, texts or boxes, as the metric takes).
        reference: the FP32 model for agreement metrics (top-1 agreement, cosine, SQNR, per
            output), and the targets of a task metric when no labels are given.
        metric: task metric spec (``NAME[:OPTIONS]``, a mapping, ``FILE.py:CLASS``; default
            ``top1`` when labels are given).
        output: which model output the metric and the headline agreement use (default: the
            first).
        engine: a TensorRT / TensorRT-RTX engine built from ``model``, timed on this
            machine's GPU with CUDA events (``measured`` latency, on the first batch).
        data_options: how the data is read (:class:`~quantkit.options.DataOptions` or a
            mapping of its fields); its batch size is also the latency batch.
        **settings: ``runtime`` (:class:`~quantkit.options.RuntimeOptions`: ONNX Runtime
            threads) and ``timing`` (:class:`~quantkit.options.TimingOptions`), or as keywords
            ``batch_size``, ``max_samples``, ``threads``, ``latency_iterations`` (timed runs
            per round, 0 to skip), ``latency_warmup`` and ``latency_repeats``.

    Agreement, cosine and SQNR compare the tensor :func:`quantkit.evaluate.compare.
    compared_tensor` names (the logits under a Softmax output), as ``quantkit sweep`` does;
    :attr:`EvalResult.outputs` has them for every model output as well.
    """
    from quantkit.backends.onnxruntime import OrtRunner
    from quantkit.data import InputLayout, batch_samples, open_source, static_batch_chunks
    from quantkit.data.base import check_batch_args
    from quantkit.model import input_specs, load_model

    timing = TimingOptions.of(settings.pop("timing", None), **{
        key: settings.pop(f"latency_{key}") for key in ("iterations", "warmup", "repeats")
        if f"latency_{key}" in settings})
    rest = {**settings, "data_options": data_options}
    opts = resolve_options(rest, "evaluate_model")
    refuse_unknown(rest, "evaluate_model")
    batch_size, max_samples, threads = (opts.data.batch_size, opts.data.max_samples,
                                        opts.runtime.threads)
    latency_iterations, latency_warmup, latency_repeats = (timing.iterations, timing.warmup,
                                                           timing.repeats)
    check_batch_args(batch_size, max_samples)
    proto = load_model(model, load_external_data=False)
    layout = InputLayout.from_options(opts.data.open_kwargs())
    specs = input_specs(proto, layout)
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
    runner = OrtRunner(model, threads=threads)
    out_name = output or runner.output_names[0]
    if out_name not in runner.output_names:
        raise InputError(f"output {out_name!r}: the model's outputs are "
                         f"{', '.join(runner.output_names)}.")
    task = TaskSetup(metric, reference if reference is not None else model,
                     has_labels=labels is not None, has_reference=reference is not None)
    compare = compared_tensor(reference, out_name) if reference is not None else out_name
    scored = ModelOutputs(model, compare, threads, layout=layout)
    ref_runner = (ModelOutputs(reference, compare, threads, layout=layout)
                  if reference is not None else None)
    acc = TaskAccumulator(task, out_name, compare, labels, agreement=ref_runner is not None,
                          output_names=runner.output_names)
    source = open_source(data, specs, **opts.data.open_kwargs())
    first: dict[str, np.ndarray] | None = None
    for batch in source.batches(batch_size, max_samples):
        if first is None:
            first = batch
        outs = scored.run(batch)
        ref_outs = ref_runner.run(batch) if ref_runner is not None else None
        if acc.seen == 0:
            warn_if_flattened(out_name, outs[out_name].shape, task.name)
        acc.update(outs, ref_outs, batch_samples(batch, specs))
    seen = acc.seen
    if seen == 0:
        raise InputError(f"data {getattr(source, 'description', data)}: contains no samples.")
    if labels is not None and max_samples is None and seen != len(labels):
        raise InputError(f"labels: {len(labels)} labels for {seen} samples; give one label "
                         "per sample, in data order.")
    res = acc.result()
    cpu = latency = None
    desc = runner.describe()
    lat_source, target = cpu_source(has_qdq), str(desc["device"])
    if latency_iterations > 0 and first is not None:
        feed = next(static_batch_chunks(first, specs))  # as the model takes it
        cpu = latency = measure(lambda: runner.infer(feed),
                                batch_size=batch_samples(feed, specs, fed=True),
                                warmup=latency_warmup, iterations=latency_iterations,
                                repeats=latency_repeats)
        if engine is not None:
            timed = _measured(engine, feed, latency_warmup, latency_iterations, latency_repeats)
            latency, lat_source, target = timed.stats, "measured", timed.gpu
    size = Path(model).stat().st_size
    data_file = Path(f"{model}.data")
    if data_file.exists():
        size += data_file.stat().st_size
    return EvalResult(str(model), seen, task.name, res.accuracy, res.agreement, latency, size,
                      environment(desc), compare if res.agreement else None, lat_source,
                      target, cpu, output=out_name, metric_against=res.against,
                      details=res.details, outputs=res.outputs)


def _measured(engine: str | os.PathLike[str], feed: dict[str, np.ndarray], warmup: int,
              iterations: int, repeats: int) -> Any:
    from quantkit.backends.runner import measure_engine

    if not Path(engine).is_file():
        raise InputError(f"engine {engine}: no such file; give an engine built from the model "
                         "(quantkit build).")
    timed = measure_engine(engine, feed, warmup=warmup, iterations=iterations,
                           repeats=repeats)
    if timed is None:
        raise InputError(f"engine {engine}: measured latency needs an NVIDIA GPU with its "
                         "driver and pycuda or cuda-python; none was found here. Leave the "
                         "engine out to time the model on ONNX Runtime.")
    return timed
