"""Lint explicitly quantized (Q/DQ) ONNX models against TensorRT's Q/DQ rules.

:func:`lint_model` gives each node the precision TensorRT would give it (a Conv/Gemm/MatMul is
INT8 when its data and weight inputs both come from DequantizeLinear of INT8 data:
docs/tensorrt_rules.md#precision-as-the-builder-sees-it) and reports findings against
docs/tensorrt_rules.md#qdq-placement and the pages it links. Messages marked *verified* were
reproduced with the TensorRT-RTX 1.7 parser/builder on CPU (kernel precisions from its log).
Severities: ``error`` = TensorRT rejects the model or the Q/DQ cannot take effect (the node runs
in float); ``warning`` = it builds but is slower or less accurate than intended; ``info``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto

from quantkit.graph import FLOAT_TYPES, attr, type_name
from quantkit.qdq import view as gx
from quantkit.qdq.findings import CODES, Finding, LintReport, NodeInfo, ScaleInfo
from quantkit.qdq.fp8 import FP8_OPSET, FP8_TYPES
from quantkit.qdq.rules import FP8_OPS, FUSES_RESIDUAL, QUANTIZABLE_OPS, quantized_inputs
from quantkit.qdq.view import QDQ, QDQGraph

logger = logging.getLogger(__name__)

_RANK = {"error": 0, "warning": 1, "info": 2}
_CONST_HINT = (" This weight is a Constant node, which onnxruntime's quantize_static quantizes "
               "like an activation (docs/tensorrt_rules.md#weights-stored-as-constant-nodes).")


def lint_model(model: onnx.ModelProto, *, source: str = "model.onnx",
               base_dir: str = "") -> LintReport:
    """Check a (Q/DQ) ONNX model against TensorRT's Q/DQ placement rules.

    Linear in the graph size; only scales and zero points are decoded, never weights.

    Args:
        model: the model (its external data need not be loaded).
        source: file name used in messages.
        base_dir: folder of the model, to read scales stored as external data.

    Returns:
        The report: findings sorted errors first (then graph order), one NodeInfo per node.
    """
    return _Linter(model, source, base_dir).run()


class _Linter:
    def __init__(self, model: onnx.ModelProto, source: str, base_dir: str) -> None:
        self.model, self.source, self.g = model, source, QDQGraph(model, base_dir=base_dir)
        self.qdq = self.g.qdq
        self.raw: list[tuple[int, int, Finding]] = []
        self.flagged: set[int] = set()
        self.precision: dict[int, str] = {}

    def add(self, code: str, idx: int | None, tensor: str | None, message: str) -> None:
        sev, pos = CODES[code][0], -1 if idx is None else idx
        self.flagged.add(pos)
        node = None if idx is None else self.g.names[idx]
        text = " ".join(message.split())
        self.raw.append((_RANK[sev], pos, Finding(code, sev, node, tensor, text)))

    def run(self) -> LintReport:
        g = self.g
        self._model_checks()
        for q in self.qdq.values():
            self._check_qdq(q)
        self._check_constants()
        infos = [self._node(i, n) for i, n in enumerate(g.nodes)]
        self._check_float_compute()
        self._check_dq_use()
        for i, node in enumerate(g.nodes):
            if node.op_type == "Add" and len(node.input) == 2:
                self._check_residual(i, node)
            if node.op_type in gx.SAME_TYPE_OPS:
                self._check_types(i, node)
            if node.op_type in QUANTIZABLE_OPS:
                self._check_output_qdq(i)
        findings = [f for _, _, f in sorted(self.raw, key=lambda r: (r[0], r[1]))]
        codes: dict[str | None, dict[str, None]] = {}
        for f in findings:
            codes.setdefault(f.node, {})[f.code] = None  # ordered set
        nodes = [NodeInfo(n.name, n.op_type, n.precision, n.weights, n.weight_axis, n.scales,
                          n.notes + tuple(codes.get(n.name, ()))) for n in infos]
        logger.debug("%s: %d nodes, %d findings", self.source, len(nodes), len(findings))
        return LintReport(self.source, g.opset, findings, nodes)

    def _model_checks(self) -> None:
        g, model = self.g, self.model
        external = any(t.data_location == TensorProto.EXTERNAL for t in g.initializers.values())
        if not external and model.ByteSize() < (2 << 30) - 1:
            try:
                onnx.checker.check_model(model)
            except Exception as err:  # ValidationError and friends
                first = (str(err).strip() or repr(err)).splitlines()[0].rstrip(".")
                self.add("QK100", None, None, f"{self.source}: onnx.checker rejects the model: "
                         f"{first}. ONNX Runtime will not load it either; fix that node.")
        if not 9 <= g.opset <= 24:
            self.add("QK111", None, None, f"{self.source}: opset {g.opset}; the TensorRT parser "
                     "supports opsets 9-24 (docs/tensorrt_rules.md#onnx-opsets). Convert it "
                     "(onnx.version_converter.convert_version(model, 17)) or re-export.")
        fp8 = [q for q in self.qdq.values() if q.qtype in FP8_TYPES]
        if fp8 and g.opset < FP8_OPSET:
            self.add("QK123", fp8[0].idx, fp8[0].x, f"{self.source}: opset {g.opset} with FP8 "
                     f"Q/DQ ({len(fp8)} nodes, e.g. {g.names[fp8[0].idx]}): FP8 types need "
                     "QuantizeLinear/DequantizeLinear of opset 19, so the model is invalid ONNX "
                     "and ONNX Runtime refuses it (TensorRT-RTX 1.7 parses it anyway, verified). "
                     "Set the opset to 19 (onnx.version_converter.convert_version(model, 19)) "
                     "or re-export (docs/fp8.md).")
        for i, node in enumerate(g.nodes):
            if gx.is_qoperator(node):
                self.add("QK108", i, None, f"{node.op_type} ({node.domain or 'ai.onnx'}): TensorRT "
                         "takes explicit Q/DQ only, verified "
                         "(docs/tensorrt_rules.md#explicit-quantization-only). Quantize in QDQ "
                         "format (quantkit quantize, or onnxruntime QuantFormat.QDQ).")

    def _check_qdq(self, q: QDQ) -> None:
        g, name = self.g, self.g.names[q.idx]
        consumers, is_output = g.final_consumers(q.y)
        cnodes = [g.nodes[c] for c in consumers]
        kind = "weight" if q.weight else "activation"
        bias = q.weight and any(n.op_type in ("Conv", "ConvTranspose", "Gemm")
                                and len(n.input) > 2 and g.source(n.input[2]) == g.source(q.y)
                                for n in cnodes)
        what = (f"{'Quantize' if q.is_q else 'Dequantize'}Linear {name} "
                f"({'bias' if bias else kind} {q.x})")
        hint = _CONST_HINT if q.weight and g.is_constant_node(g.weight_source(q.x)) else ""
        dqs = [c for c in consumers if c in self.qdq and not self.qdq[c].is_q] if q.is_q else []
        paired = bool(dqs) and not is_output and len(dqs) == len(consumers)
        self._check_scale_type(q, what, cnodes, paired)
        if q.is_q:
            for c in dqs:
                self._check_pair(q, self.qdq[c])
            if (is_output or len(dqs) < len(consumers)) and not any(map(gx.is_qoperator, cnodes)):
                users = ", ".join([g.names[c] for c in consumers if c not in dqs]
                                  + (["a graph output"] if is_output else []))
                self.add("QK116", q.idx, q.y, f"{what}: its output is used without a "
                         f"DequantizeLinear (by {users}). TensorRT expects each Q to be followed "
                         "by a DQ feeding the op that runs in INT8. Add the DequantizeLinear or "
                         "remove the QuantizeLinear.")
            if paired:
                return  # the rest is checked once per pair, at the DequantizeLinear
        s = q.scale.astype(np.float64) if q.scale is not None else np.ones(1)
        if not np.all(np.isfinite(s) & (s > 0)):
            self.add("QK122", q.idx, q.x, f"{what} has scales <= 0 or not finite ("
                     f"{gx.fmt_array(q.scale)}): the parser rejects it (\"Scale coefficients must"
                     " all be positive\", verified). Clamp them (e.g. 1/127 for all-zero data).")
        elif np.any((s < np.finfo(np.float32).tiny) | (s * 127 > np.finfo(np.float32).max)):
            self.add("QK122", q.idx, q.x, f"{what} has a subnormal or overflowing scale ("
                     f"{gx.fmt_array(q.scale)}): every value saturates. Re-calibrate it.")
        if q.qtype == TensorProto.INT32 and not q.is_q:
            self.add("QK101", q.idx, q.x, f"{what} dequantizes int32 data: the TensorRT parser "
                     "rejects it (\"input has type Int32 but must have type FP8, FP4, Int4, Int8,"
                     " or UInt8\", verified; onnxruntime#14229, onnx-tensorrt#850). Keep biases "
                     "float (onnxruntime: extra_options={'QuantizeBias': False}).")
        elif q.qtype in FP8_TYPES and q.qtype != TensorProto.FLOAT8E4M3FN:
            self.add("QK126", q.idx, q.x, f"{what} is {type_name(q.qtype)}: TensorRT takes FP8 "
                     "as E4M3 (FLOAT8E4M3FN) only; the parser rejects other FP8 types "
                     "(\"Failed to import initializer\" for an E5M2 zero point, verified). "
                     "Quantize to FLOAT8E4M3FN (docs/fp8.md).")
        elif q.qtype == TensorProto.UINT8 and not q.weight:
            self.add("QK104", q.idx, q.x, f"{what} is uint8; TensorRT's explicit quantization "
                     "is symmetric INT8 (docs/tensorrt_rules.md#rejected-qdq-forms). Use int8 "
                     "(onnxruntime: activation_type="
                     "QuantType.QInt8, extra_options={'ActivationSymmetric': True}).")
        elif q.qtype and (q.qtype not in gx.ACCEPTED_QTYPES or q.qtype == TensorProto.UINT8):
            self.add("QK103", q.idx, q.x, f"{what} is {type_name(q.qtype)}: the TensorRT parser "
                     "takes int8 (fp8, int4/fp4 weights, uint8 activations) and rejects it "
                     f"(verified for uint8 weights). Quantize to int8.{hint}")
        if q.zp is not None and q.zp.size and np.any(q.zp.astype(np.float64) != 0):
            self.add("QK102", q.idx, q.x, f"{what} has a non-zero zero point ({gx.fmt_array(q.zp)})"
                     ": the TensorRT parser rejects it (\"Non-zero zero point is not supported\","
                     " verified). Use symmetric quantization (onnxruntime: extra_options="
                     f"{{'ActivationSymmetric': True, 'WeightSymmetric': True}}).{hint}")
        if q.channels > 1 and g.opset < 13:
            self.add("QK110", q.idx, q.x, f"{what} is per-channel in an opset-{g.opset} model: "
                     "per-channel Q/DQ needs opset 13, so the model is invalid ONNX. Convert it "
                     "with onnx.version_converter.convert_version(model, 13) (output-identical, "
                     "docs/tensorrt_rules.md#onnx-opsets).")
        if q.channels > 1 and not q.weight and q.axis is not None:
            self.add("QK109", q.idx, q.x, f"{what} has {q.channels} per-channel scales on axis "
                     f"{q.axis}: TensorRT quantizes activations per tensor, and the consumer runs "
                     "in float (verified). Use one scale for the tensor.")

    def _check_pair(self, q: QDQ, dq: QDQ) -> None:
        if q.scale is None or dq.scale is None:
            return
        zq = np.zeros(1) if q.zp is None else q.zp.astype(np.float64).ravel()
        zd = np.zeros(1) if dq.zp is None else dq.zp.astype(np.float64).ravel()
        same_zp = (1 in (zq.size, zd.size) or zq.size == zd.size) and bool(np.all(zq == zd))
        same_scale = np.array_equal(q.scale, dq.scale)
        if not (same_scale and same_zp):
            self.add("QK121", dq.idx, dq.x, f"{self.g.names[q.idx]} and {self.g.names[dq.idx]} "
                     f"use different {'zero points' if same_scale else 'scales'}: the Q/DQ pair "
                     "rescales the tensor. Give both the same scale and zero point.")

    def _check_scale_type(self, q: QDQ, what: str, cnodes: list[onnx.NodeProto],
                          paired: bool) -> None:
        g, st = self.g, q.scale_type
        if st not in FLOAT_TYPES:
            return
        if st != TensorProto.FLOAT and g.opset < 19 and not paired:
            self.add("QK120", q.idx, q.x, f"{what} has a {type_name(st)} scale at opset "
                     f"{g.opset}; Q/DQ take float32 scales before opset 19. Convert the model.")
            return
        if q.is_q and (xt := g.elem_type(q.x)) in FLOAT_TYPES and xt != st:
            self.add("QK120", q.idx, q.x, f"{what}: its input is {type_name(xt)} but its scale "
                     f"is {type_name(st)}; ONNX requires one type and TensorRT rejects the mix. "
                     f"Write the scale as {type_name(xt)} (FP16 scales are allowed in strongly "
                     "typed FP16 graphs, docs/tensorrt_rules.md#strongly-typed-networks).")
        if not q.is_q and cnodes and all(n.op_type == "Cast" for n in cnodes):
            # a Cast pair around the Q/DQ: x(T) -> Cast -> Q -> DQ -> Cast(to T)
            back = {int(attr(n, "to", 0)) for n in cnodes}
            pq = self.qdq.get(g.producer.get(g.source(q.x), -1))
            cast = g.producer_node(pq.x) if pq is not None else None
            t = g.elem_type(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
            if t in FLOAT_TYPES and back == {t} and t != st:
                self.add("QK119", q.idx, q.x, f"{what} uses {type_name(st)} scales in a "
                         f"{type_name(t)} region, with Casts to {type_name(st)} and back around "
                         f"it: write the Q/DQ with {type_name(t)} scales (opset >= 19) and drop "
                         "the Casts, as strongly typed FP16 networks expect "
                         "(docs/tensorrt_rules.md#strongly-typed-networks).")

    def _check_constants(self) -> None:
        """QK107: TensorRT accepts a quantized (int8/int4/fp8) constant only before a DQ."""
        g = self.g
        names = [n for n, t in g.initializers.items() if t.data_type in gx.QUANT_CONST_TYPES]
        names += [n.output[0] for n in g.nodes if n.op_type == "Constant" and n.output
                  and g.elem_type(n.output[0]) in gx.QUANT_CONST_TYPES]
        for name in names:
            consumers, is_output = g.final_consumers(name)
            ok = {c for c in consumers if gx.is_qoperator(g.nodes[c]) or c in self.qdq and (
                not self.qdq[c].is_q or name != g.source(g.nodes[c].input[0]))}
            bad = [g.names[c] for c in consumers if c not in ok]
            if bad or is_output:
                where = ", ".join(bad + (["a graph output"] if is_output else []))
                self.add("QK107", g.producer.get(name), name, f"{type_name(g.elem_type(name))} "
                         f"constant {name} is used by {where}, not by a DequantizeLinear: the "
                         "build fails (\"Quantized constant is only allowed before DQ\", "
                         "verified). Dequantize it, or store it as float/int32.")

    def _node(self, i: int, node: onnx.NodeProto) -> NodeInfo:
        g, name, op = self.g, self.g.names[i], node.op_type
        if i in self.qdq:
            q = self.qdq[i]
            axis = f" axis {q.axis}" if q.axis is not None else ""
            return NodeInfo(name, op, type_name(q.qtype), notes=(
                "weight" if q.weight else "activation", f"scale {gx.fmt_array(q.scale)}{axis}"))
        if gx.is_qoperator(node):
            return NodeInfo(name, op, "unsupported")
        ftype = next((t for t in map(g.elem_type, node.input) if t in FLOAT_TYPES), None)
        if ftype is None and node.output:
            ftype = g.elem_type(node.output[0])
        fname = type_name(ftype) if ftype else "-"
        if op not in QUANTIZABLE_OPS or len(node.input) < 2:
            return NodeInfo(name, op, fname)
        dqs = [g.input_dq(node.input[k]) for k in (0, 1)]
        scales = tuple(ScaleInfo(k, node.input[k], "weight" if d.weight else "activation",
                                 type_name(d.qtype), d.channels, d.axis, *gx.minmax(d.scale))
                       for k, d in enumerate(dqs) if d is not None)
        consts = [d.weight if d else g.is_constant(g.source(node.input[k]))
                  for k, d in enumerate(dqs)]
        ranks = [g.weight_rank(d, node.input[k]) for k, d in enumerate(dqs)]
        attrs = {"transA": int(attr(node, "transA", 0)), "transB": int(attr(node, "transB", 0))}
        notes: list[str] = []
        weights, w_axis, usable = None, None, True
        for spec in quantized_inputs(op, attrs, consts, ranks):
            d = dqs[spec.index] if spec.index < 2 else None
            if d is None or spec.kind != "weight" or spec.axis is None:
                continue
            weights, w_axis = ("per-channel" if d.channels > 1 else "per-tensor"), d.axis
            # through a Transpose/Reshape the axis is not comparable: leave it unchecked
            if g.source(node.input[spec.index]) == node.input[spec.index]:
                usable &= self._check_weight(i, node, d, spec.axis)
        a, b = dqs
        precision = fname
        if a is not None and b is not None:
            # uint8 activations with zero point 0 still get INT8 kernels (verified)
            kinds = {TensorProto.INT8 if d.qtype == TensorProto.UINT8 and not d.weight
                     else d.qtype for d in (a, b)}
            act_pc = any(d.channels > 1 and d.axis is not None and not d.weight for d in (a, b))
            fp8 = TensorProto.FLOAT8E4M3FN
            if kinds == {TensorProto.INT8, fp8}:
                self.add("QK124", i, node.input[0], f"{name}: one input is FP8 and the other "
                         "INT8. TensorRT has no mixed FP8 x INT8 kernel: the TensorRT-RTX 1.7 "
                         "build fails (\"CHECK(dtype == W.type()) failed\", verified). Quantize "
                         "both inputs to the same type (docs/fp8.md).")
                usable = False
            elif kinds == {fp8} and op not in FP8_OPS:
                self.add("QK125", i, node.input[0], f"{name}: {op} with FP8 inputs is parsed "
                         "but compiled as an FP32 kernel on dequantized data (TensorRT-RTX 1.7, "
                         "SM89, verified): the FP8 Q/DQ only adds rounding. FP8 runs on "
                         f"{', '.join(sorted(FP8_OPS))}; quantize this node to int8 or leave "
                         "it in float (docs/fp8.md).")
                usable = False
            if len(kinds) == 1 and kinds <= gx.LOW_PRECISION.keys() and usable and not act_pc:
                precision = gx.LOW_PRECISION[kinds.pop()]
            else:
                notes.append(f"inputs {type_name(a.qtype)}/{type_name(b.qtype)}: runs in float")
        elif (d := a if a is not None else b) is not None:
            weight_only = d.weight and (op in ("Gemm", "MatMul") or d.axis is None
                                        and d.channels > 1)
            notes.append("weight-only quantized" if weight_only else "partially quantized")
            if not weight_only:
                missing = node.input[1 if a is not None else 0]
                self.add("QK117", i, missing, f"{name}: input {missing} has no Q/DQ but the other "
                         f"input has: TensorRT runs the node in {fname} and the Q/DQ only adds "
                         "rounding. Quantize data and weight inputs "
                         "(docs/tensorrt_rules.md#qdq-placement), or none.")
        self.precision[i] = precision
        return NodeInfo(name, op, precision, weights, w_axis, scales, tuple(notes))

    def _check_weight(self, i: int, node: onnx.NodeProto, d: QDQ, expected: int) -> bool:
        """QK106 / QK105 for one weight input; False when TensorRT cannot use it in INT8."""
        g, name = self.g, self.g.names[i]
        hint = _CONST_HINT if g.is_constant_node(g.weight_source(d.x)) else ""
        if d.channels > 1 and d.axis is not None and d.axis != expected:
            self.add("QK106", i, d.x, f"{name}: weight {d.x} has per-channel scales on axis "
                     f"{d.axis}, but {node.op_type} needs the output-channel axis {expected}: "
                     "TensorRT then runs the node in float (verified). Quantize on axis "
                     f"{expected}.")
            return False
        dims = g.const_dims(g.weight_source(d.x)) or ()
        fp8 = d.qtype == TensorProto.FLOAT8E4M3FN
        if d.channels == 1 and d.qtype in (TensorProto.INT8, TensorProto.FLOAT8E4M3FN) and (
                len(dims) <= expected or dims[expected] > 1):  # one output channel: same thing
            why = ("; in FP8 the small channels of folded-BatchNorm weights fall into E4M3's "
                   "subnormals (docs/fp8.md)" if fp8 else "")
            self.add("QK105", i, d.x, f"{name}: weight {d.x} has one scale for the whole "
                     f"tensor; TensorRT expects per-channel weight scales on axis {expected} "
                     "(docs/tensorrt_rules.md#qdq-placement), which keep small-range channels "
                     f"accurate{why}. Quantize "
                     f"it per channel (onnxruntime: per_channel=True).{hint}")
        return True

    def _check_float_compute(self) -> None:
        """QK118: stragglers left in float when most compute ops are INT8."""
        prec = self.precision
        low = sum(p in gx.LOW_PRECISION.values() for p in prec.values())
        if not low or low * 2 < len(prec):
            return
        for i, p in prec.items():
            if p not in gx.LOW_PRECISION.values() and i not in self.flagged:
                self.add("QK118", i, None, f"{self.g.names[i]} runs in {p} while {low} of "
                         f"{len(prec)} compute ops are INT8/FP8. Fine if intended (a sensitive "
                         "layer); otherwise quantize its data and weight inputs.")

    def _check_residual(self, i: int, node: onnx.NodeProto) -> None:
        g = self.g
        if any(g.is_constant(g.source(n)) for n in node.input):
            return
        (qa, ca, qqa), (qb, cb, qqb) = (g.branch(n, FUSES_RESIDUAL) for n in node.input)
        conv, q = (ca, qqa) if ca is not None else (cb, qqb)
        if conv is None:
            return
        cname = g.names[conv]
        if qa and qb:
            self.add("QK113", i, node.input[0 if conv == ca else 1], f"{g.names[i]}: both inputs "
                     f"are quantized, including the output of {cname}. TensorRT fuses a residual "
                     "Add into the preceding convolution: quantize only the other branch "
                     "(docs/tensorrt_rules.md#residual-add) and remove "
                     f"{g.names[q.idx] if q else 'the Q/DQ'}.")
        elif not qa and not qb and self.precision.get(conv) in gx.LOW_PRECISION.values():
            other = node.input[1 if conv == ca else 0]
            self.add("QK114", i, other, f"{g.names[i]}: neither input is quantized although "
                     f"{cname} is INT8. Quantize the branch {other} (not the output of {cname}) "
                     f"so TensorRT can fuse the Add into {cname} in INT8 "
                     "(docs/tensorrt_rules.md#residual-add).")

    def _check_types(self, i: int, node: onnx.NodeProto) -> None:
        """QK120: a DQ output whose type differs from the node's other inputs (verified)."""
        g = self.g
        floats = {n: t for n in node.input if n and (t := g.elem_type(n)) in FLOAT_TYPES}
        dq_in = [n for n in floats if g.input_dq(n) is not None]
        if len(set(floats.values())) > 1 and dq_in:
            desc = ", ".join(f"{n} is {type_name(t)}" for n, t in floats.items())
            self.add("QK120", i, dq_in[0], f"{g.names[i]} mixes element types ({desc}); a "
                     "DequantizeLinear outputs its scale's type. TensorRT rejects the node "
                     "(\"input and kernel must be of same type\", verified). Write the scales in "
                     "the graph's float type (FP16 scales need opset >= 19).")

    def _check_output_qdq(self, i: int) -> None:
        """QK112: compute op -> Q -> DQ -> the Relu/BN that TensorRT fuses into it."""
        g = self.g
        for c in g.consumers.get(g.nodes[i].output[0], []):
            q = self.qdq.get(c)
            for d in g.final_consumers(q.y)[0] if q is not None and q.is_q else []:
                fused = [g.nodes[n].op_type for n in g.final_consumers(g.nodes[d].output[0])[0]
                         if g.nodes[n].op_type in gx.FUSED_AFTER_OPS]
                if fused and d in self.qdq:
                    self.add("QK112", c, g.nodes[c].input[0], f"{g.names[c]} quantizes the "
                             f"output of {g.names[i]} before the {fused[0]} TensorRT fuses into "
                             "it. Quantize compute-op inputs, not outputs: move this Q/DQ after "
                             f"the {fused[0]} (docs/tensorrt_rules.md#qdq-placement).")
                    break

    def _check_dq_use(self) -> None:
        """QK115: activation DQs whose only users run in float (or are graph outputs)."""
        g = self.g
        for q in self.qdq.values():
            if q.is_q or q.weight:
                continue
            consumers, is_output = g.final_consumers(q.y)
            ops = sorted({g.nodes[c].op_type for c in consumers})
            if (ops or is_output) and all(op in gx.FLOAT_ONLY_OPS for op in ops):
                users = " and ".join([", ".join(ops)] * bool(ops) + ["a graph output"] * is_output)
                self.add("QK115", q.idx, q.x, f"DequantizeLinear {g.names[q.idx]} feeds only "
                         f"{users}, with no INT8 use in TensorRT: the Q/DQ pair only adds rounding"
                         " error. Remove it; quantize compute-op inputs "
                         "(docs/tensorrt_rules.md#qdq-placement).")


__all__ = ["CODES", "Finding", "LintReport", "NodeInfo", "ScaleInfo", "lint_model"]
