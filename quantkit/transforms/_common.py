"""What the transforms share: the report, model copies and the weight layout of a layer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.qdq._model import GraphIndex, constants_to_initializers, name_nodes

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
    """How many node inputs (plus graph outputs) read each tensor."""
    count: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            if i:
                count[i] = count.get(i, 0) + 1
    for o in model.graph.output:
        count[o.name] = count.get(o.name, 0) + 1
    return count


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


def as_layer(node: onnx.NodeProto, index: GraphIndex) -> Layer | None:
    """The :class:`Layer` view of a node (None for other ops or non-constant weights)."""
    if node.op_type not in LAYER_OPS or len(node.input) < 2:
        return None
    w = node.input[1]
    if not index.is_constant(w) or index.elem_type(w) != onnx.TensorProto.FLOAT:
        return None
    rank = len(index.initializers[w].dims)
    attrs = int_attrs(node)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    reason = None
    if bias is not None and not index.is_constant(bias):
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
