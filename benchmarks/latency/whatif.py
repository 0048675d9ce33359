"""What-if for the latency validation: INT8 conv/GEMM epilogues fused as TensorRT 10 does.

Used by ``validate.py`` next to quantkit's own estimate (which is reported unchanged); only
public quantkit APIs are used: a TensorRT-RTX build's sidecar, the ONNX node op types and
:func:`quantkit.latency.estimate_from_sidecar`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: kernel types that run an INT8 matrix product whose epilogue may be a separate kernel
_MATRIX_TYPES = frozenset({"correlation", "convolution", "gemm", "matrix_multiply"})
_MATRIX_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def fuse_int8_epilogues(sidecar: dict[str, Any],
                        op_types: dict[str, str]) -> tuple[dict[str, Any], int]:
    """What-if: fold each INT8 conv/GEMM's separate element-wise epilogue into it.

    TensorRT-RTX 1.7's kernel list (built here without a GPU) runs an INT8 convolution or GEMM
    as a kernel that writes FP32 followed by a generated element-wise kernel (scale, bias,
    activation, residual add, re-quantize). TensorRT 10, which made the published numbers,
    fuses that epilogue into the INT8 kernel, so the wide intermediate never reaches DRAM. This
    merges every such pair: the matrix kernel takes the epilogue's outputs, extra inputs and
    constants, and the epilogue kernel is dropped. A pair is an INT8-input matrix kernel and
    the first later ``kgen`` kernel that names the same ONNX node, names no other matrix node
    (``op_types``: ONNX node name -> op type) and reads and writes a tensor of the matrix
    kernel's output shape. The epilogue's constants (per-channel scale and bias vectors, a few
    KB) are left out: the estimator reads a matrix kernel's FLOPs from its constants' shapes.
    Nothing is fitted; it only changes which bytes are counted and drops the epilogue's launch.

    Returns:
        ``(new sidecar, number of epilogues folded)``; the input is not modified.
    """
    kernels = [dict(k) for k in sidecar.get("engine_layers") or []]
    dropped: set[int] = set()
    for i, k in enumerate(kernels):
        if (k.get("type") not in _MATRIX_TYPES or k.get("precision") != "int8"
                or not k.get("onnx_layers") or not k.get("output_dims")):
            continue
        node, out_dims = k["onnx_layers"][0], k["output_dims"][0]
        for j in range(i + 1, len(kernels)):
            e = kernels[j]
            if j in dropped or e.get("type") != "kgen" or node not in e.get("onnx_layers", []):
                continue
            if any(op_types.get(n) in _MATRIX_OPS for n in e["onnx_layers"] if n != node):
                break  # the generated kernel also runs another conv/GEMM: not an epilogue
            dims = e.get("input_dims") or []
            outs = e.get("output_dims") or []
            if out_dims not in dims or out_dims not in outs:
                continue  # not a plain epilogue (it reshapes): leave the pair alone
            pos, keep = dims.index(out_dims), outs.index(out_dims)
            others = [n for n in range(len(dims)) if n != pos]
            k["inputs"] = k["inputs"] + [e["inputs"][n] for n in others]
            k["input_dims"] = k["input_dims"] + [dims[n] for n in others]
            # the conv's own output (its shape, the epilogue's dtype) stays first: the
            # estimator reads a kernel's FLOPs from its first output's shape
            order = [keep] + [n for n in range(len(outs)) if n != keep]
            k["outputs"] = [e["outputs"][n] for n in order]
            k["output_dims"] = [outs[n] for n in order]
            k["onnx_layers"] = k["onnx_layers"] + [n for n in e["onnx_layers"]
                                                   if n not in k["onnx_layers"]]
            dropped.add(j)
            break
    fused = [k for n, k in enumerate(kernels) if n not in dropped]
    return {**sidecar, "engine_layers": fused}, len(dropped)


def fused_int8_estimate(path: Path, gpu: str, shapes: dict[str, list[int]],
                        cache: Path) -> tuple[float, int]:
    """Latency (ms) of the INT8 engine with its epilogues folded (:func:`fuse_int8_epilogues`)."""
    from quantkit.backends import BuildOptions, get_backend
    from quantkit.latency import estimate_from_sidecar, get_gpu
    from quantkit.latency.flops import node_costs

    fixed = {k: tuple(v) for k, v in shapes.items()}
    op_types = {name: cost.op_type for name, cost in node_costs(path, fixed).items()}
    backend = get_backend("tensorrt-rtx")
    errors = []
    for target in get_gpu(gpu).build_targets:
        try:
            result = backend.build(path, cache / "whatif.engine", BuildOptions(
                shapes=fixed, compute_capabilities=(target,), engine_log=True))
        except Exception as err:  # the next target, as estimate_model does
            errors.append(str(err))
            continue
        sidecar, n = fuse_int8_epilogues(result.sidecar, op_types)
        return estimate_from_sidecar(sidecar, path, gpu, fixed).latency_ms, n
    raise RuntimeError("; ".join(errors))
