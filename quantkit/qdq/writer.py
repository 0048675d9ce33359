"""Write an explicitly quantized (Q/DQ) ONNX model that TensorRT 10/11 and TensorRT-RTX parse.

Placement follows docs/tensorrt_rules.md#qdq-placement:

* activations: one ``QuantizeLinear -> DequantizeLinear`` pair per tensor (shared by all its
  INT8 consumers; other consumers keep reading the original tensor), symmetric INT8, zero
  point 0, per-tensor scale from calibration;
* weights: stored as INT8 initializers followed by a per-channel ``DequantizeLinear``
  (axis 0, axis 1 for ConvTranspose, the output axis of Gemm/MatMul weights) -- the form
  TensorRT folds into INT8 kernels ("quantized constants only before DQ");
* biases are never quantized (an int32 bias DQ is rejected by TensorRT's ONNX parser);
* a residual Add gets Q/DQ only on the branch that is not fused into its convolution;
* with ``default_float: fp16`` the Q/DQ scales become FP16, so every scale is raised to at
  least the smallest FP16 normal number (6.1e-5), and INT8 weights are computed with the
  raised scale: FP16 subnormal scales (per-channel weight scales of near-dead channels, 3e-6
  seen on a real OCR model) keep only a few significant bits, and a weight quantized with the
  FP32 scale but dequantized with its FP16 rounding is off by up to a few percent.
* ``fp8`` nodes get FP8 E4M3 Q/DQ instead (per-tensor activations, per-channel weights, scale
  ``amax / 448``, opset 19): :mod:`quantkit.qdq.fp8` holds what differs.

Node names stay stable: the new nodes are named after the tensors they quantize
(``<tensor>_QuantizeLinear`` / ``<tensor>_DequantizeLinear``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.calibrators.cache import ScaleTable
from quantkit.errors import InputError
from quantkit.graph import (
    FP16_QDQ_OPSET,
    MAX_PARSER_OPSET,
    MIN_OPSET,
    GraphEditor,
    GraphIndex,
    UniqueNames,
    constants_to_initializers,
    model_opset,
    name_nodes,
    nested_nodes,
    read_names,
    remove_unused_initializers,
    upgrade_opset,
)
from quantkit.qdq import fp8 as _fp8
from quantkit.qdq.fp16 import apply_float_types
from quantkit.qdq.plan import NodeView, PrecisionConfig, PrecisionPlan, make_plan
from quantkit.qdq.rules import (
    FUSES_RESIDUAL,
    QUANTIZABLE_OPS,
    QUANTIZED_PRECISIONS,
    QuantInput,
    quantized_inputs,
)
from quantkit.qdq.scales import weight_scale

logger = logging.getLogger(__name__)

PLAN_METADATA_KEY = "quantkit.plan"
_QMAX = 127.0


@dataclass
class QuantizeResult:
    """A quantized model and what was done to it."""

    model: onnx.ModelProto
    plan: PrecisionPlan
    activation_qdq: list[str] = field(default_factory=list)
    weight_qdq: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare(model: onnx.ModelProto, *, fp16: bool, source: str,
            fp8: bool = False) -> onnx.ModelProto:
    """Copy ``model`` with named nodes, Constant weights as initializers and a Q/DQ opset."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if fp8:
        out = _fp8.upgrade_for_fp8(out, source)
    out = upgrade_opset(out, FP16_QDQ_OPSET if fp16 else MIN_OPSET, source)
    name_nodes(out)
    constants_to_initializers(out)
    return out


def _weight_tensor(index: GraphIndex, name: str) -> onnx.TensorProto | None:
    """The stored weight behind a node input (initializer, through Identity), if any."""
    return index.const_tensor(name) if name else None


def _rank(index: GraphIndex, name: str) -> int | None:
    t = _weight_tensor(index, name)
    return len(t.dims) if t is not None else None


def _node_inputs(node: onnx.NodeProto, index: GraphIndex) -> list[QuantInput]:
    attrs = {a.name: int(a.i) for a in node.attribute if a.type == onnx.AttributeProto.INT}
    names = list(node.input)
    return quantized_inputs(node.op_type, attrs, [_weight_tensor(index, n) is not None
                                                  for n in names] + [False] * 3,
                            [_rank(index, n) for n in names] + [None] * 3)


def _input_dependent(index: GraphIndex) -> set[str]:
    """Tensors that depend on a graph input (what calibration captures; the rest is constant)."""
    inits = set(index.initializers)
    live = {i.name for i in index.model.graph.input if i.name not in inits}
    for node in index.nodes:  # graph order: producers first
        if any(i in live for i in node.input if i):
            live.update(o for o in node.output if o)
    return live


def residual_adds(index: GraphIndex) -> list[tuple[str, str, int]]:
    """``(add, fused producer, index of the other input)`` for residual Adds.

    A residual Add has two non-constant inputs, at least one produced directly by a
    Conv/ConvTranspose; the later such producer is the one TensorRT fuses the Add into. An
    input computed only from constants (a bias ``Reshape(Constant)`` after a bias-less Conv,
    as paddle2onnx writes) is a constant too: calibration has no scale for it.
    """
    out = []
    live = _input_dependent(index)
    for node in index.nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        if any(not n or index.is_constant(n) or n not in live for n in node.input):
            continue
        prods = [index.producer.get(n) for n in node.input]
        fusable = [(p, i) for i, p in enumerate(prods)
                   if p is not None and index.nodes[p].op_type in FUSES_RESIDUAL]
        if not fusable:
            continue
        producer, fused_input = max(fusable)
        out.append((node.name, index.nodes[producer].name, 1 - fused_input))
    return out


def plan_model(model: onnx.ModelProto, config: PrecisionConfig) -> PrecisionPlan:
    """The precision plan of a prepared model (see :func:`prepare`)."""
    index = GraphIndex(model)
    views = [NodeView(n.name, n.op_type,
                      n.op_type in QUANTIZABLE_OPS and bool(_node_inputs(n, index)))
             for n in model.graph.node]
    return make_plan(views, config, [(a, p) for a, p, _ in residual_adds(index)])


def _scale_for(tensor: str, scales: ScaleTable, qtype: str = "int8") -> float:
    if tensor not in scales.scales:
        raise InputError(
            f"no scale for tensor '{tensor}', which the plan quantizes. Calibrate with this "
            "model (quantkit calibrate MODEL --data ... --scales S.json), or keep its consumer "
            "out of INT8 with a precision override."
        )
    s = scales.scales[tensor]
    if qtype == "fp8":  # the same amax over the FP8 range
        s = _fp8.fp8_scale(scales.amaxes.get(tensor, s * _QMAX))
    if not np.isfinite(s) or s < 0:
        raise InputError(f"tensor '{tensor}': scale {s} is not a finite positive number; "
                         "re-calibrate or override its consumer to fp16/fp32.")
    if s == 0.0:
        qmax = _fp8.FP8_MAX if qtype == "fp8" else _QMAX
        logger.warning("tensor '%s' has scale 0 (all zeros in calibration); using 1/%g", tensor,
                       qmax)
        return 1.0 / qmax
    return float(s)


#: the smallest FP16 normal number: the floor of scales stored as FP16.
FP16_MIN_SCALE = float(np.finfo(np.float16).tiny)


def quantize_weight(w: np.ndarray, axis: int | None,
                    min_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 weights and scales, per channel on ``axis`` (per tensor if None).

    ``scale = max(max|w| / 127, min_scale)`` per channel (:func:`~quantkit.qdq.scales.
    weight_scale`: 1.0 for an all-zero channel, never subnormal); values rounded half to even
    and clipped to [-127, 127].
    """
    w32 = w.astype(np.float32)
    scale, shape = weight_scale(w32, axis, _QMAX, min_scale)
    q = np.clip(np.round(w32 / scale.reshape(shape)), -_QMAX, _QMAX).astype(np.int8)
    return q, scale


class _Writer:
    def __init__(self, model: onnx.ModelProto, min_scale: float = 0.0) -> None:
        self.model = model
        self.min_scale = min_scale
        self.raised: list[str] = []  # tensors with a scale raised to min_scale
        self.index = GraphIndex(model)
        self.editor = GraphEditor(model)
        self.unique = UniqueNames.for_model(model)
        self.act: dict[tuple[str, str], str] = {}
        self.wgt: dict[tuple[str, int | None, str], str] = {}

    def activation(self, tensor: str, scale: float, first_consumer: str,
                   qtype: str = "int8") -> str:
        if (tensor, qtype) in self.act:
            return self.act[(tensor, qtype)]
        tag = "_fp8" if qtype == "fp8" and any(t == tensor for t, _ in self.act) else ""
        s = self.unique(f"{tensor}{tag}_scale")
        z = self.unique(f"{tensor}{tag}_zero_point")
        q_out = self.unique(f"{tensor}{tag}_quantized")
        dq_out = self.unique(f"{tensor}{tag}_dequantized")
        g = self.model.graph
        if scale < self.min_scale:
            scale = self.min_scale
            self.raised.append(tensor)
        g.initializer.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s))
        g.initializer.append(_fp8.fp8_zero_point(z) if qtype == "fp8" else
                             numpy_helper.from_array(np.array(0, dtype=np.int8), z))
        q = helper.make_node("QuantizeLinear", [tensor, s, z], [q_out],
                             name=self.unique(f"{tensor}_QuantizeLinear"))
        dq = helper.make_node("DequantizeLinear", [q_out, s, z], [dq_out],
                              name=self.unique(f"{tensor}_DequantizeLinear"))
        producer = self.index.producer.get(tensor)
        # right after the producer keeps the graph topologically sorted; before the first
        # consumer for graph inputs
        if producer is None:
            self.editor.insert_before(first_consumer, [q, dq])
        else:
            self.editor.insert_after(producer, [q, dq])
        self.act[(tensor, qtype)] = dq_out
        return dq_out

    def weight(self, tensor: str, axis: int | None, consumer: str, qtype: str = "int8") -> str:
        key = (tensor, axis, qtype)
        if key in self.wgt:
            return self.wgt[key]
        w = self.index.array(tensor)
        if w.dtype.kind != "f":
            raise InputError(f"weight '{tensor}' of node '{consumer}' has dtype {w.dtype}; "
                             "only float weights can be quantized.")
        if axis is not None and not -w.ndim <= axis < w.ndim:
            axis = None
        qn = self.unique(f"{tensor}_{qtype}")
        s = self.unique(f"{tensor}_scale")
        z = self.unique(f"{tensor}_zero_point")
        g = self.model.graph
        if qtype == "fp8":
            q8, scale = _fp8.quantize_weight_fp8(w, qn, axis, self.min_scale)
            g.initializer.append(q8)
            g.initializer.append(numpy_helper.from_array(scale, s))
            g.initializer.append(_fp8.fp8_zero_point(z, scale.shape))
        else:
            q, scale = quantize_weight(w, axis, self.min_scale)
            g.initializer.append(numpy_helper.from_array(q, qn))
            g.initializer.append(numpy_helper.from_array(
                scale if axis is not None else scale.reshape(()), s))
            g.initializer.append(numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int8),
                                                         z))
        if self.min_scale and bool(np.any(scale == np.float32(self.min_scale))):
            self.raised.append(tensor)
        out = self.unique(f"{tensor}_dequantized")
        dq = helper.make_node("DequantizeLinear", [qn, s, z], [out],
                              name=self.unique(f"{tensor}_DequantizeLinear"))
        if axis is not None:
            dq.attribute.append(helper.make_attribute("axis", axis))
        self.editor.insert_before(consumer, [dq])
        self.wgt[key] = out
        return out

    def finish(self) -> None:
        self.editor.commit()
        self._drop_dead_identities()

    def _drop_dead_identities(self) -> None:
        """Remove ``Identity`` chains that led to a weight now read through its INT8 copy."""
        todo = [t for t, _, _ in self.wgt if t not in self.index.initializers]
        g = self.model.graph
        while todo:
            used = read_names(g)
            dead = {t for t in todo if t not in used}
            todo = []
            keep = []
            for node in g.node:
                if node.op_type == "Identity" and len(node.output) == 1 and node.output[0] in dead:
                    todo.append(node.input[0])
                else:
                    keep.append(node)
            if len(keep) == len(g.node):
                return
            del g.node[:]
            g.node.extend(keep)


def insert_qdq(model: onnx.ModelProto, plan: PrecisionPlan, scales: ScaleTable) -> QuantizeResult:
    """Insert Q/DQ into a prepared model (in place) for every int8 / fp8 node of ``plan``.

    With ``default_float: fp16`` (FP16 Q/DQ scales) every scale is at least
    :data:`FP16_MIN_SCALE`.
    """
    w = _Writer(model, FP16_MIN_SCALE if plan.default_float == "fp16" else 0.0)
    residual = {a: other for a, _, other in residual_adds(w.index)}
    for node in list(model.graph.node):
        entry = plan.nodes.get(node.name)
        if entry is None:
            continue
        if entry.quantize_residual and node.name in residual:
            todo = [QuantInput(residual[node.name], "activation")]
            qtype = entry.residual_type
        elif entry.precision in QUANTIZED_PRECISIONS:
            todo = _node_inputs(node, w.index)
            qtype = entry.precision
        else:
            continue
        for qi in todo:
            name = node.input[qi.index]
            if qi.kind == "activation":
                node.input[qi.index] = w.activation(name, _scale_for(name, scales, qtype),
                                                    node.name, qtype)
            else:
                node.input[qi.index] = w.weight(name, qi.axis, node.name, qtype)
    w.finish()
    if w.raised:
        logger.info("%d tensor(s) have scales below the smallest FP16 normal number, raised "
                    "to %.3g for FP16 Q/DQ (e.g. %s)", len(w.raised), FP16_MIN_SCALE,
                    ", ".join(w.raised[:3]))
    remove_unused_initializers(model)
    result = QuantizeResult(model, plan, sorted({t for t, _ in w.act}),
                            sorted({t for t, _, _ in w.wgt}))
    inner = sorted({n.name or n.op_type for n in nested_nodes(model.graph)
                    if n.op_type in QUANTIZABLE_OPS})
    if inner:
        msg = (f"{len(inner)} compute node(s) inside If/Loop/Scan bodies were not quantized "
               f"({', '.join(inner[:5])}{' ...' if len(inner) > 5 else ''}): quantkit writes "
               "Q/DQ in the main graph only; the bodies are kept as they are, in float")
        logger.warning(msg)
        result.warnings.append(msg)
    return result


def quantize_model(model: onnx.ModelProto, scales: ScaleTable | None,
                   config: PrecisionConfig | None = None, *, fp16: bool | None = None,
                   source: str = "model.onnx") -> QuantizeResult:
    """Plan, insert Q/DQ and (with ``default_float: fp16``) convert the rest to FP16.

    Args:
        model: the FP32 model (not modified).
        scales: activation scales (from ``quantkit calibrate``, a scales JSON or a TensorRT
            cache); may be ``None`` when the plan has no int8 node.
        config: the precision file (default: everything quantizable in INT8, rest FP32).
        fp16: force ``default_float`` to fp16 (the ``--fp16`` flag).
        source: the model's path, for messages.
    """
    config = config or PrecisionConfig()
    if fp16:
        config = config.model_copy(update={"default_float": "fp16"})
    needs_fp16 = config.default_float == "fp16" or config.default == "fp16" or any(
        r.precision == "fp16" for r in config.overrides)
    needs_fp8 = config.default == "fp8" or any(r.precision == "fp8" for r in config.overrides)
    prepared = prepare(model, fp16=needs_fp16, source=source, fp8=needs_fp8)
    if model_opset(prepared) > MAX_PARSER_OPSET:
        logger.warning("%s: opset %d is above what TensorRT's ONNX parser supports (9-%d)",
                       source, model_opset(prepared), MAX_PARSER_OPSET)
    plan = plan_model(prepared, config)
    counts = plan.counts()
    if (counts["int8"] or counts.get("fp8")) and scales is None:
        raise InputError("the plan quantizes nodes to int8/fp8 but no scales were given: pass "
                         "scales= (read_scales of a scales JSON or TensorRT cache), or "
                         "calibrate first.")
    result = insert_qdq(prepared, plan, scales or ScaleTable(scales={}))
    result.warnings.extend(plan.warnings)
    if any(plan.float_type(n) == "fp16" for n in plan.nodes):
        apply_float_types(prepared, plan)
    meta = {p.key: p for p in prepared.metadata_props}
    if PLAN_METADATA_KEY in meta:
        meta[PLAN_METADATA_KEY].value = plan.to_json()
    else:
        prepared.metadata_props.append(
            onnx.StringStringEntryProto(key=PLAN_METADATA_KEY, value=plan.to_json()))
    try:
        onnx.checker.check_model(prepared)
    except onnx.checker.ValidationError as err:  # a bug in the writer, not the user's fault
        raise RuntimeError(f"quantkit wrote an invalid model: {err}") from err
    return result


__all__ = ["PLAN_METADATA_KEY", "QuantizeResult", "insert_qdq", "plan_model", "prepare",
           "quantize_model", "quantize_weight", "residual_adds"]
