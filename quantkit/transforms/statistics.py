"""Per-channel activation statistics that consecutive transforms share (one capture pass).

High-bias absorption needs the per-channel minimum of each pair's first-layer output;
SmoothQuant needs the per-channel max |x| of each MatMul/Gemm input. Both are per-channel
maxima (of ``-x`` and of ``|x|``), reduced inside ONNX Runtime by an auxiliary copy of the
model whose outputs are the reductions: only ``channels`` floats per tensor and batch leave
the session. :class:`ActivationStatistics` measures every requested :class:`ChannelStat` of a
model in one streaming pass over the data, keeps the values, and measures again only what is
missing or was invalidated.

The validity rule (what :meth:`ActivationStatistics.invalidate` is for): a statistic stays
valid as long as its tensor keeps its values. A function-preserving transform changes only
the tensors *inside* the structures it rewrites (the first layer's output of a pair and the
tensors between the two layers; the LayerNormalization output SmoothQuant folds ``1/s``
into) and says which (:attr:`quantkit.transforms.rescue.StepResult.changed_tensors`); their
statistics are dropped and measured again on the transformed model. Tensors after the rewritten
structure compute the same function, equal to their old values up to float rounding, and keep
their statistics. A transform that is not function-preserving drops every statistic.

Also kept: the first ``keep`` samples of the first pass, for the transforms that verify the
FP32 outputs on them (so verification does not read the data again).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.capture.runner import ActivationCapture
from quantkit.data import open_source
from quantkit.data.base import DataSource, InputLayout, check_batch_args
from quantkit.graph import UniqueNames, model_opset
from quantkit.model import save_model
from quantkit.transforms._common import recording_source

#: the reductions: ``abs_max`` -- max |x| per channel of the last axis (SmoothQuant's
#: MatMul/Gemm inputs); ``neg_max`` -- max(-x) per channel of axis 1 (= -min x; high-bias
#: absorption's Conv/Gemm outputs).
Reduction = Literal["abs_max", "neg_max"]


@dataclass(frozen=True)
class ChannelStat:
    """One per-channel statistic of one tensor.

    Attributes:
        tensor: the tensor's name in the model.
        reduction: ``abs_max`` (channels on the last axis) or ``neg_max`` (channels on axis 1).
        channels: number of channels (the length of the value).
        rank: the tensor's rank for ``neg_max`` (every axis but 1 is reduced); 0 for
            ``abs_max`` (the tensor is reshaped to ``[-1, channels]``).
    """

    tensor: str
    reduction: Reduction
    channels: int
    rank: int = 0


def statistics_model(model: onnx.ModelProto, stats: Sequence[ChannelStat],
                     ) -> tuple[onnx.ModelProto, dict[ChannelStat, str]]:
    """A copy of ``model`` whose outputs are the requested reductions (one per statistic)."""
    aux = onnx.ModelProto()
    aux.CopyFrom(model)
    unique = UniqueNames.for_model(aux)
    g = aux.graph
    del g.output[:]
    axes_as_input = model_opset(aux) >= 18
    outs: dict[ChannelStat, str] = {}
    for k, st in enumerate(stats):
        pre = f"qk_stats/{k}"
        as_float, m = unique(f"{pre}/float"), unique(f"{pre}/max")
        g.node.append(helper.make_node("Cast", [st.tensor], [as_float],
                                       to=onnx.TensorProto.FLOAT, name=unique(f"{pre}/Cast")))
        if st.reduction == "abs_max":
            shape, flat, mapped = (unique(f"{pre}/{t}") for t in ("shape", "flat", "abs"))
            g.initializer.append(numpy_helper.from_array(
                np.array([-1, st.channels], np.int64), shape))
            g.node.extend([
                helper.make_node("Reshape", [as_float, shape], [flat],
                                 name=unique(f"{pre}/Reshape")),
                helper.make_node("Abs", [flat], [mapped], name=unique(f"{pre}/Abs"))])
            axes = [0]
        else:
            mapped = unique(f"{pre}/neg")
            g.node.append(helper.make_node("Neg", [as_float], [mapped],
                                           name=unique(f"{pre}/Neg")))
            axes = [0, *range(2, st.rank)]
        if axes_as_input:
            an = unique(f"{pre}/axes")
            g.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), an))
            g.node.append(helper.make_node("ReduceMax", [mapped, an], [m], keepdims=0,
                                           name=unique(f"{pre}/ReduceMax")))
        else:
            g.node.append(helper.make_node("ReduceMax", [mapped], [m], axes=axes, keepdims=0,
                                           name=unique(f"{pre}/ReduceMax")))
        g.output.append(helper.make_tensor_value_info(m, onnx.TensorProto.FLOAT,
                                                      [st.channels]))
        outs[st] = m
    return aux, outs


def stream_outputs(aux: onnx.ModelProto, names: Sequence[str], data: Any, batch_size: int,
                   max_samples: int | None, data_options: Mapping[str, Any] | None,
                   providers: Sequence[str] | None,
                   sink: Callable[[Mapping[str, np.ndarray], ActivationCapture], None],
                   description: str) -> int:
    """Run the auxiliary model ``aux`` over the data, streaming; return the samples seen.

    Only the outputs ``names`` are captured (the model's inputs may be integer ids, not
    activations); each chunk's outputs go to ``sink(outputs, capture)``, where
    ``capture.chunk_samples`` is that chunk's sample count.
    """
    check_batch_args(batch_size, max_samples)
    with tempfile.TemporaryDirectory(prefix="quantkit-stats-") as tmp:
        path = Path(tmp) / "stats.onnx"
        save_model(aux, path)
        capture = ActivationCapture(path, list(names), providers=providers,
                                    layout=InputLayout.from_options(data_options))
        source = open_source(data, capture.inputs, **dict(data_options or {}))
        desc = source.description if isinstance(source, DataSource) else str(data)

        def feed(acts: Mapping[str, np.ndarray], cap: ActivationCapture = capture) -> None:
            sink(acts, cap)

        seen = capture.run(source.batches(batch_size, max_samples), feed, source=desc,
                           total=source.num_batches(batch_size, max_samples),
                           description=description)
        del capture  # release the session before the temporary model goes
    return seen


def max_pass(aux: onnx.ModelProto, outs: Mapping[Any, str], data: Any, batch_size: int,
             max_samples: int | None, data_options: Mapping[str, Any] | None,
             providers: Sequence[str] | None, description: str = "transform statistics",
             ) -> tuple[dict[Any, np.ndarray], int]:
    """Run ``aux`` over the data (streaming); the element-wise max of each output over batches.

    ``outs`` maps a key to an output of ``aux``; returns ``{key: max}`` and the samples seen.
    """
    maxima: dict[Any, np.ndarray] = {}

    def sink(acts: Mapping[str, np.ndarray], _: ActivationCapture) -> None:
        for key, m in outs.items():
            v = acts[m].astype(np.float64)
            maxima[key] = v if key not in maxima else np.maximum(maxima[key], v)

    seen = stream_outputs(aux, list(outs.values()), data, batch_size, max_samples,
                          data_options, providers, sink, description)
    return maxima, seen


class ActivationStatistics:
    """Per-channel activation statistics over one data set, measured once and shared.

    Args:
        data: calibration data (anything :func:`quantkit.data.open_source` accepts; read once
            per pass, so a pass that has to measure again needs re-readable data).
        batch_size: samples per batch.
        max_samples: use at most this many samples.
        data_options: options for ``open_source``.
        providers: ONNX Runtime execution providers.
        keep: samples of the first pass to keep for verification (:attr:`kept`).

    Attributes:
        passes: capture passes run so far (each one ONNX Runtime pass over the data).
        samples: samples of the last pass (None before the first).
    """

    def __init__(self, data: Any, *, batch_size: int = 32, max_samples: int | None = None,
                 data_options: Mapping[str, Any] | None = None,
                 providers: Sequence[str] | None = None, keep: int = 0) -> None:
        check_batch_args(batch_size, max_samples)
        self.data = data
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.data_options = data_options
        self.providers = providers
        self.keep = keep
        self.passes = 0
        self.samples: int | None = None
        self._values: dict[ChannelStat, np.ndarray] = {}
        self._kept: list[dict[str, np.ndarray]] | None = None

    def missing(self, stats: Iterable[ChannelStat]) -> list[ChannelStat]:
        """The statistics not measured yet (or invalidated since), in order, without repeats."""
        return list(dict.fromkeys(s for s in stats if s not in self._values))

    def measure(self, model: onnx.ModelProto, stats: Iterable[ChannelStat], *,
                description: str = "transform statistics") -> None:
        """Measure the missing ones of ``stats`` on ``model`` in one pass (none if all known)."""
        todo = self.missing(stats)
        if not todo:
            return
        data, options = self.data, self.data_options
        if self._kept is None and self.keep > 0:  # the first pass keeps the first samples
            data, self._kept = recording_source(data, model, self.keep, options)
            options = None
        aux, outs = statistics_model(model, todo)
        values, seen = max_pass(aux, outs, data, self.batch_size, self.max_samples, options,
                                self.providers, description=description)
        self.passes += 1
        self.samples = seen
        self._values.update(values)

    def get(self, model: onnx.ModelProto, stats: Sequence[ChannelStat], *,
            description: str = "transform statistics") -> dict[ChannelStat, np.ndarray]:
        """The values of ``stats`` for ``model``, measuring the missing ones in one pass."""
        self.measure(model, stats, description=description)
        return {s: self._values[s] for s in stats}

    def invalidate(self, tensors: Iterable[str] | None) -> None:
        """Drop the statistics of ``tensors`` (None: of every tensor)."""
        if tensors is None:
            self._values.clear()
            return
        gone = set(tensors)
        for s in [s for s in self._values if s.tensor in gone]:
            del self._values[s]

    def kept(self, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
        """The first ``keep`` samples (read now if no pass has run yet), for verification."""
        if self._kept is None:
            source, self._kept = recording_source(self.data, model, self.keep,
                                                  self.data_options)
            for _ in source.batches(self.batch_size, self.keep):
                pass
        return self._kept


__all__ = ["ActivationStatistics", "ChannelStat", "Reduction", "max_pass", "statistics_model"]
