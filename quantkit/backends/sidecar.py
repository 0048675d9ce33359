"""The engine sidecar (``OUT.engine.json``): what precision each layer got, seen three ways.

1. **Parsed network** (``layers``): read from the TensorRT network the ONNX parser built, so it is
   available wherever the engine can be built, even on a machine without a GPU. Strongly typed
   networks (TensorRT 10 strongly typed, TensorRT 11, TensorRT-RTX) have no per-layer precision
   setting, so precision is derived from the graph
   (docs/tensorrt_rules.md#precision-as-the-builder-sees-it):

   * a Convolution / Deconvolution / MatrixMultiply is ``int8`` when both its data input and its
     weight input come from DEQUANTIZE layers whose input is INT8 (reshape-like layers in
     between are followed); its output tensor stays FLOAT/HALF. ``fp8``/``int4`` likewise
     (``fp8``: a DEQUANTIZE of FP8 data, verified with TensorRT-RTX 1.7 for SM89 and SM120 on
     the FP8 and mixed INT8/FP8 models quantkit writes, whose FP8 kernels the engine log lists
     with ``fp8`` inputs; an FP8 Deconvolution parses as ``fp8`` but compiles as an FP32
     kernel, which shows as an ``engine`` disagreement, docs/fp8.md).
   * QUANTIZE / DEQUANTIZE layers get the quantized type (``int8``, ``fp8``), and keep their
     own type.
   * every other layer: ``fp16`` / ``bf16`` / ``fp32`` from its output tensor type, else from
     its first floating-point input, else the output type (``int64`` for shape arithmetic).
   * CONSTANT layers (weights, scales) are left out of the list and only counted.

   Layer names are the ONNX node names (a node that becomes several layers gives them suffixes);
   ``onnx_node`` holds the node each layer came from.
2. **Engine** (``engine_layers``): the builder's VERBOSE log after ``Layers:`` (profiling
   verbosity DETAILED) lists every compiled kernel with its input/constant/output data types and
   ``Metadata: [ONNX Layer: name]...``. This is not a stable API, so it is parsed all-or-nothing:
   if any line does not match, nothing is recorded (and the reason is logged at debug level).
   A kernel's ``precision`` is the type of its first input. Each kernel also keeps its tensors'
   dimensions and its stream (multi-stream engines log ``signal``/``wait`` entries with an
   ``EventId``), which :mod:`quantkit.latency` times.
3. **Plan** (``plan_precision``): when the ONNX model carries quantkit's precision plan in
   ``metadata_props["quantkit.plan"]`` (``{"format": "quantkit-plan/1", "nodes": {name:
   {"op_type", "precision"}}}``), each layer of a planned node records the planned precision.

``disagreements`` lists every place where these differ: ``kind: "plan"`` (the plan asked for a
precision the parsed network does not have) and ``kind: "engine"`` (the builder compiled a
compute layer in another precision than the network says, e.g. an FP32 island inside an FP16
network compiled as a Half kernel, or an INT8 conv whose Q/DQ did not fuse).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantkit.errors import InputError

if TYPE_CHECKING:
    import tensorrt as trt

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "quantkit-engine/1"
PLAN_KEY = "quantkit.plan"
TRANSFORMS_KEY = "quantkit.transforms"  # quantkit.transforms._common.TRANSFORMS_METADATA_KEY
PLAN_FORMAT = "quantkit-plan/1"

_DTYPES = {"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16", "INT8": "int8", "INT32": "int32",
           "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "fp8", "INT4": "int4",
           "FP4": "fp4", "E8M0": "e8m0"}
_FLOATS = ("fp32", "fp16", "bf16")
#: output types of shape computation (Shape, Gather of dims, Equal...), which no plan governs
_SHAPE_TYPES = frozenset({"int32", "int64", "bool"})
#: layer types whose precision is decided by Q/DQ on their data and weight inputs
COMPUTE_TYPES = frozenset({"CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY"})
_QDQ_TYPES = frozenset({"QUANTIZE", "DEQUANTIZE"})
# Layers TensorRT moves a DQ across without changing its meaning (Q/DQ propagation).
_PASS_THROUGH = frozenset({"SHUFFLE", "SQUEEZE", "UNSQUEEZE", "IDENTITY"})
# Arithmetic layers checked for "FP32 in the network, only half types in the engine".
_MATH_TYPES = frozenset({"ACTIVATION", "ELEMENTWISE", "UNARY", "SOFTMAX", "NORMALIZATION",
                         "REDUCE", "POOLING", "SCALE", "EINSUM", "PARAMETRIC_RELU"})


def dtype_name(dtype: Any) -> str:
    """``DataType.HALF`` -> ``"fp16"`` (``fp32``, ``int8``, ``int64``, ...)."""
    name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
    return _DTYPES.get(name, name.lower())


# Entries are separated by "\x1f" (ASCII unit separator) in TensorRT-RTX 1.7 kernel metadata;
# Python's \s matches it, so this also accepts entries written back to back.
_META = re.compile(r"\[ONNX Layer: (.*?)\](?=\s*(?:\[ONNX Layer: |$))")


def split_metadata(text: str) -> list[str]:
    """``[ONNX Layer: a]<US>[ONNX Layer: b]`` -> ``["a", "b"]`` (layer or kernel metadata)."""
    return _META.findall(text.strip()) if text else []


def as_shape(dims: trt.Dims | Sequence[int]) -> tuple[int, ...]:
    """A TensorRT ``Dims`` (or any sequence of ints) as a tuple; ``-1`` marks a dynamic dim."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def io_entry(tensor: trt.ITensor) -> dict[str, Any]:
    """``{"name", "dtype", "shape"}`` of a network input or output."""
    return {"name": tensor.name, "dtype": dtype_name(tensor.dtype),
            "shape": list(as_shape(tensor.shape))}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``OUT.engine`` -> ``OUT.engine.json``."""
    p = Path(engine)
    return p.with_name(p.name + ".json")


# ---------------------------------------------------------------------------------------------
# 1. the parsed network


def network_layers(network: trt.INetworkDefinition) -> tuple[list[dict[str, Any]], int]:
    """Per-layer precision of a parsed network (see the module docstring for the rules).

    Returns:
        The layer entries in network order, and the number of CONSTANT layers left out.
    """
    all_layers = [network.get_layer(i) for i in range(network.num_layers)]
    producers: dict[str, trt.ILayer] = {}
    for layer in all_layers:
        for j in range(layer.num_outputs):
            producers[layer.get_output(j).name] = layer
    entries: list[dict[str, Any]] = []
    constants = 0
    for layer in all_layers:
        ltype = layer.type.name
        if ltype == "CONSTANT":
            constants += 1
            continue
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        in_types = [dtype_name(t.dtype) for t in inputs if t is not None]
        out_types = [dtype_name(layer.get_output(j).dtype) for j in range(layer.num_outputs)]
        entry: dict[str, Any] = {"name": layer.name, "type": ltype}
        if ltype == "QUANTIZE":
            entry["precision"] = out_types[0] if out_types else "int8"
        elif ltype == "DEQUANTIZE":
            entry["precision"] = in_types[0] if in_types else "int8"
        elif ltype in COMPUTE_TYPES:
            entry.update(_compute_precision(inputs, producers, in_types, out_types))
        else:
            entry["precision"] = _float_precision(in_types, out_types)
        entry["output_dtypes"] = out_types
        nodes = split_metadata(getattr(layer, "metadata", "") or "")
        if nodes:
            entry["onnx_node"] = nodes[0]
        entries.append(entry)
    return entries, constants


def _float_precision(in_types: Sequence[str], out_types: Sequence[str]) -> str:
    for dt in (*out_types, *in_types):
        if dt in _FLOATS:
            return dt
    return out_types[0] if out_types else (in_types[0] if in_types else "none")


def _dequantized_from(tensor: trt.ITensor | None, producers: dict[str, trt.ILayer]) -> str | None:
    """The quantized type (``int8``...) if ``tensor`` comes from a DEQUANTIZE, else None."""
    for _ in range(8):
        if tensor is None:
            return None
        layer = producers.get(tensor.name)
        if layer is None:
            return None
        ltype = layer.type.name
        if ltype == "DEQUANTIZE":
            src = layer.get_input(0)
            quantized = dtype_name(src.dtype) if src is not None else None
            return quantized if quantized not in (None, *_FLOATS) else None
        if ltype not in _PASS_THROUGH:
            return None
        src = layer.get_input(0)
        if ltype == "IDENTITY" and src is not None and src.dtype != tensor.dtype:
            return None  # an identity that casts is a Cast, not a reshape
        tensor = src
    return None


def _compute_precision(inputs: Sequence[trt.ITensor | None], producers: dict[str, trt.ILayer],
                       in_types: Sequence[str], out_types: Sequence[str]) -> dict[str, str]:
    data = _dequantized_from(inputs[0] if inputs else None, producers)
    weight = _dequantized_from(inputs[1] if len(inputs) > 1 else None, producers)
    fallback = _float_precision(in_types, out_types)
    if data and weight:
        return {"precision": data if data == weight else f"{data}/{weight}"}
    if weight:
        return {"precision": fallback,
                "note": f"weight-only {weight}: the data input is not dequantized"}
    if data:
        return {"precision": fallback,
                "note": f"only the data input is dequantized from {data}; the weights need a "
                        f"DequantizeLinear too for TensorRT to run this layer in {data}"}
    return {"precision": fallback}


# ---------------------------------------------------------------------------------------------
# 2. the engine, from the builder's VERBOSE log: :mod:`quantkit.backends.engine_log`


# ---------------------------------------------------------------------------------------------
# 3. the precision plan written by quantkit.qdq


def read_plan(model: str | os.PathLike[str]) -> tuple[dict[str, str] | None, dict[str, Any]]:
    """The ``quantkit.plan`` metadata of an ONNX model, if any.

    Returns:
        ``({node name: precision}, info)``, or ``(None, info)`` when the model has no (valid)
        plan; ``info`` says which, for the sidecar.
    """
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as err:  # the TensorRT parser read it; a plan is optional
        logger.debug("could not read %s for its precision plan: %s", model, err)
        return None, {"present": False}
    transforms = _transforms_summary(proto)
    raw = next((p.value for p in proto.metadata_props if p.key == PLAN_KEY), None)
    if raw is None:
        return None, {"present": False, **transforms}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        logger.warning("%s: metadata %s is not JSON (%s); plan ignored", model, PLAN_KEY, err)
        return None, {"present": True, "error": f"not JSON: {err}"}
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT or not isinstance(nodes,
                                                                                       dict):
        fmt = doc.get("format") if isinstance(doc, dict) else None
        logger.warning("%s: metadata %s is not a %s document (format %r); plan ignored",
                       model, PLAN_KEY, PLAN_FORMAT, fmt)
        return None, {"present": True, "error": f"unsupported format {fmt!r}"}
    plan = {str(name): str(entry["precision"]) for name, entry in nodes.items()
            if isinstance(entry, dict) and "precision" in entry}
    return plan, {"present": True, "format": PLAN_FORMAT, "nodes": len(plan), **transforms}


def _transforms_summary(proto: Any) -> dict[str, Any]:
    """Summary of the model's ``quantkit.transforms`` metadata, or ``{}``.

    That is what ``quantkit transform`` / ``autotune --rescue`` did to the FP32 model.
    """
    raw = next((p.value for p in proto.metadata_props if p.key == TRANSFORMS_KEY), None)
    if raw is None:
        return {}
    try:
        reports = json.loads(raw)
    except json.JSONDecodeError:
        return {"transforms": "unreadable"}
    if not isinstance(reports, list):
        return {"transforms": "unreadable"}
    return {"transforms": [
        {"transform": r.get("transform"), "settings": r.get("settings"),
         "changed": len(r.get("changed") or []), "skipped": len(r.get("skipped") or [])}
        for r in reports if isinstance(r, dict)]}


# ---------------------------------------------------------------------------------------------
# comparison


def _node_precision(layers: Sequence[dict[str, Any]]) -> str:
    """The precision of an ONNX node made of ``layers``: its compute layer's, if any."""
    for layer in layers:
        if layer["type"] in COMPUTE_TYPES:
            return str(layer["precision"])
    for layer in layers:
        if layer["type"] not in _QDQ_TYPES and layer["type"] != "SHAPE":
            return str(layer["precision"])
    return str(layers[0]["precision"])


def compare(layers: list[dict[str, Any]], kernels: Sequence[dict[str, Any]] | None,
            plan: dict[str, str] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Annotate ``layers`` in place with ``engine_precision`` / ``plan_precision``.

    Returns:
        The disagreements, and plan-matching statistics for the sidecar.
    """
    disagreements: list[dict[str, Any]] = []
    by_node: dict[str, list[dict[str, Any]]] = {}
    for layer in layers:
        by_node.setdefault(layer.get("onnx_node", layer["name"]), []).append(layer)
    if kernels:
        disagreements += _compare_engine(layers, kernels)
    stats: dict[str, Any] = {}
    if plan is not None:
        unmatched = []
        for node, wanted in plan.items():
            group = by_node.get(node)
            if not group:
                unmatched.append(node)
                continue
            for layer in group:
                layer["plan_precision"] = wanted
            got = _node_precision(group)
            if got in _SHAPE_TYPES:
                continue  # integer/bool shape arithmetic: the plan's float precision is moot
            if got != wanted:
                disagreements.append({
                    "layer": node, "kind": "plan", "plan": wanted, "network": got,
                    "message": f"{node}: the precision plan says {wanted}, the parsed network "
                               f"has {got}",
                })
        if unmatched:
            logger.debug("plan nodes not in the parsed network (folded or removed by the "
                         "parser): %s", ", ".join(unmatched[:20]))
        stats = {"matched": len(plan) - len(unmatched), "unmatched": unmatched[:50]}
    return disagreements, stats


def _compare_engine(layers: list[dict[str, Any]], kernels: Sequence[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}  # node -> first kernel that names it first
    mentions: dict[str, list[dict[str, Any]]] = {}
    for kernel in kernels:
        for i, node in enumerate(kernel["onnx_layers"]):
            mentions.setdefault(node, []).append(kernel)
            if i == 0:
                first.setdefault(node, kernel)
    out: list[dict[str, Any]] = []
    for layer in layers:
        node = layer.get("onnx_node")
        if node is None:
            continue
        if layer["type"] in COMPUTE_TYPES:
            # The compute kernel of a node is the first one whose metadata starts with it; its
            # first input's type is what the math runs in (int8 x int8 -> Int8 input). Fused
            # kernels name several nodes (a Q/K/V gemm lists one projection first), so a kernel
            # that mentions the node anywhere and runs in the network's precision agrees.
            agreeing = next((k for k in mentions.get(node, [])
                             if k["precision"] == layer["precision"]), None)
            found = agreeing or first.get(node)
            if found is None or found["precision"] is None:
                continue
            kernel, got = found, found["precision"]
        elif layer["type"] in _MATH_TYPES and layer["precision"] == "fp32":
            # An FP32 island is only reported when every kernel touching it is half-typed:
            # fused epilogues legitimately mix types (FP32 islands and Softmax can be compiled
            # into Half kernels: docs/tensorrt_rules.md#precision-as-the-builder-sees-it).
            group = mentions.get(node, [])
            types = {t for k in group for t in (*k["inputs"], *k["outputs"])}
            if not group or "fp32" in types or not types & {"fp16", "bf16"}:
                continue
            if any("cast" in str(k["name"]).lower() for k in group):
                continue  # a kernel with casts fused in (LayerNorm's CastMeanSub...Cast) can
                # compute in FP32 between half-typed inputs and outputs: not evidence
            got = "fp16" if "fp16" in types else "bf16"
            kernel = group[0]
        else:
            continue
        layer["engine_precision"] = got
        layer["engine_kernel"] = kernel["name"]
        if got != layer["precision"]:
            out.append({
                "layer": layer["name"], "kind": "engine", "network": layer["precision"],
                "engine": got, "kernel": kernel["name"],
                "message": f"{layer['name']}: {layer['precision']} in the parsed network, "
                           f"but the engine runs it in {got} (kernel {kernel['name']})",
            })
    return out


# ---------------------------------------------------------------------------------------------
# reading and summarising


def precision_counts(doc: dict[str, Any]) -> dict[str, int]:
    """How many layers from ONNX nodes got each precision, Q/DQ and Cast layers left out."""
    counts: dict[str, int] = {}
    for layer in doc.get("layers", []):
        if layer.get("type") in (*_QDQ_TYPES, "CAST") or "onnx_node" not in layer:
            continue
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return dict(sorted(counts.items()))


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an engine sidecar (``OUT.engine.json``, or the engine path itself).

    Raises:
        InputError: missing file, not JSON, or not a ``quantkit-engine/1`` document.
    """
    p = Path(path)
    if p.suffix != ".json":
        p = sidecar_path(p)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such sidecar; it is written next to the engine by "
                         "quantkit build.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{p}: not a readable JSON sidecar: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise InputError(f"{p}: not a {SIDECAR_FORMAT} sidecar (format "
                         f"{doc.get('format') if isinstance(doc, dict) else None!r}).")
    bad = [k for k, t in _SIDECAR_TYPES.items() if k in doc and (
        isinstance(doc[k], bool) or not isinstance(doc[k], t)
        or (isinstance(doc[k], list) and not all(isinstance(v, dict) for v in doc[k])))]
    if bad:  # absent keys are fine (older sidecars); lists hold objects
        raise InputError(f"{p}: \"{bad[0]}\" has the wrong type (damaged?); rebuild the engine.")
    return doc


_SIDECAR_TYPES: dict[str, type | tuple[type, ...]] = {**dict.fromkeys((
    "backend", "backend_version", "quantkit_version", "created_utc", "model", "model_sha256"), str),
    **dict.fromkeys(("build_time_s", "parse_time_s", "engine_bytes", "constant_layers"),
                    (int, float)),
    **dict.fromkeys(("inputs", "outputs", "layers", "engine_layers", "disagreements"), list),
    **dict.fromkeys(("shapes", "builder", "plan", "engine_log"), dict)}
