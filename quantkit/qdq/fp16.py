"""Make the non-INT8 part of a graph FP16 with Cast nodes, as strongly typed builders need.

TensorRT 11 and TensorRT-RTX are strongly typed: a layer computes in the type of its tensors
(docs/tensorrt_rules.md#strongly-typed-networks). So every node gets a float type (fp16 or
fp32, from the precision plan; Q/DQ nodes take ``default_float``) and this pass rewrites
tensor types to match:

* float initializers read by fp16 nodes get an FP16 copy (values clipped to the FP16 range;
  positive Q/DQ scales kept above zero);
* a float tensor flowing between nodes of different types gets one Cast per target type;
* the op schemas decide which inputs may be FP16 (e.g. Resize's ``scales`` stays FP32);
* graph inputs and outputs keep their FP32 types (Casts at the boundary);
* ``Cast(to=FLOAT)`` inside an FP16 region becomes ``Cast(to=FLOAT16)``.

Nodes in non-standard domains or with subgraphs stay FP32; an If/Loop/Scan body that reads an
outer tensor made FP16 reads an FP32 Cast of it instead.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit.graph import (
    GraphIndex,
    UniqueNames,
    has_subgraph,
    model_opset,
    outer_reads,
    remove_unused_initializers,
    rename_reads,
    subgraphs,
    toposort,
)
from quantkit.qdq.plan import PrecisionPlan

logger = logging.getLogger(__name__)

F32: int = TensorProto.FLOAT
F16: int = TensorProto.FLOAT16
_FLOATS = (F32, F16)
_TYPE_STR: dict[int, str] = {F32: "tensor(float)", F16: "tensor(float16)"}
_FP16_MAX = float(np.finfo(np.float16).max)
_FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)


def _schema(node: onnx.NodeProto, opset: int) -> onnx.defs.OpSchema | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def _formal(params: list[onnx.defs.OpSchema.FormalParameter],
            i: int) -> onnx.defs.OpSchema.FormalParameter | None:
    if i < len(params):
        return params[i]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _allowed(schema: onnx.defs.OpSchema, type_str: str) -> set[str]:
    for c in schema.type_constraints:
        if c.type_param_str == type_str:
            return set(c.allowed_type_strs)
    return {type_str}  # a concrete type such as "tensor(float)"


def _inferred_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    out = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out[vi.name] = int(vi.type.tensor_type.elem_type)
    return out


class _Pass:
    def __init__(self, model: onnx.ModelProto, plan: PrecisionPlan) -> None:
        self.model = model
        self.plan = plan
        self.opset = model_opset(model)
        self.index = GraphIndex(model)
        self.types = _inferred_types(model)
        self.cur: dict[str, int] = {i.name: int(i.type.tensor_type.elem_type)
                                    for i in model.graph.input}
        self.cur.update({t.name: int(t.data_type) for t in model.graph.initializer})
        self.casts: dict[tuple[str, int], str] = {}
        self.forced_fp32: set[str] = set()
        self.init_copies: dict[tuple[str, int], str] = {}
        self.unique = UniqueNames.for_model(model)
        self.qdq_scales = {n.input[1] for n in model.graph.node
                           if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                           and len(n.input) > 1}

    def node_type(self, node: onnx.NodeProto) -> int:
        entry = self.plan.nodes.get(node.name)
        prec = self.plan.default_float if entry is None else self.plan.float_type(node.name)
        if has_subgraph(node):
            return F32
        if prec == "fp16" and node.name not in self.forced_fp32 and self._overflows(node):
            self.forced_fp32.add(node.name)
            logger.warning("node '%s' (%s) has constants beyond the FP16 range (65504); it "
                           "stays FP32 (override it explicitly to silence this)", node.name,
                           node.op_type)
        if node.name in self.forced_fp32:
            return F32
        return F16 if prec == "fp16" else F32

    def _overflows(self, node: onnx.NodeProto) -> bool:
        # e.g. BatchNormalization running variances of 1e8 (PP-OCR det): clipped to 65504
        # they wreck the layer, so such a node keeps FP32 constants and arithmetic
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return False
        for name in node.input:
            t = self.index.initializers.get(name)
            if t is not None and t.data_type in _FLOATS:
                arr = numpy_helper.to_array(t)
                if arr.size and float(np.nanmax(np.abs(arr))) > _FP16_MAX:
                    return True
        return False

    def convert_input(self, name: str, want: int, before: list[onnx.NodeProto]) -> str:
        if name in self.index.initializers:
            key = (name, want)
            if key not in self.init_copies:
                arr = numpy_helper.to_array(self.index.initializers[name])
                new = self.unique(f"{name}_{'fp16' if want == F16 else 'fp32'}")
                self.model.graph.initializer.append(
                    numpy_helper.from_array(self._cast_array(name, arr, want), new))
                self.init_copies[key] = new
                self.cur[new] = want
            return self.init_copies[key]
        key = (name, want)
        if key not in self.casts:
            out = self.unique(f"{name}_to_{'fp16' if want == F16 else 'fp32'}")
            suffix = "fp16" if want == F16 else "fp32"
            before.append(helper.make_node("Cast", [name], [out], to=want,
                                           name=self.unique(f"{name}_Cast_{suffix}")))
            self.casts[key] = out
            self.cur[out] = want
        return self.casts[key]

    def _cast_array(self, name: str, arr: np.ndarray, want: int) -> np.ndarray:
        if want == F32:
            return arr.astype(np.float32)
        big = np.abs(arr) > _FP16_MAX
        if big.any():
            logger.warning("initializer '%s': %d values beyond the FP16 range are clipped",
                           name, int(big.sum()))
        out = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
        if name in self.qdq_scales:  # a positive scale must not underflow to 0 in FP16
            out = np.where((arr > 0) & (out == 0), np.float16(_FP16_TINY), out)
        return np.asarray(out)

    def run(self) -> None:
        g = self.model.graph
        new_nodes: list[onnx.NodeProto] = []
        for node in list(g.node):
            ft = self.node_type(node)
            schema = _schema(node, self.opset)
            before: list[onnx.NodeProto] = []
            bound: dict[str, int] = {}
            for i, name in enumerate(node.input):
                t = self.cur.get(name)
                if not name or t not in _FLOATS:
                    continue
                formal = _formal(list(schema.inputs), i) if schema else None
                allowed = _allowed(schema, formal.type_str) if schema and formal else {
                    _TYPE_STR[F32]}
                want = ft if _TYPE_STR[ft] in allowed else (
                    F32 if _TYPE_STR[F32] in allowed else t)
                if want != t:
                    node.input[i] = self.convert_input(name, want, before)
                if formal is not None:
                    bound[formal.type_str] = want
            if has_subgraph(node):
                self._body_reads(node, before)
            if node.op_type == "Cast" and ft == F16:
                for a in node.attribute:
                    if a.name == "to" and a.i == F32:
                        a.i = F16
            for j, out in enumerate(node.output):
                if not out:
                    continue
                formal = _formal(list(schema.outputs), j) if schema else None
                if node.op_type == "Cast":
                    self.cur[out] = next(a.i for a in node.attribute if a.name == "to")
                elif formal is not None and formal.type_str in bound:
                    self.cur[out] = bound[formal.type_str]
                elif out in self.types:
                    self.cur[out] = self.types[out]
            new_nodes.extend(before)
            new_nodes.append(node)
        del g.node[:]
        g.node.extend(new_nodes)
        self._restore_outputs()
        del g.value_info[:]
        remove_unused_initializers(self.model)
        toposort(self.model)  # a body reading a restored graph output follows its Cast

    def _body_reads(self, node: onnx.NodeProto, before: list[onnx.NodeProto]) -> None:
        """Bodies read FP32 copies of the outer tensors this pass turned into FP16."""
        for g in subgraphs(node):
            for name in sorted(set(outer_reads(g))):
                was, now = self.types.get(name), self.cur.get(name)
                if now in _FLOATS and was in _FLOATS and now != was:
                    rename_reads(g, name, self.convert_input(name, was, before))

    def _restore_outputs(self) -> None:
        g = self.model.graph
        for out in g.output:
            declared = out.type.tensor_type.elem_type
            now = self.cur.get(out.name)
            if declared not in _FLOATS or now is None or now == declared:
                continue
            inner = self.unique(f"{out.name}_{'fp16' if now == F16 else 'fp32'}")
            for node in g.node:
                for i, name in enumerate(node.output):
                    if name == out.name:
                        node.output[i] = inner
                for i, name in enumerate(node.input):
                    if name == out.name:
                        node.input[i] = inner
            g.node.append(helper.make_node("Cast", [inner], [out.name], to=declared,
                                           name=self.unique(f"{out.name}_Cast_output")))


def apply_float_types(model: onnx.ModelProto, plan: PrecisionPlan) -> None:
    """Rewrite ``model`` (in place) so each node computes in its planned float type."""
    _Pass(model, plan).run()
