"""Estimate a TensorRT engine's latency on a named GPU from the engine's own kernel list.

TensorRT-RTX builds the engine on this machine (no GPU needed) for the GPU's compute capability
(or the closest one it can target) and logs every compiled kernel with its input, constant and
output tensors (dimensions and data types) and the ONNX nodes it implements
(:func:`quantkit.backends.engine_log.parse_engine_log`). Per kernel:

* **bytes** = every input, constant and output tensor the kernel lists, at the kernel's data
  types: what it reads from and writes to DRAM. A fused kernel (conv + bias + ReLU + the next
  layer's Quantize, a myelin fusion of many element-wise nodes, a fused attention) therefore
  counts only its external tensors; intermediates that stay on chip cost nothing. Weights are
  listed once per kernel that uses them.
* **FLOPs** come from the ONNX nodes the kernel names (:mod:`quantkit.latency.flops`). A node
  named by several kernels is counted once: a convolution/matrix node in the kernel that runs
  it (the kernel named after it, else a GEMM/convolution/attention kernel, else the first that
  names it; Q/DQ and epilogue kernels also name the conv whose output they rescale), any other
  node in the first kernel naming it. Nodes whose inputs are all constants are folded by the
  builder and cost nothing. A GEMM/convolution kernel left without matrix FLOPs (its metadata
  names no matrix node, or the node's shapes are unknown) gets them from its own weight and
  output dimensions (:func:`_weight_flops`).
* INT8/FP8 epilogue kernels are folded into their convolution/GEMM as TensorRT fuses them
  (:mod:`quantkit.latency.fusion`), unless ``EstimateOptions.fuse_epilogues`` is off; kernels
  that compute only from weights are counted as build-time work (TensorRT prepares weights when
  it builds), unless ``EstimateOptions.fold_constant_kernels`` is off.
* **precision** is the kernel's first floating-point or quantized input type (an INT8 conv
  reads INT8, a FP8 GEMM FP8; an embedding gather is typed by its table, not its indices);
  matrix FLOPs run at that precision's tensor peak, element-wise FLOPs at the FP32 CUDA-core
  peak; time from :func:`quantkit.latency.model.kernel_seconds`.

The engine latency is the sum over kernels along the engine's streams
(:func:`quantkit.latency.model.timeline_seconds`; one stream: the plain sum).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from quantkit.errors import InputError, MissingExtraError, PipelineError
from quantkit.latency.flops import MATRIX_OPS, NodeCost, node_costs
from quantkit.latency.fusion import (
    REDUCTION_OPS,
    Work,
    fold_constant_kernels,
    fold_epilogues,
    quantized_type,
)
from quantkit.latency.gpus import GPU, get_gpu
from quantkit.latency.model import (
    Estimate,
    EstimateOptions,
    KernelEstimate,
    kernel_seconds,
    timeline_seconds,
)

logger = logging.getLogger(__name__)

_DTYPE_BYTES: dict[str, float] = {
    "fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "uint8": 1, "fp8": 1, "bool": 1, "int32": 4,
    "int64": 8, "int4": 0.5, "fp4": 0.5, "e8m0": 1,
}
#: builder-log layer types that run convolutions / matrix products
_MATRIX_KERNEL_TYPES = frozenset({"correlation", "convolution", "deconvolution", "gemm",
                                  "runtime_fusion", "matrix_multiply", "mha", "fmha"})
_MATRIX_KERNEL_NAME = re.compile(r"gemm|mha|attention|conv|(?:^|_)fc", re.IGNORECASE)
_FP8_TYPES = frozenset({17, 18, 19, 20})  # onnx.TensorProto FLOAT8E4M3FN/FNUZ, E5M2/FNUZ


def estimate_model(model: str | os.PathLike[str], gpu: str, *,
                   shapes: Mapping[str, Sequence[int]] | None = None,
                   options: EstimateOptions | None = None) -> Estimate:
    """Build ``model`` with TensorRT-RTX for ``gpu`` and estimate the engine's latency there.

    Args:
        model: the ONNX model (FP32, FP16, or with INT8/FP8 Q/DQ).
        gpu: a name from the GPU table (see :func:`quantkit.latency.list_gpus`).
        shapes: the shape of each dynamic input (the engine is built for exactly these).
        options: model constants (default: :class:`EstimateOptions`).

    Returns:
        The estimate; ``method`` names the compute capability that was built.

    Raises:
        InputError: unknown GPU, a precision the GPU lacks (FP8 on Ampere/Turing), TensorRT-RTX
            not installed, bad shapes, or a model that does not build.
    """
    return estimate_models(model, [gpu], shapes=shapes, options=options)[0]


def check_available() -> Any:
    """The TensorRT-RTX backend the estimates build with.

    Raises:
        MissingExtraError: TensorRT-RTX is not installed (exit 2, names the extra).
    """
    from quantkit.backends import get_backend

    backend = get_backend("tensorrt-rtx")
    if not backend.available():
        raise MissingExtraError("Latency estimates (built with TensorRT-RTX)", "rtx",
                                "tensorrt_rtx_bindings")
    return backend


def estimate_models(model: str | os.PathLike[str], gpus: Sequence[str], *,
                    shapes: Mapping[str, Sequence[int]] | None = None,
                    options: EstimateOptions | None = None,
                    status: Callable[[str], None] | None = None) -> list[Estimate]:
    """:func:`estimate_model` for several GPUs, building once per TensorRT-RTX target.

    Every GPU name and the model's precisions are checked before the first build. ``status``
    receives one line per step (for a progress display).

    Raises:
        InputError: as :func:`estimate_model`.
    """
    rows = [get_gpu(gpu) for gpu in gpus]
    options = options or EstimateOptions()
    path = Path(model)
    for row in rows:
        check_model_precisions(path, row)
    backend = check_available()
    say = status or (lambda _msg: None)
    fixed = {name: tuple(int(d) for d in dims) for name, dims in (shapes or {}).items()}
    builds: dict[tuple[str, ...], tuple[dict[str, Any], str]] = {}
    out: list[Estimate] = []
    with tempfile.TemporaryDirectory(prefix="quantkit-estimate-") as tmp:
        for row in rows:
            if row.build_targets not in builds:
                say(f"building {path.name} for {row.build_targets[0]} ({row.name}) with "
                    "TensorRT-RTX")
                builds[row.build_targets] = _build(backend, path, row, fixed, options, Path(tmp))
            say(f"estimating {row.name}")
            sidecar, note = builds[row.build_targets]
            out.append(estimate_from_sidecar(sidecar, path, row.name, fixed or None,
                                             options=options, _note=note))
    return out


def _build(backend: Any, path: Path, row: GPU, shapes: Mapping[str, tuple[int, ...]],
           options: EstimateOptions, folder: Path) -> tuple[dict[str, Any], str]:
    """Build for the first of the GPU's targets that builds: ``(sidecar, note for method)``."""
    from quantkit.backends import BuildOptions

    failures: list[str] = []
    for target in row.build_targets:
        build = BuildOptions(shapes=shapes, compute_capabilities=(target,), engine_log=True,
                             opt_level=options.opt_level)
        try:
            result = backend.build(path, folder / f"{target}.engine", build)
        except PipelineError as err:
            logger.info("TensorRT-RTX build for %s failed: %s", target, err)
            failures.append(f"{target}: {err}")
            continue
        note = ""
        if failures:
            note = (f"; the {failures[0].split(':', 1)[0]} build failed, so the kernel list "
                    f"comes from {target}")
        return result.sidecar, note
    raise InputError(f"{path}: TensorRT-RTX could not build an engine for the {row.name} "
                     f"({', '.join(row.build_targets)}), so there is no kernel list to estimate "
                     f"from. {' / '.join(failures)}")


def estimate_from_sidecar(sidecar: Mapping[str, Any], model: str | os.PathLike[str], gpu: str,
                          shapes: Mapping[str, Sequence[int]] | None = None, *,
                          options: EstimateOptions | None = None, _note: str = "") -> Estimate:
    """Estimate from an existing build's sidecar (its ``engine_layers`` kernel list).

    Args:
        sidecar: the ``OUT.engine.json`` document of a build with the engine log read.
        model: the ONNX model that engine was built from (for the nodes' FLOPs).
        gpu: a name from the GPU table.
        shapes: input shapes (default: the sidecar's opt shapes).
        options: model constants.

    Raises:
        InputError: unknown GPU, no kernel list in the sidecar, kernels with dynamic (-1)
            dimensions (a build with a shape range; build with one shape per input), or a
            precision the GPU lacks.
    """
    row = get_gpu(gpu)
    options = (options or EstimateOptions()).for_gpu(row.memory_efficiency)
    kernels = list(sidecar.get("engine_layers") or [])
    if not kernels:
        raise InputError("the engine sidecar has no kernel list (engine_layers): the build "
                         "did not read the builder's log. Build again with the engine log on.")
    if any(k.get("input_dims") is None for k in kernels):
        raise InputError("the engine sidecar's kernel list has no tensor dimensions (written "
                         "by an older quantkit); build the engine again.")
    for k in kernels:
        for dims in (*k["input_dims"], *k["constant_dims"], *k["output_dims"]):
            if dims is not None and any(d < 0 for d in dims):
                raise InputError(
                    f"kernel {k['name']} has dynamic dimensions {dims}: the engine was built "
                    "for a range of shapes. Estimate from a build with one shape per input "
                    "(the same min, opt and max shape).")
    opt = _opt_shapes(sidecar)
    used = {name: list(dims) for name, dims in (shapes or {}).items()} or opt
    for name, dims in used.items():
        if name in opt and opt[name] != dims:
            raise InputError(f"input '{name}': shape {dims} was asked for, but the engine was "
                             f"built for {opt[name]}; estimate at the built shape or build "
                             "again for this one.")
    costs = node_costs(model, used)
    matrix, vector, matrix_node = _assign(kernels, costs)
    for i, k in enumerate(kernels):
        if matrix[i] == 0:  # a GEMM/conv kernel naming no matrix node, or one of unknown shape
            matrix[i] = _weight_flops(k)
    work = [Work(name=str(k["name"]), type=str(k.get("type", "")),
                 precision=_precision(k),
                 matrix_flops=matrix[i], vector_flops=vector[i],
                 bytes=_kernel_bytes(k, _gathered_tables(k, costs)),
                 onnx_layers=tuple(k.get("onnx_layers") or ()), matrix_node=matrix_node[i],
                 stream=int(k.get("stream") or 0), event=k.get("event"))
            for i, k in enumerate(kernels)]
    weight_kernels: set[str] = set()
    if options.fold_constant_kernels:
        work, weight_kernels = fold_constant_kernels(kernels, work, _DTYPE_BYTES)
    if options.fuse_epilogues:
        work = fold_epilogues(
            kernels, work, _DTYPE_BYTES,
            reductions=frozenset(n for n, c in costs.items() if c.op_type in REDUCTION_OPS),
            quantized_outputs={n: quantized_type(kernels, n) for n, c in costs.items()
                               if c.output == "quantized"})
    work = [w for w in work if w.name not in weight_kernels]
    out: list[KernelEstimate] = []
    for w in work:
        peak = row.tensor_peak_tflops(w.precision, tf32=options.tf32) if w.matrix_flops > 0 \
            else row.fp32_tflops
        if peak is None:
            raise InputError(_unsupported(row, w.precision, f"kernel {w.name}"))
        seconds, bound = kernel_seconds(w.matrix_flops, w.vector_flops, w.bytes,
                                        tensor_tflops=peak, vector_tflops=row.fp32_tflops,
                                        bandwidth_gbs=row.bandwidth_gbs, options=options)
        out.append(KernelEstimate(
            name=w.name, type=w.type, precision=w.precision,
            flops=w.matrix_flops + w.vector_flops, matrix_flops=w.matrix_flops,
            bytes=int(w.bytes), ms=seconds * 1e3, bound=bound, onnx_layers=w.onnx_layers,
            fused=w.fused, stream=w.stream, event=w.event))
    by_precision: dict[str, float] = {}
    for ke in out:
        if ke.bound != "empty":  # signal/wait entries and host-side shape calls take no time
            by_precision[ke.precision] = by_precision.get(ke.precision, 0.0) + ke.ms
    builder = sidecar.get("builder") or {}
    targets = builder.get("compute_capabilities", "default")
    target = ",".join(targets) if isinstance(targets, list) else str(targets)
    total = sum(c.matrix_flops for c in costs.values())
    counted = sum(w.matrix_flops for w in work)
    if total > 0 and counted < 0.99 * total:
        logger.warning("%.1f%% of the model's convolution/matrix FLOPs belong to ONNX nodes no "
                       "kernel names; the estimate leaves them out", 100 * (1 - counted / total))
        _note += (f"; {100 * (1 - counted / total):.1f}% of the model's matrix FLOPs are in ONNX "
                  "nodes no kernel names and are left out")
    folded = sum(len(k.fused) for k in out) - len(weight_kernels)
    if weight_kernels:
        _note += (f"; {len(weight_kernels)} kernels computing only from weights (run-time "
                  "weight dequantization/rearrangement by TensorRT-RTX) counted as done at build "
                  "time, as TensorRT does, their readers reading the quantized weight")
    if folded:
        _note += (f"; {folded} INT8/FP8 epilogue kernels folded into their convolution/GEMM as "
                  "TensorRT fuses them (TensorRT-RTX compiles them separately)")
    latency = timeline_seconds([(k.stream, k.type, k.event, k.ms) for k in out])
    streams = {k.stream for k in out}
    if len(streams) > 1:
        _note += (f"; the engine runs kernels on {len(streams)} streams, synchronised by the "
                  "builder's events: overlapping kernels are assumed not to slow each other")
    return Estimate(
        gpu=row.name, latency_ms=latency, by_precision=by_precision,
        kernels=tuple(out), method=_method(row, sidecar, target, options) + _note,
        batch_size=_batch_size(sidecar, used), shapes=used, build_target=target,
        overlap_ms=max(0.0, sum(k.ms for k in out) - latency))


def estimate_build(sidecar: Mapping[str, Any], model: str | os.PathLike[str], gpu: str, *,
                   options: EstimateOptions | None = None) -> Estimate:
    """Estimate for the engine a build just made: from its own kernel list where it fits.

    The build's kernel list is reused when it is a TensorRT-RTX build for exactly the GPU's
    build target with one shape per input; otherwise (full TensorRT, a portable or other-target
    build, a shape range) the model is built again for the GPU's target at the build's opt
    shapes, and ``method`` says so.
    """
    row = get_gpu(gpu)
    targets = (sidecar.get("builder") or {}).get("compute_capabilities")
    ranges = (sidecar.get("shapes") or {}).values()
    static = all(r.get("min") == r.get("opt") == r.get("max") for r in ranges)
    dims_known = all(k.get("input_dims") is not None for k in sidecar.get("engine_layers") or [])
    if (sidecar.get("backend") == "tensorrt-rtx" and targets == [row.build_targets[0]]
            and static and sidecar.get("engine_layers") and dims_known):
        return estimate_from_sidecar(sidecar, model, row.name, options=options)
    opt = {name: list(r["opt"]) for name, r in (sidecar.get("shapes") or {}).items()}
    est = estimate_model(model, row.name, shapes=opt or None, options=options)
    if not static:
        why = "the engine was built for a range of shapes"
    elif targets in (None, "default"):
        why = f"the engine is a portable {sidecar.get('backend')} build"
    else:
        built = ",".join(targets) if isinstance(targets, list) else targets
        why = (f"the engine was built by {sidecar.get('backend')} for {built}, not "
               f"{row.build_targets[0]}")
    return replace(est, method=f"{est.method}; from a separate TensorRT-RTX build at the opt "
                               f"shapes ({why})")


def check_model_precisions(model: str | os.PathLike[str], gpu: GPU | str) -> None:
    """Refuse a model whose quantized types the GPU has no tensor math for (FP8 before SM89).

    Raises:
        InputError: e.g. an FP8 Q/DQ model for an A100; the message names a node and the fix.
    """
    import onnx

    row = get_gpu(gpu) if isinstance(gpu, str) else gpu
    if not Path(model).is_file():
        raise InputError(f"{model}: no such file; give the path of an .onnx model.")
    if row.fp8_tflops is not None:
        return
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as err:  # protobuf raises many types for a broken file
        raise InputError(f"{model}: not a readable ONNX model ({err}).") from err
    fp8 = {init.name for init in proto.graph.initializer if init.data_type in _FP8_TYPES}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        out_type = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
        if out_type in _FP8_TYPES or any(name in fp8 for name in node.input):
            raise InputError(_unsupported(row, "fp8", f"{model}: node '{node.name}'"))


def _unsupported(row: GPU, precision: str, where: str) -> str:
    need = {"fp8": "FP8 needs compute capability 8.9 or later (Ada, Hopper, Blackwell)",
            "bf16": "BF16 needs compute capability 8.0 or later (Ampere and later)"}.get(
        precision, f"the {row.name} has no {precision} tensor math")
    able = ", ".join(g for g in ("L4", "L40S", "H100-SXM", "RTX-4090") if g != row.name)
    return (f"{where} runs in {precision.upper()}, which the {row.name} ({row.architecture}, "
            f"{row.sm}) cannot run: {need}. Estimate for a GPU that has it (e.g. {able}), or "
            "quantize the model to INT8 / FP16 for this GPU.")


def _opt_shapes(sidecar: Mapping[str, Any]) -> dict[str, list[int]]:
    shapes = sidecar.get("shapes") or {}
    out = {name: list(r["opt"]) for name, r in shapes.items() if isinstance(r, dict)}
    for io in sidecar.get("inputs") or []:
        if io["name"] not in out and all(d >= 0 for d in io["shape"]):
            out[io["name"]] = list(io["shape"])
    return out


def _batch_size(sidecar: Mapping[str, Any], shapes: Mapping[str, list[int]]) -> int | None:
    inputs = sidecar.get("inputs") or []
    first = inputs[0]["name"] if inputs else next(iter(shapes), None)
    dims = shapes.get(first) if first is not None else None
    return int(dims[0]) if dims and len(dims) >= 2 else None


def _method(row: GPU, sidecar: Mapping[str, Any], target: str,
            options: EstimateOptions) -> str:
    version = sidecar.get("backend_version") or "?"
    built = (f"kernel list of a {sidecar.get('backend', 'tensorrt-rtx')} {version} build for "
             f"{target}")
    if target == "default":
        built += " (portable engine, no compute capability set)"
    elif row.sm == "SM75" and target != row.sm:
        built += (f" ({row.name} is SM75; TensorRT-RTX's SM75 kernels differ from TensorRT's on "
                  f"Turing, so the {target} kernel list stands in, at the {row.name}'s peaks)")
    elif target != row.sm:
        built += (f" ({row.name} is {row.sm}, which TensorRT-RTX cannot target; {target} is the "
                  "closest target with the same tensor precisions)")
    return (f"estimated: {built}; {options.describe()}; peaks from {row.citation} "
            f"({row.source}), efficiency curve: {row.efficiency_source}")


_NUMERIC = frozenset({"fp32", "fp16", "bf16", "int8", "fp8", "int4", "fp4"})


def _precision(kernel: Mapping[str, Any]) -> str:
    """The kernel's first floating-point or quantized input type, else output, else constant.

    An embedding gather reads INT64 indices first: it is typed by its table.
    """
    for group in ("inputs", "outputs", "constants"):
        for dtype in kernel.get(group) or []:
            if dtype in _NUMERIC:
                return str(dtype)
    return str(kernel.get("precision") or next(iter(kernel.get("outputs") or []), "none"))


def _gathered_tables(kernel: Mapping[str, Any], costs: Mapping[str, NodeCost]
                     ) -> list[tuple[tuple[int, ...], int]]:
    """``(table shape, elements gathered)`` of the constant-table gathers the kernel names."""
    return [cost.gathered for node in kernel.get("onnx_layers") or []
            if (cost := costs.get(node)) is not None and cost.gathered is not None]


def _kernel_bytes(kernel: Mapping[str, Any],
                  gathered: Sequence[tuple[tuple[int, ...], int]] = ()) -> float:
    """Bytes the kernel moves: its inputs, constants and outputs at their data types.

    A constant that is the table of a gather the kernel runs (an embedding lookup) counts only
    the elements gathered from it: the kernel reads those rows, not the whole table.
    """
    tables = list(gathered)
    total = 0.0
    for types, dims in (("inputs", "input_dims"), ("constants", "constant_dims"),
                        ("outputs", "output_dims")):
        for dtype, shape in zip(kernel.get(types) or [], kernel.get(dims) or [], strict=False):
            if shape is None:
                continue
            size = math.prod(shape)
            if types == "constants":
                match = next((t for t in tables if math.prod(t[0]) == size), None)
                if match is not None:
                    tables.remove(match)
                    size = min(size, match[1])
            total += size * _DTYPE_BYTES.get(dtype, 4)
    return total


def _is_matrix_kernel(kernel: Mapping[str, Any]) -> bool:
    return (kernel.get("type") in _MATRIX_KERNEL_TYPES
            or bool(_MATRIX_KERNEL_NAME.search(str(kernel["name"]))))


def _weight_flops(kernel: Mapping[str, Any]) -> float:
    """FLOPs of a GEMM/convolution kernel from its own tensor dimensions, or 0.

    For kernels whose metadata names no convolution/matrix node although they run one
    (TensorRT-RTX 1.7.1 logs ``__myl_FcAdd`` kernels with empty metadata, e.g. the last 1x1 conv
    of a ResNet bottleneck merged with its projection shortcut). With weight ``W`` (the largest
    constant) and output ``Y``: ``2 * prod(Y) * prod(W) / n_out``, ``n_out`` being the largest
    dimension of ``W`` that ``Y`` also has (the output features): Conv ``W = (K, C, R, S)``,
    ``Y = (N, K, P, Q)`` gives ``2 * prod(Y) * C*R*S``.
    """
    if not _is_matrix_kernel(kernel):
        return 0.0
    weights = [d for d in kernel.get("constant_dims") or [] if d and len(d) >= 2]
    outputs = kernel.get("output_dims") or []
    if not weights or not outputs or not outputs[0]:
        return 0.0
    w: list[int] = max(weights, key=math.prod)
    y: list[int] = outputs[0]
    shared = [d for d in w if d > 1 and d in y]
    if not shared:
        return 0.0
    return 2.0 * math.prod(y) * math.prod(w) / max(shared)


def _matrix_score(kernel: Mapping[str, Any], node: str) -> int:
    """How surely ``kernel`` is the one that runs matrix node ``node`` (higher is surer)."""
    name = str(kernel["name"])
    if node in name.rsplit("_myl", 1)[0].split("+"):
        return 3  # named after the node (``/conv1/Conv_myl0_1``, ``v_proj+k_proj+q_proj_myl0_2``)
    if _is_matrix_kernel(kernel):
        return 2
    return 1


def _assign(kernels: Sequence[Mapping[str, Any]], costs: Mapping[str, NodeCost]
            ) -> tuple[list[float], list[float], list[str | None]]:
    """Matrix and vector FLOPs per kernel, each ONNX node counted in exactly one kernel.

    Returns:
        Matrix FLOPs, vector FLOPs and the (largest) matrix node of each kernel.
    """
    matrix = [0.0] * len(kernels)
    vector = [0.0] * len(kernels)
    largest: list[tuple[float, str | None]] = [(0.0, None)] * len(kernels)
    naming: dict[str, list[int]] = {}
    for i, k in enumerate(kernels):
        for node in k.get("onnx_layers") or []:
            naming.setdefault(node, []).append(i)
    for node, where in naming.items():
        cost = costs.get(node)
        if cost is None:
            continue  # a name the parser made up (split layers); nothing known about it
        if cost.op_type in MATRIX_OPS:  # FLOPs may be 0 where shape inference gave up
            best = max(where, key=lambda i: (_matrix_score(kernels[i], node), -i))
            matrix[best] += cost.matrix_flops
            if largest[best][1] is None or cost.matrix_flops > largest[best][0]:
                largest[best] = (cost.matrix_flops, node)
        if cost.vector_flops > 0:
            vector[where[0]] += cost.vector_flops
    return matrix, vector, [node for _, node in largest]
