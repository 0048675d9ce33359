"""FLOPs of each ONNX node at concrete input shapes (ONNX shape inference, no weights read).

The engine's kernel log names the ONNX nodes each kernel implements but not what they compute,
so the arithmetic comes from the model: its inputs are fixed to the requested shapes, shape
inference (ONNX Runtime's symbolic inference, else ONNX's) fills in every tensor, and each node
gets

* ``matrix`` FLOPs (tensor-core math), counted as 2 x multiply-accumulates:
  Conv ``2 * prod(Y) * C/g * kh * kw``, ConvTranspose ``2 * prod(X) * K/g * kh * kw``,
  MatMul ``2 * prod(Y) * K``, Gemm ``2 * M * N * K``. Bias adds are not counted.
* ``vector`` FLOPs (CUDA-core math): a few per output element (see ``_VECTOR_COST``), per input
  element for reductions and softmax, ``prod(Y) * kh * kw`` for pooling, 0 for pure data
  movement (reshape, transpose, gather, concat...), whose cost is the bytes the kernel moves.

Only the model's graph structure and initializer *shapes* are read (``load_external_data=False``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

#: op types whose FLOPs run on tensor cores
MATRIX_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger",
                        "ConvInteger", "QLinearConv", "QLinearMatMul"})
#: pure data movement: no arithmetic
_NO_MATH = frozenset({
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Size", "Gather",
    "GatherElements", "GatherND", "Concat", "Slice", "Split", "Expand", "Identity", "Constant",
    "ConstantOfShape", "Pad", "Tile", "DepthToSpace", "SpaceToDepth", "Dropout", "ScatterND",
    "ScatterElements", "Range", "NonZero", "Trilu", "Where", "Cast", "CastLike",
})
#: FLOPs per output element of element-wise ops (1 when not listed)
_VECTOR_COST: dict[str, int] = {
    "Sigmoid": 4, "Tanh": 4, "Exp": 4, "Log": 4, "Erf": 4, "Gelu": 8, "HardSigmoid": 3,
    "HardSwish": 4, "Softplus": 4, "Mish": 8, "Elu": 4, "Selu": 4, "Pow": 4, "Sqrt": 2,
    "Reciprocal": 2, "Div": 2, "Clip": 2, "QuantizeLinear": 3, "DequantizeLinear": 2,
    "BatchNormalization": 2, "Resize": 4,
}
#: FLOPs per *input* element (reductions over an axis)
_PER_INPUT_COST: dict[str, int] = {
    "Softmax": 5, "LogSoftmax": 5, "LayerNormalization": 8, "InstanceNormalization": 8,
    "GroupNormalization": 8, "RMSNormalization": 5, "ReduceMean": 1, "ReduceSum": 1,
    "ReduceMax": 1, "ReduceMin": 1, "ReduceL2": 2, "ReduceSumSquare": 2, "ReduceProd": 1,
    "GlobalAveragePool": 1, "GlobalMaxPool": 1, "ArgMax": 1, "ArgMin": 1, "TopK": 2,
}
_POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_GATHERS = frozenset({"Gather", "GatherND", "GatherElements"})


@dataclass(frozen=True)
class NodeCost:
    """The arithmetic of one ONNX node at the requested shapes."""

    op_type: str
    matrix_flops: float
    vector_flops: float
    #: for a gather from a constant table (an embedding lookup): ``(table shape, elements
    #: gathered)``. Only the gathered rows are read, not the whole table.
    gathered: tuple[tuple[int, ...], int] | None = None
    #: for a convolution/matrix node whose output (directly or after a bias Add) feeds a
    #: QuantizeLinear: ``"quantized"`` -- TensorRT writes that output quantized from the
    #: kernel's epilogue
    output: str | None = None


def node_name(node: Any) -> str:
    """The name TensorRT's ONNX parser gives a node: its name, else ``node_of_<first output>``.

    (TensorRT-RTX 1.7.1 names the kernels of unnamed nodes that way in the engine log.)
    """
    if node.name:
        return str(node.name)
    return f"node_of_{node.output[0]}" if node.output else ""


def node_costs(model: str | os.PathLike[str], shapes: Mapping[str, Sequence[int]]
               ) -> dict[str, NodeCost]:
    """FLOPs of every node of ``model`` with its inputs set to ``shapes``.

    Args:
        model: the ONNX model.
        shapes: concrete shape per graph input; inputs not listed keep the model's dims.

    Returns:
        ``{node name: NodeCost}``; a node whose shapes inference could not settle gets 0 FLOPs
        (logged at debug level).

    Raises:
        InputError: the file is not a readable ONNX model.
    """
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as err:  # protobuf raises a zoo of types for a broken file
        raise InputError(f"{model}: not a readable ONNX model ({err}).") from err
    for value in proto.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            wanted = list(shapes[value.name])
            if len(dims) != len(wanted):
                continue  # the builder has already rejected a wrong rank; keep the model's
            for dim, size in zip(dims, wanted, strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    # shapes recorded by the exporter were inferred for symbolic inputs and would shadow the
    # concrete ones (inference keeps existing value_info); outputs are inferred again too
    del proto.graph.value_info[:]
    for value in proto.graph.output:
        value.type.tensor_type.ClearField("shape")
    inferred = _infer(proto, str(model))
    known = _shapes(inferred)
    # tensors fixed at build time: the builder folds nodes computed only from them (a weight's
    # DequantizeLinear, shape arithmetic on constants), so they cost nothing at run time
    constant = {init.name for init in inferred.graph.initializer}
    costs: dict[str, NodeCost] = {}
    for node in inferred.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(n in constant for n in inputs)):
            constant.update(node.output)
            costs[node_name(node)] = NodeCost(str(node.op_type), 0.0, 0.0)
            continue
        cost = _cost(node, known)
        if node.op_type in _GATHERS and inputs and inputs[0] in constant:
            table, out = known.get(inputs[0]), known.get(node.output[0])
            if table is not None and out is not None:
                cost = NodeCost(cost.op_type, cost.matrix_flops, cost.vector_flops,
                                gathered=(table, math.prod(out)))
        costs[node_name(node)] = cost
    _mark_quantized_outputs(inferred.graph.node, constant, costs)
    return costs


def _mark_quantized_outputs(nodes: Any, constant: set[str], costs: dict[str, NodeCost]) -> None:
    """Set ``output="quantized"`` on matrix nodes whose output (or its bias Add) is quantized."""
    from dataclasses import replace

    readers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in nodes:
        if node.op_type not in MATRIX_OPS or not node.output:
            continue
        tensors = [node.output[0]]
        tensors += [r.output[0] for r in readers.get(node.output[0], [])
                    if r.op_type == "Add" and any(i in constant for i in r.input)]
        if any(r.op_type == "QuantizeLinear" for t in tensors for r in readers.get(t, [])):
            costs[node_name(node)] = replace(costs[node_name(node)], output="quantized")


def _infer(proto: Any, where: str) -> Any:
    """Shapes of every tensor: ONNX Runtime's symbolic shape inference, else ONNX's own.

    ONNX's inference gives up on shapes computed in the graph (``Shape -> Gather -> Div ->
    Slice``, common in exported detectors); ONNX Runtime's evaluates such subgraphs.
    """
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    except Exception as err:  # unsupported op or opset: fall back to ONNX's inference
        logger.debug("%s: ONNX Runtime symbolic shape inference failed (%s); using ONNX's",
                     where, err)
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as err:  # an inference failure only loses FLOPs, the bytes remain
        logger.warning("%s: ONNX shape inference failed (%s); FLOPs of nodes with unknown "
                       "shapes come from the kernels' dimensions or are 0", where, err)
        return proto


def _shapes(proto: Any) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    graph = proto.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value")
                                                             for d in dims):
            out[value.name] = tuple(int(d.dim_value) for d in dims)
    for init in graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _cost(node: Any, shapes: Mapping[str, tuple[int, ...]]) -> NodeCost:
    op = str(node.op_type)

    def shape(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    y = shape(0, outputs=True)
    if op in MATRIX_OPS:
        return NodeCost(op, _matrix_flops(node, op, shape, y), 0.0)
    if op in _NO_MATH:
        return NodeCost(op, 0.0, 0.0)
    if op in _PER_INPUT_COST:
        x = shape(0)
        return NodeCost(op, 0.0, float(_PER_INPUT_COST[op] * math.prod(x)) if x else 0.0)
    if y is None:
        logger.debug("node %s (%s): output shape unknown; counted as 0 FLOPs", node.name, op)
        return NodeCost(op, 0.0, 0.0)
    if op in _POOL_OPS:
        kernel = _attr(node, "kernel_shape", [1])
        return NodeCost(op, 0.0, float(math.prod(y) * math.prod(kernel)))
    return NodeCost(op, 0.0, float(math.prod(y) * _VECTOR_COST.get(op, 1)))


def _matrix_flops(node: Any, op: str, shape: Callable[[int], tuple[int, ...] | None],
                  y: tuple[int, ...] | None) -> float:
    """2 x multiply-accumulates of a convolution / matrix product (0 if shapes are unknown)."""
    if op in ("QLinearConv", "QLinearMatMul"):
        a, w = shape(0), shape(3)
    else:
        a, w = shape(0), shape(1)
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        if y is None or w is None:
            return 0.0
        return 2.0 * math.prod(y) * math.prod(w[1:])  # w = (K, C/g, kh, kw)
    if op == "ConvTranspose":
        if a is None or w is None:
            return 0.0
        return 2.0 * math.prod(a) * math.prod(w[1:])  # w = (C, K/g, kh, kw)
    if op == "Gemm":
        if a is None or y is None or len(a) != 2:
            return 0.0
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2.0 * float(math.prod(y)) * k
    if a is None or y is None or not a:  # MatMul family
        return 0.0
    return 2.0 * math.prod(y) * a[-1]
