"""Internal graph utilities for the Q/DQ passes: one index of an ONNX graph, built once.

:class:`GraphIndex` maps every tensor to its producer and consumers and knows which tensors are
constants. Weights count as constants whether they are initializers or outputs of ``Constant``
nodes: real exported models (paddle2onnx, many torch exports) store every weight as a
``Constant`` node (docs/tensorrt_rules.md#weights-stored-as-constant-nodes).
Building the index is linear in the graph size; constant values are decoded lazily and only for
the small tensors asked for (scales, zero points), never for weights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

logger = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: ONNX Runtime QOperator-format / integer ops that TensorRT does not parse (besides QLinear*).
QOPERATOR_OPS = frozenset({"ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeLinear",
                           "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                           "DynamicQuantizeLSTM"})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                         TensorProto.DOUBLE})
#: single-data-input ops that only move or reshape data; TensorRT propagates DQ forward and Q
#: backward through them (checked on TensorRT-RTX 1.7: Q -> Reshape -> DQ builds INT8 kernels).
TRANSPARENT_OPS = frozenset({"Identity", "Reshape", "Transpose", "Flatten", "Squeeze",
                             "Unsqueeze"})
#: DequantizeLinear input types the TensorRT parser accepts ("must have type FP8, FP4, Int4,
#: Int8, or UInt8", verified on TensorRT-RTX 1.7); uint8 weights are still rejected.
ACCEPTED_QTYPES = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT8E4M3FN,
                             TensorProto.INT4, TensorProto.FLOAT4E2M1})
#: quantized types of INT8/FP8 kernels, with the precision name reported for them.
LOW_PRECISION: dict[int, str] = {TensorProto.INT8: "int8", TensorProto.FLOAT8E4M3FN: "fp8"}
#: constant types TensorRT treats as quantized constants (only allowed before a DQ).
QUANT_CONST_TYPES = frozenset({TensorProto.INT8, TensorProto.INT4, TensorProto.FLOAT8E4M3FN})
#: ops TensorRT fuses into a preceding Conv/Gemm (activations, BatchNormalization).
FUSED_AFTER_OPS = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                             "HardSwish", "Elu", "Selu", "Softplus", "PRelu",
                             "BatchNormalization"})
#: ops with no INT8 implementation to use a dequantized input for.
FLOAT_ONLY_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization",
                            "InstanceNormalization", "GroupNormalization", "Exp", "Log", "Erf",
                            "Pow", "Sqrt", "Reciprocal", "Tanh", "Sigmoid", "Gelu", "TopK",
                            "ArgMax", "ArgMin", "NonMaxSuppression"})
#: ops whose float inputs must all have one element type.
SAME_TYPE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul",
                           "Div", "Sum", "Max", "Min", "Mean", "Concat", "PRelu"})
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


def is_qoperator(node: onnx.NodeProto) -> bool:
    """Whether a node is a QOperator-format op (QLinearConv, ConvInteger...) or a contrib Q/DQ."""
    return (node.op_type.startswith("QLinear") or node.op_type in QOPERATOR_OPS
            or node.op_type in QDQ_OPS and node.domain not in ("", "ai.onnx"))


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node attribute, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _subgraph_inputs(graph: onnx.GraphProto) -> Iterator[str]:
    """Names a subgraph reads from its enclosing scopes (recursively)."""
    local = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        for name in node.input:
            if name and name not in local:
                yield name
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                      a.graphs if a.type == onnx.AttributeProto.GRAPHS else []):
                yield from (n for n in _subgraph_inputs(g) if n not in local)
        local.update(node.output)


@dataclass(frozen=True)
class QDQ:
    """A QuantizeLinear / DequantizeLinear node of the default domain.

    Attributes:
        idx: node index.
        is_q: QuantizeLinear (True) or DequantizeLinear.
        x: input tensor; y: output tensor.
        scale: scale value (None when not a constant); scale_type: its element type.
        zp: zero point value (None when absent or not a constant).
        qtype: the quantized element type (Q output / DQ input).
        channels: number of scales (1 = per tensor).
        axis: normalised per-channel axis (None when per tensor or block-quantized).
        weight: whether it quantizes a constant (directly or through a Q of a constant).
    """

    idx: int
    is_q: bool
    x: str
    y: str
    scale: np.ndarray | None
    scale_type: int | None
    zp: np.ndarray | None
    qtype: int
    channels: int
    axis: int | None
    weight: bool


def minmax(scale: np.ndarray | None) -> tuple[float | None, float | None]:
    """Smallest and largest value of a scale array (None, None if unknown)."""
    if scale is None or not scale.size:
        return None, None
    return float(np.min(scale)), float(np.max(scale))


def fmt_array(arr: np.ndarray | None) -> str:
    """A short text for a scale or zero point: the value, or a count and range."""
    if arr is None:
        return "?"
    flat = np.asarray(arr).ravel()
    if flat.size == 1:
        return f"{flat[0]:.6g}"
    return f"[{flat.size} values {flat.min():.4g}..{flat.max():.4g}]"


@dataclass
class GraphIndex:
    """Producer/consumer maps, constants and element types of a model's main graph.

    Attributes:
        model: the model.
        nodes: the graph's nodes, in graph order.
        names: a display name per node (``op_type_index`` for unnamed nodes).
        producer: tensor name -> index of the node that produces it.
        consumers: tensor name -> indices of the nodes that read it (a node holding a subgraph
            counts as a consumer of every outer tensor the subgraph reads).
        graph_inputs: real graph inputs (not initializers).
        graph_outputs: graph output names.
        opset: version of the default ONNX domain (0 if absent).
        types: tensor name -> ONNX element type (0 when unknown).
        qdq: node index -> :class:`QDQ` for every QuantizeLinear/DequantizeLinear node.
        base_dir: folder for tensors stored as external data.
    """

    model: onnx.ModelProto
    base_dir: str = ""

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)]
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
            for name in node.output:
                if name:
                    self.producer[name] = i
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                self._constant_nodes[node.output[0]] = node
            seen = {n for n in node.input if n}
            for a in node.attribute:
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    seen.update(_subgraph_inputs(a.g) if a.type == onnx.AttributeProto.GRAPH
                                else (n for g in a.graphs for n in _subgraph_inputs(g)))
            for name in seen:
                self.consumers.setdefault(name, []).append(i)
        self.types: dict[str, int] = {}
        self._infer_types()
        self.qdq: dict[int, QDQ] = {i: self._describe(i, n) for i, n in enumerate(self.nodes)
                                    if n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx")}

    # --- constants ---------------------------------------------------------------------------
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
        """Whether a tensor is a constant (initializer or ``Constant`` output)."""
        if name in self.initializers or name in self._constant_nodes:
            return True
        return self.const_tensor(name) is not None

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

    # --- Q/DQ ---------------------------------------------------------------------------------
    def _describe(self, i: int, node: onnx.NodeProto) -> QDQ:
        is_q = node.op_type == "QuantizeLinear"
        x, y = (node.input[0] if node.input else ""), (node.output[0] if node.output else "")
        s_name = node.input[1] if len(node.input) > 1 else ""
        scale = self.const_array(s_name) if s_name else None
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zp = self.const_array(zp_name) if zp_name else None
        src = self.weight_source(x)
        weight = self.is_constant(src)
        channels = 1 if scale is None else int(scale.size)
        axis = None
        if channels > 1 and attr(node, "block_size", 0) == 0:
            axis = int(attr(node, "axis", 1))
            dims = self.const_dims(src) if weight else None
            if axis < 0 and dims is not None:
                axis += len(dims)
        return QDQ(i, is_q, x, y, scale, self.elem_type(s_name), zp,
                   self.elem_type(y if is_q else x) or 0, channels, axis, weight)

    def weight_source(self, name: str) -> str:
        """The tensor behind a Q/DQ input, through data-movement ops and a Q of a constant.

        A float weight -> Q -> DQ chain (pytorch-quantization's export) yields the float weight.
        """
        src = self.source(name)
        p = self.producer_node(src)
        if p is not None and p.op_type == "QuantizeLinear":
            inner = self.source(p.input[0])
            if self.is_constant(inner):
                return inner
        return src

    def input_dq(self, name: str) -> QDQ | None:
        """The DequantizeLinear a node input comes from (through data-movement ops), if any.

        A float-to-float Cast after the DQ is looked through: TensorRT folds it (verified with
        TensorRT-RTX 1.7: DQ(fp32) -> Cast(fp16) -> Conv builds an INT8 kernel).
        """
        src = self.source(name) if name else ""
        cast = self.producer_node(src)
        if cast is not None and cast.op_type == "Cast" and \
                self.elem_type(cast.input[0]) in FLOAT_TYPES:
            src = self.source(cast.input[0])
        p = self.producer.get(src)
        q = self.qdq.get(p) if p is not None else None
        return q if q is not None and not q.is_q else None

    def weight_rank(self, dq: QDQ | None, name: str) -> int | None:
        """Rank of the constant behind a node input (through its DQ), if known."""
        dims = self.const_dims(self.weight_source(dq.x if dq is not None else name))
        return None if dims is None else len(dims)

    def branch(self, name: str, fuses: frozenset[str]) -> tuple[bool, int | None, QDQ | None]:
        """Trace an Add input back to an op that could absorb the Add.

        Returns:
            whether the input is quantized; the index of the op of ``fuses`` producing it
            (possibly through its Q/DQ pair and a BatchNormalization) or None; the Q of the pair.
        """
        dq = self.input_dq(name)
        q = None
        if dq is not None:
            p = self.producer.get(self.source(dq.x))
            q = self.qdq.get(p) if p is not None else None
            name = q.x if q is not None else dq.x
        p = self.producer.get(name)
        if p is not None and self.nodes[p].op_type == "BatchNormalization":
            p = self.producer.get(self.nodes[p].input[0])
        if p is not None and self.nodes[p].op_type in fuses:
            return dq is not None, p, q
        return dq is not None, None, q

    # --- element types -----------------------------------------------------------------------
    def _infer_types(self) -> None:
        """Element types of every tensor, by one forward pass.

        Not ONNX shape inference: it copies the whole model and stops at the type errors this
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
