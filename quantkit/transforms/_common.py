"""What the transforms share: the report, model copies and the weight layout of a layer."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit._ort import session
from quantkit.data import open_source
from quantkit.data.base import DataSource, InputLayout, batch_samples, static_batch_chunks
from quantkit.errors import InputError, PipelineError
from quantkit.graph import (
    GraphIndex,
    UniqueNames,
    constants_to_initializers,
    name_nodes,
    use_counts,
)
from quantkit.model import input_specs, save_model
from quantkit.options import RunOptions, refuse_unknown, resolve_options

#: metadata key of the transforms applied to a model (a JSON list of reports, oldest first);
#: the Q/DQ writer copies metadata, so the quantized model carries it.
TRANSFORMS_METADATA_KEY = "quantkit.transforms"

#: layers whose weights the transforms rewrite.
LAYER_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass
class TransformReport:
    """What a transform changed, as plain data (stored in the model's metadata).

    Attributes:
        transform: ``equalize`` / ``bias_correction`` / ...
        settings: the transform's parameters.
        changed: one entry per layer or pair rewritten, with its statistics.
        skipped: one entry per candidate left alone, with ``reason``.
    """

    transform: str
    settings: dict[str, Any] = field(default_factory=dict)
    changed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"transform": self.transform, "settings": self.settings,
                "changed": self.changed, "skipped": self.skipped}

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return f"{self.transform}: {len(self.changed)} changed, {len(self.skipped)} skipped"


def working_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with unnamed nodes named and ``Constant`` weights turned into initializers.

    Both are what :func:`quantkit.qdq.writer.prepare` does before quantizing, with the same
    names (``{op_type}_{index}``), so node names are the same with and without a transform.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    name_nodes(out)
    constants_to_initializers(out)
    return out


def record(model: onnx.ModelProto, report: TransformReport) -> None:
    """Append ``report`` to the model's ``quantkit.transforms`` metadata."""
    meta = {p.key: p for p in model.metadata_props}
    entry = meta.get(TRANSFORMS_METADATA_KEY)
    done = json.loads(entry.value) if entry is not None else []
    done.append(report.to_dict())
    text = json.dumps(done, allow_nan=False, default=float)
    if entry is not None:
        entry.value = text
    else:
        model.metadata_props.append(
            onnx.StringStringEntryProto(key=TRANSFORMS_METADATA_KEY, value=text))


def applied_transforms(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """The reports stored in a model by the transforms (empty if none ran)."""
    for p in model.metadata_props:
        if p.key == TRANSFORMS_METADATA_KEY:
            return list(json.loads(p.value))
    return []


def int_attrs(node: onnx.NodeProto) -> dict[str, int]:
    """Integer attributes of a node."""
    return {a.name: int(a.i) for a in node.attribute if a.type == onnx.AttributeProto.INT}


def set_initializer(index: GraphIndex, name: str, value: np.ndarray) -> None:
    """Overwrite an initializer's value in place (same name, same dtype)."""
    t = index.initializers[name]
    new = numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name)
    t.CopyFrom(new)


def use_count(model: onnx.ModelProto) -> dict[str, int]:
    """How many times each tensor is read (:func:`quantkit.graph.use_counts`).

    Reads inside If/Loop/Scan bodies count: a weight a branch also reads is shared, so a
    transform leaves it alone.
    """
    return use_counts(model.graph)


@dataclass
class Layer:
    """A Conv / Gemm / MatMul with a constant weight, and where its channels live.

    Attributes:
        node: the node.
        weight: weight initializer name.
        bias: bias initializer name (Conv input 2, Gemm C), or None.
        out_axis: weight axis of the output channels.
        reason: why the layer cannot take part (None when it can).
    """

    node: onnx.NodeProto
    weight: str
    bias: str | None
    out_axis: int
    reason: str | None = None

    @property
    def name(self) -> str:
        """Node name."""
        return str(self.node.name)


def auxiliary_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, UniqueNames]:
    """A copy of ``model`` to add statistics outputs to, and a generator of unused names.

    The transforms measure per-channel statistics inside ONNX Runtime with such a copy: nodes
    that reduce an activation are appended and become the graph outputs.
    """
    aux = onnx.ModelProto()
    aux.CopyFrom(model)
    return aux, UniqueNames.for_model(aux)


def as_layer(node: onnx.NodeProto, index: GraphIndex) -> Layer | None:
    """The :class:`Layer` view of a node (None for other ops or non-constant weights)."""
    if node.op_type not in LAYER_OPS or len(node.input) < 2:
        return None
    w = node.input[1]
    if not index.is_initializer(w) or index.elem_type(w) != onnx.TensorProto.FLOAT:
        return None
    rank = len(index.initializers[w].dims)
    attrs = int_attrs(node)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    reason = None
    if bias is not None and not index.is_initializer(bias):
        reason = "its bias is not a constant"
        bias = None
    if node.op_type == "Conv":
        return Layer(node, w, bias, 0, reason)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            reason = reason or "Gemm with transA=1"
        return Layer(node, w, bias, 0 if attrs.get("transB", 0) else 1, reason)
    if rank != 2:
        reason = reason or f"MatMul weight of rank {rank} (only 2-D weights are handled)"
    return Layer(node, w, None, rank - 1, reason)


def in_channel_map(layer: Layer, w: np.ndarray, channels: int) -> np.ndarray | None:
    """For each weight element, the index of the input channel it multiplies.

    ``channels`` is the number of channels of the tensor feeding the layer *before* a Flatten:
    a Gemm/MatMul reading ``Flatten(N, C, H, W)`` sees feature ``c * H * W + k`` for channel
    ``c`` (channel-major), so each channel owns a block of ``K / C`` features. None when the
    weight's input size does not match ``channels``.
    """
    op = layer.node.op_type
    if op == "Conv":
        group = int_attrs(layer.node).get("group", 1)
        cout, cin_g = w.shape[0], w.shape[1]
        if cin_g * group != channels or cout % group:
            return None
        o = np.arange(cout).reshape((cout, 1) + (1,) * (w.ndim - 2))
        j = np.arange(cin_g).reshape((1, cin_g) + (1,) * (w.ndim - 2))
        return np.broadcast_to((o // (cout // group)) * cin_g + j, w.shape)
    in_axis = 1 if op == "Gemm" and layer.out_axis == 0 else 0
    k = w.shape[in_axis]
    if k % channels:
        return None
    feature = np.arange(k) // (k // channels)
    shape = [1] * w.ndim
    shape[in_axis] = k
    return np.broadcast_to(feature.reshape(shape), w.shape)


def channel_range(w: np.ndarray, axis: int) -> np.ndarray:
    """Max |w| over every axis but ``axis`` (float64)."""
    red = tuple(i for i in range(w.ndim) if i != axis)
    return np.asarray(np.abs(w.astype(np.float64)).max(axis=red))


def grouped_range(w: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """Max |w| of the elements mapped to each of ``n`` groups (see :func:`in_channel_map`)."""
    out = np.zeros(n, dtype=np.float64)
    np.maximum.at(out, groups.ravel(), np.abs(w.astype(np.float64)).ravel())
    return out


# ------------------------------------------------------------------ warnings and verification


#: at most this many distinct reasons in one warning (the report has them all).
_WARN_REASONS = 6


def warn_skipped(logger: logging.Logger, report: TransformReport, *, hint: str = "") -> None:
    """Warn (``logger.warning``) about candidates a transform could not handle, by reason.

    Entries marked ``terminal`` (a layer with no following layer: nothing to pair with) are
    not warned about. When nothing changed at all the warning says the model is unchanged.
    """
    by_reason: dict[str, list[str]] = {}
    for s in report.skipped:
        if s.get("terminal"):
            continue
        first = s.get("first", s.get("layer", s.get("node", "?")))
        name = f"{first} -> {s['second']}" if s.get("second") else str(first)
        by_reason.setdefault(str(s.get("reason")), []).append(name)
    parts = []
    for reason, names in list(by_reason.items())[:_WARN_REASONS]:
        more = f" (+{len(names) - 4} more)" if len(names) > 4 else ""
        parts.append(f"{', '.join(names[:4])}{more}: {reason}")
    if len(by_reason) > _WARN_REASONS:
        parts.append(f"{len(by_reason) - _WARN_REASONS} more reason(s) in the report's "
                     "'skipped' list")
    tail = f" {hint}" if hint and parts else ""
    if not report.changed:
        why = "; ".join(parts) if parts else "no candidate in the model"
        logger.warning("%s did not apply: nothing changed, the model is returned as it was. "
                       "Why: %s.%s", report.transform, why, tail)
    elif parts:
        logger.warning("%s: %d candidate(s) left unchanged: %s.%s", report.transform,
                       sum(len(v) for v in by_reason.values()), "; ".join(parts), tail)


def recording_source(data: Any, model: onnx.ModelProto, keep: int,
                     data_options: Mapping[str, Any] | None = None,
                     ) -> tuple[Any, list[dict[str, np.ndarray]]]:
    """``data`` opened for ``model``, wrapped so that its first ``keep`` samples are kept.

    A transform streams its statistics pass through the returned source; the batches kept in
    the list then feed :func:`verify_fp32` without reading the data a second time (a one-shot
    iterator stays usable).
    """
    source = open_source(data, input_specs(model), **dict(data_options or {}))
    kept: list[dict[str, np.ndarray]] = []

    class _Recorder(DataSource):
        description = source.description

        @property
        def num_samples(self) -> int | None:
            return source.num_samples

        def num_batches(self, batch_size: int, max_samples: int | None = None) -> int | None:
            return source.num_batches(batch_size, max_samples)

        def batches(self, batch_size: int, max_samples: int | None = None,
                    ) -> Iterator[dict[str, np.ndarray]]:
            for batch in source.batches(batch_size, max_samples):
                have = sum(len(next(iter(b.values()))) for b in kept)
                if have < keep:
                    kept.append({k: np.asarray(v) for k, v in batch.items()})
                yield dict(batch)

    return _Recorder(), kept


def first_batches(data: Any, model: onnx.ModelProto, samples: int, *, batch_size: int = 32,
                  data_options: Mapping[str, Any] | None = None) -> list[dict[str, np.ndarray]]:
    """The first ``samples`` samples of ``data`` as batches (read once; for verification)."""
    source, kept = recording_source(data, model, samples, data_options)
    for _ in source.batches(batch_size, samples):
        pass
    return kept


def verify_fp32(original: onnx.ModelProto, transformed: onnx.ModelProto, data: Any, *,
                atol: float = 1e-5, rtol: float = 1e-3, batch_size: int = 32,
                max_samples: int = 32, data_options: Mapping[str, Any] | None = None,
                providers: Sequence[str] | None = None, transform: str = "transform",
                ) -> dict[str, Any]:
    """Check that ``transformed`` computes what ``original`` does, on the first samples.

    Both models run through ONNX Runtime on the first ``max_samples`` samples of ``data``
    (anything :func:`quantkit.data.open_source` accepts, or the batches kept by
    :func:`recording_source`). Every graph output of ``original`` passes when
    ``max|got - want| <= atol + rtol * max|want|`` (``rtol`` is relative to the output's
    largest magnitude: element-wise relative errors are meaningless near zero).

    Returns:
        ``{"samples", "max_abs_diff", "max_rel_diff", "output", "atol", "rtol"}`` (the worst
        output; ``max_rel_diff`` = max abs diff / max |want| of that output).

    Raises:
        PipelineError: an output differs by more than the tolerance (the transform is
            refused; the message has the measured differences).
        InputError: no samples in ``data``.
    """
    import tempfile
    from pathlib import Path

    specs = input_specs(original, InputLayout.from_options(data_options))
    source = open_source(data, specs, **dict(data_options or {}))
    names = [o.name for o in original.graph.output]
    diff = dict.fromkeys(names, 0.0)
    peak = dict.fromkeys(names, 0.0)
    seen = 0
    with tempfile.TemporaryDirectory(prefix="quantkit-verify-") as tmp:
        paths = [Path(tmp) / "a" / "model.onnx", Path(tmp) / "b" / "model.onnx"]
        for m, p in zip((original, transformed), paths, strict=True):
            p.parent.mkdir()
            save_model(m, p)
        sessions = [session(str(p), providers=list(providers or ["CPUExecutionProvider"]))
                    for p in paths]
        for batch in source.batches(batch_size, max_samples):
            feeds = {s.name: np.asarray(batch[s.name]) for s in specs}
            for chunk in static_batch_chunks(feeds, specs):
                want, got = (s.run(names, chunk) for s in sessions)
                for name, a, b in zip(names, want, got, strict=True):
                    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
                    if a64.shape != b64.shape:
                        raise PipelineError(f"{transform}: refused: output '{name}' has shape "
                                            f"{b64.shape} after the transform, {a64.shape} "
                                            "before.")
                    d = np.where(np.isnan(a64) & np.isnan(b64), 0.0, np.abs(b64 - a64))
                    worst_d = float(d.max(initial=0.0))
                    diff[name] = max(diff[name], worst_d if not np.isnan(worst_d)
                                     else float("inf"))
                    peak[name] = max(peak[name], float(np.abs(a64).max(initial=0.0)))
                seen += batch_samples(chunk, specs, fed=True)
        del sessions
    if seen == 0:
        raise InputError(f"{transform}: no samples to verify the FP32 output on.")
    worst = max(names, key=lambda k: diff[k] - (atol + rtol * peak[k]))
    rel = diff[worst] / peak[worst] if peak[worst] > 0 else diff[worst]
    result = {"samples": seen, "output": worst, "max_abs_diff": diff[worst],
              "max_rel_diff": rel, "atol": atol, "rtol": rtol}
    if not diff[worst] <= atol + rtol * peak[worst]:
        raise PipelineError(
            f"{transform}: refused: the transformed model's output '{worst}' differs from the "
            f"FP32 model's by max abs {diff[worst]:.3g} (max abs / max|output| = {rel:.3g}) on "
            f"the first {seen} samples, more than the tolerance {atol:g} + {rtol:g} x "
            f"max|output| ({peak[worst]:.3g}). The transform is not function-preserving on "
            "this model/data; report it as a quantkit bug with the model, or leave this "
            "transform out.")
    return result


@dataclass(frozen=True)
class DataRun:
    """How a transform reads its data: what :class:`~quantkit.options.RunOptions` holds."""

    batch_size: int
    max_samples: int | None
    data_options: dict[str, Any]
    providers: list[str] | None


def data_run(options: RunOptions | None, settings: dict[str, Any], where: str) -> DataRun:
    """The data reading of a transform from ``options`` or from its fields given as keywords.

    A transform takes ``options=`` (the run's option groups) or, like
    :func:`quantkit.capture.calibrate`, the groups or their fields as keywords (``batch_size``,
    ``max_samples``, ``data_options``, ``providers``...); any other keyword is refused.
    """
    if options is None:
        options = resolve_options(settings, where)
    refuse_unknown(settings, where)
    return DataRun(options.data.batch_size, options.data.max_samples,
                   options.data.open_kwargs(), options.runtime.provider_list)
