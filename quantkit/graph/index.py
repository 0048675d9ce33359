"""One index of an ONNX model's main graph, built once and shared by every pass.

:class:`GraphIndex` maps every tensor to its producer and readers, knows which tensors are
constants and the element type of every tensor. Weights count as constants whether they are
initializers or outputs of ``Constant`` nodes, also behind ``Identity`` nodes: real exported
models store weights that way (docs/tensorrt_rules.md#weights-stored-as-constant-nodes).

Subgraphs count: a node holding an If/Loop/Scan body reads every outer tensor the body reads,
so it is among that tensor's consumers and in its use count.

Building the index is linear in the graph size; constant values are decoded lazily and only for
the tensors asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from quantkit.graph.scope import node_reads, use_counts

logger = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                         TensorProto.DOUBLE})
#: single-data-input ops that only move or reshape data; TensorRT propagates DQ forward and Q
#: backward through them (docs/tensorrt_rules.md#precision-as-the-builder-sees-it).
TRANSPARENT_OPS = frozenset({"Identity", "Reshape", "Transpose", "Flatten", "Squeeze",
                             "Unsqueeze"})
_SHORT: dict[int, str] = {
    TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16",
    TensorProto.DOUBLE: "fp64", TensorProto.INT8: "int8", TensorProto.UINT8: "uint8",
    TensorProto.INT32: "int32", TensorProto.INT64: "int64", TensorProto.BOOL: "bool",
    TensorProto.INT16: "int16", TensorProto.UINT16: "uint16", TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4", TensorProto.FLOAT8E4M3FN: "fp8"}
_FIXED_OUT = {"Shape": TensorProto.INT64, "Size": TensorProto.INT64,
              "NonZero": TensorProto.INT64, "ArgMax": TensorProto.INT64,
              "ArgMin": TensorProto.INT64, "Equal": TensorProto.BOOL,
              "Less": TensorProto.BOOL, "Greater": TensorProto.BOOL, "Not": TensorProto.BOOL,
              "And": TensorProto.BOOL, "Or": TensorProto.BOOL, "IsNaN": TensorProto.BOOL,
              "IsInf": TensorProto.BOOL, "LessOrEqual": TensorProto.BOOL,
              "GreaterOrEqual": TensorProto.BOOL}


def type_name(elem_type: int | None) -> str:
    """Short name of an ONNX element type: ``fp32``, ``fp16``, ``int8``... (``?`` if unknown)."""
    if elem_type is None or elem_type == 0:
        return "?"
    if elem_type in _SHORT:
        return _SHORT[elem_type]
    try:
        return str(TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        return f"type{elem_type}"


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node attribute, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class GraphIndex:
    """Producer/consumer maps, constants, element types and use counts of a model's main graph.

    Attributes:
        model: the model.
        base_dir: folder for tensors stored as external data.
        nodes: the graph's nodes, in graph order.
        names: a display name per node (``op_type_index`` for unnamed nodes).
        position: node name -> index in ``nodes`` (named nodes).
        initializers: initializer name -> TensorProto.
        producer: tensor name -> index of the node that produces it.
        consumers: tensor name -> indices of the nodes that read it, each once (a node holding
            a subgraph reads every outer tensor the subgraph reads).
        uses: tensor name -> number of reads: node inputs, reads inside subgraphs (each
            reading input once) and graph outputs.
        graph_inputs: real graph inputs (not initializers).
        graph_outputs: graph output names.
        opset: version of the default ONNX domain (0 if absent).
        types: tensor name -> ONNX element type (0 when unknown).
    """

    model: onnx.ModelProto
    base_dir: str = ""

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)]
        self.position: dict[str, int] = {}
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.graph_inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.graph_outputs = {v.name for v in graph.output}
        self.opset = next((o.version for o in self.model.opset_import
                           if o.domain in ("", "ai.onnx")), 0)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        self._constant_nodes: dict[str, onnx.NodeProto] = {}
        self._arrays: dict[str, np.ndarray | None] = {}
        for i, node in enumerate(self.nodes):
            if node.name:
                self.position.setdefault(node.name, i)
            for name in node.output:
                if name:
                    self.producer[name] = i
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                self._constant_nodes[node.output[0]] = node
            for name in node_reads(node):
                self.consumers.setdefault(name, []).append(i)
        self.uses: dict[str, int] = use_counts(graph)
        self.types: dict[str, int] = {}
        self._infer_types()

    # --- constants ---------------------------------------------------------------------------
    def is_initializer(self, name: str) -> bool:
        """Whether ``name`` is an initializer of the main graph (a value passes can rewrite)."""
        return name in self.initializers

    def const_tensor(self, name: str) -> onnx.TensorProto | None:
        """The TensorProto behind a constant tensor, or ``None``.

        Follows ``Identity`` nodes to an initializer or a ``Constant`` node's ``value``.
        """
        for _ in range(8):
            if name in self.initializers:
                return self.initializers[name]
            node = self._constant_nodes.get(name)
            if node is not None:
                value = attr(node, "value")
                return value if isinstance(value, onnx.TensorProto) else None
            p = self.producer.get(name)
            if p is None or self.nodes[p].op_type != "Identity":
                return None
            name = self.nodes[p].input[0]
        return None

    def is_constant_node(self, name: str) -> bool:
        """Whether a tensor is the output of a ``Constant`` node (not an initializer)."""
        return name in self._constant_nodes

    def is_constant(self, name: str) -> bool:
        """Whether a tensor is a constant (initializer or ``Constant`` output, via Identity)."""
        if name in self.initializers or name in self._constant_nodes:
            return True
        return self.const_tensor(name) is not None

    def array(self, name: str) -> np.ndarray:
        """The current value of a constant tensor, decoded now (not cached).

        Raises:
            KeyError: ``name`` is not backed by a TensorProto (see :meth:`const_tensor`).
        """
        tensor = self.const_tensor(name)
        if tensor is None:
            raise KeyError(name)
        return numpy_helper.to_array(tensor, base_dir=self.base_dir)

    def const_array(self, name: str) -> np.ndarray | None:
        """The value of a constant (cached), or ``None`` if not a constant or unreadable.

        Also reads scalar ``Constant`` attributes (``value_float``, ``value_ints``...).
        """
        if name in self._arrays:
            return self._arrays[name]
        value: np.ndarray | None = None
        tensor = self.const_tensor(name)
        try:
            if tensor is not None:
                value = numpy_helper.to_array(tensor, base_dir=self.base_dir)
            elif name in self._constant_nodes:
                a = self._constant_nodes[name].attribute[0]
                raw = onnx.helper.get_attribute_value(a)
                value = np.asarray(raw, np.float32 if a.name.startswith("value_float")
                                   else np.int64 if a.name.startswith("value_int") else None)
        except Exception as err:  # external data missing, odd types: treat as unknown
            logger.debug("cannot read constant %s: %s", name, err)
        self._arrays[name] = value
        return value

    def const_dims(self, name: str) -> tuple[int, ...] | None:
        """Shape of a constant without decoding it."""
        tensor = self.const_tensor(name)
        if tensor is not None:
            return tuple(tensor.dims)
        arr = self.const_array(name)
        return None if arr is None else tuple(arr.shape)

    # --- graph walking -----------------------------------------------------------------------
    def producer_node(self, name: str) -> onnx.NodeProto | None:
        """The node producing a tensor, or ``None`` for graph inputs and initializers."""
        p = self.producer.get(name)
        return None if p is None else self.nodes[p]

    def consumer_nodes(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading a tensor (directly or inside their subgraphs), in graph order."""
        return [self.nodes[c] for c in self.consumers.get(name, [])]

    def source(self, name: str) -> str:
        """Walk back from a tensor through data-movement ops (TRANSPARENT_OPS)."""
        for _ in range(16):
            node = self.producer_node(name)
            if node is None or node.op_type not in TRANSPARENT_OPS or not node.input:
                return name
            name = node.input[0]
        return name

    def final_consumers(self, name: str) -> tuple[list[int], bool]:
        """Consumers of a tensor after walking forward through data-movement ops.

        Returns:
            the consumer node indices, and whether the tensor (or a moved copy of it) is a graph
            output.
        """
        out: list[int] = []
        is_output = False
        stack, seen = [name], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            is_output |= t in self.graph_outputs
            for c in self.consumers.get(t, []):
                node = self.nodes[c]
                if node.op_type in TRANSPARENT_OPS and node.input and node.input[0] == t:
                    stack.extend(o for o in node.output if o)
                else:
                    out.append(c)
        return out, is_output

    # --- element types -----------------------------------------------------------------------
    def _infer_types(self) -> None:
        """Element types of every tensor, by one forward pass.

        Not ONNX shape inference: that copies the whole model and stops at the type errors a
        linter wants to report.
        """
        g = self.model.graph
        known: dict[str, int] = {}
        for vi in (*g.input, *g.value_info, *g.output):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                known[vi.name] = vi.type.tensor_type.elem_type
        types = self.types
        types.update({n: t.data_type for n, t in self.initializers.items()})
        types.update({v.name: known[v.name] for v in g.input if v.name in known})
        for node in self.nodes:
            rule = _output_type(node, types)
            for name in node.output:
                if name:
                    types[name] = rule or known.get(name, 0) or _first_input_type(node, types)
        for name, t in known.items():
            types.setdefault(name, t)

    def elem_type(self, name: str) -> int | None:
        """Element type of a tensor, or ``None`` if unknown."""
        return self.types.get(name) or None


def _output_type(node: onnx.NodeProto, types: dict[str, int]) -> int:
    """Output type for ops whose type rule is fixed by the ONNX spec (0 for the others)."""
    op = node.op_type
    if op == "Constant":
        value = attr(node, "value")
        if isinstance(value, onnx.TensorProto):
            return int(value.data_type)
        return TensorProto.FLOAT if node.attribute and "float" in node.attribute[0].name \
            else TensorProto.INT64
    if op == "Cast":
        return int(attr(node, "to", 0))
    if op == "CastLike" and len(node.input) > 1:
        return types.get(node.input[1], 0)
    if op == "QuantizeLinear":
        if len(node.input) > 2 and node.input[2]:
            return types.get(node.input[2], 0)
        return int(attr(node, "output_dtype", 0)) or TensorProto.UINT8
    if op == "DequantizeLinear":
        return int(attr(node, "output_dtype", 0)) or types.get(node.input[1], 0)
    if op in _FIXED_OUT:
        return _FIXED_OUT[op]
    if op == "ConstantOfShape":
        value = attr(node, "value")
        return int(value.data_type) if isinstance(value, onnx.TensorProto) else TensorProto.FLOAT
    if op == "Where" and len(node.input) > 1:
        return types.get(node.input[1], 0)
    return 0


def _first_input_type(node: onnx.NodeProto, types: dict[str, int]) -> int:
    """Fallback: most ops keep the element type of their (first) data input."""
    return next((types[n] for n in node.input if n and types.get(n)), 0)


__all__ = ["FLOAT_TYPES", "TRANSPARENT_OPS", "GraphIndex", "attr", "type_name"]
