"""Preparation passes run before a graph is analysed or rewritten: opset, node names, weights.

Each pass edits a model in place and is safe on models with If/Loop/Scan bodies: names handed
out avoid every name of every scope, and a ``Constant`` of the main graph that a body reads
stays readable (as an initializer of the same name, which bodies see like any outer tensor).
"""

from __future__ import annotations

import logging

import onnx

from quantkit.errors import InputError
from quantkit.graph.scope import nested_nodes

logger = logging.getLogger(__name__)

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear
FP16_QDQ_OPSET = 19  # float16 scales on QuantizeLinear/DequantizeLinear
#: the TensorRT ONNX parser reads opsets 9 to 24 (docs/tensorrt_rules.md#onnx-opsets)
MAX_PARSER_OPSET = 24


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset of ``model``."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def upgrade_opset(model: onnx.ModelProto, target: int, source: str) -> onnx.ModelProto:
    """Convert ``model`` to at least opset ``target`` with onnx's version converter.

    Args:
        model: the model (returned as is when its opset is already ``target`` or newer).
        target: the opset needed.
        source: the model's path, for messages.

    Raises:
        InputError: the converter cannot convert the model.
    """
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
    """Give every unnamed (or duplicate-named) main-graph node a stable, unique name.

    The new name is ``{op_type}_{index}`` (``{name}_{index}`` for a duplicate), made unique
    against the node names of every scope, subgraphs included.
    """
    nodes = model.graph.node
    taken = {n.name for n in nodes if n.name} | {n.name for n in nested_nodes(model.graph)
                                                 if n.name}
    seen: set[str] = set()
    for i, node in enumerate(nodes):
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
    """Turn the main graph's tensor-valued ``Constant`` nodes into initializers.

    Exported weights are often ``Constant`` nodes (paddle2onnx, many torch exports); as
    initializers the writer and the transforms can rewrite them. The initializer keeps the
    output's name, so readers (subgraph bodies included) are unaffected. Constants inside
    bodies stay where they are.

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


__all__ = ["FP16_QDQ_OPSET", "MAX_PARSER_OPSET", "MIN_OPSET", "constants_to_initializers",
           "model_opset", "name_nodes", "upgrade_opset"]
