"""Graph preparation shared by the Q/DQ writer and the FP16 pass."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear
FP16_QDQ_OPSET = 19  # float16 scales on QuantizeLinear/DequantizeLinear
MAX_PARSER_OPSET = 24  # TensorRT's ONNX parser supports 9-24
# (docs/tensorrt_rules.md#onnx-opsets)


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset of ``model``."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def upgrade_opset(model: onnx.ModelProto, target: int, source: str) -> onnx.ModelProto:
    """Convert ``model`` to at least opset ``target`` with onnx's version converter."""
    current = model_opset(model)
    if current >= target:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
    except Exception as err:
        raise InputError(
            f"{source}: the model is opset {current}; Q/DQ needs opset {target} and onnx's "
            f"version converter failed ({err}). Re-export the model with opset >= {target}."
        ) from err
    logger.info("%s: converted opset %d -> %d", source, current, target)
    return converted


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a stable, unique name (``{op_type}_{index}``)."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.op_type}_{i}" if not node.name else f"{node.name}_{i}"
        name, k = base, 1
        while name in taken or name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)
        taken.add(name)


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn tensor-valued ``Constant`` nodes into initializers (weights of paddle2onnx etc.).

    Returns:
        The number of nodes converted.
    """
    keep = []
    converted = 0
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            converted += 1
        else:
            keep.append(node)
    if converted:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return converted


@dataclass
class GraphIndex:
    """Producers, consumers and constants of a graph (built once, linear in its size)."""

    model: onnx.ModelProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = self.model.graph
        self.initializers = {t.name: t for t in g.initializer}
        for i, node in enumerate(g.node):
            self.order[node.name] = i
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)

    def is_constant(self, name: str) -> bool:
        """Whether ``name`` is an initializer."""
        return name in self.initializers

    def array(self, name: str) -> np.ndarray:
        """The value of an initializer."""
        return numpy_helper.to_array(self.initializers[name])

    def elem_type(self, name: str) -> int | None:
        """Element type of an initializer, if ``name`` is one."""
        t = self.initializers.get(name)
        return int(t.data_type) if t is not None else None


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    """Drop initializers that no node or graph output reads (and their graph inputs)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dropped = {t.name for t in model.graph.initializer if t.name not in used}
    if not dropped:
        return
    keep = [t for t in model.graph.initializer if t.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    inputs = [i for i in model.graph.input if i.name not in dropped]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


class UniqueNames:
    """Hands out names not yet used in a graph (``base``, ``base_1``, ``base_2``...)."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        """A fresh name derived from ``base`` (and reserve it)."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name
