"""Measure a GPU's achieved GEMM throughput and copy bandwidth, for the latency estimator.

README
======

quantkit's latency model (:mod:`quantkit.latency.model`) turns datasheet peaks into kernel
times with an efficiency curve ``eff(x) = cap * x / (x + ramp)``, ``x`` being the kernel's ideal
time at peak. This script measures that curve on a real GPU:

* GEMMs ``C[M,N] = A[M,K] @ B[K,N]`` over a grid of shapes from tiny to large, per precision:
  FP16 and BF16 (``torch.matmul``), FP8 E4M3 (``torch._scaled_mm``, SM89+), INT8
  (``torch._int_mm``); FP32 with TF32 allowed;
* device-to-device copy bandwidth (``Tensor.copy_``) over buffer sizes (bytes moved = read +
  write).

Each case: warm-up runs, then ``--repeats`` timed runs with CUDA events; the median is kept.
Achieved TFLOPS = ``2*M*N*K / t``. With ``--gpu NAME`` (a row of quantkit's GPU table) every
case also gets its efficiency (achieved / datasheet dense peak) and the script fits ``cap`` and
``ramp`` per precision (least squares of ``1/eff`` on ``1/x``, which is linear in that model),
and the copy efficiency cap, and writes them as ``estimate_options`` -- the fields of
:class:`quantkit.latency.EstimateOptions` -- plus the measured curve.

Run on a machine with a CUDA GPU and torch built with CUDA::

    python benchmarks/latency/gpu_gemm.py --gpu H100-SXM -o h100_gemm.json
    python benchmarks/latency/gpu_gemm.py --gpu L4 --quick -o l4_gemm.json   # fewer shapes

Output JSON: ``device`` (torch's name, CUDA / driver versions), ``gpu`` (the table row used),
``raw`` (one record per case: kind, dtype, shape, bytes, median/min ms, TFLOPS or GB/s,
efficiency), ``summary`` (per precision: fitted cap and ramp, best achieved rate, points) and
``estimate_options``. Without CUDA the script says so and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: GEMM dimensions of the default grid (M, N and K each take these values, filtered below)
DEFAULT_DIMS = (64, 256, 1024, 4096, 8192)
QUICK_DIMS = (128, 1024, 4096)
#: copy buffer sizes in MiB
COPY_MIB = (1, 4, 16, 64, 256, 1024)
#: largest operand we allocate, elements (keeps 8192^3 FP32 within a 24 GB card)
MAX_ELEMENTS = 8192 * 8192
PRECISIONS = ("fp16", "bf16", "fp8", "int8", "fp32")


def shape_grid(dims: Sequence[int], *, multiple: int = 16,
               max_elements: int = MAX_ELEMENTS) -> list[tuple[int, int, int]]:
    """Every (M, N, K) from ``dims`` (rounded up to ``multiple``), small to large.

    ``multiple`` 16 satisfies both ``torch._scaled_mm`` (dims multiple of 16) and
    ``torch._int_mm`` (K, N multiples of 8; M > 16 is checked by the caller). Shapes with an
    operand over ``max_elements`` are dropped. Sorted by FLOPs, then lexicographically.
    """
    if multiple < 1:
        raise ValueError("multiple must be >= 1")
    sized = sorted({int(math.ceil(d / multiple) * multiple) for d in dims if d > 0})
    grid = {(m, n, k) for m in sized for n in sized for k in sized
            if max(m * k, k * n, m * n) <= max_elements}
    return sorted(grid, key=lambda s: (gemm_flops(*s), s))


def gemm_flops(m: int, n: int, k: int) -> int:
    """Multiply-adds counted as two FLOPs: ``2*M*N*K``."""
    return 2 * m * n * k


def fit_efficiency(points: Iterable[tuple[float, float]]) -> dict[str, float]:
    """Fit ``eff = cap * x / (x + ramp)`` to ``(ideal_seconds, efficiency)`` pairs.

    ``1/eff = 1/cap + (ramp/cap) * (1/x)`` is linear in ``1/x``: ordinary least squares gives
    ``a = 1/cap`` and ``b = ramp/cap``. Points with non-positive values are ignored.

    Returns:
        ``{"cap", "ramp_s", "points"}``; with fewer than two usable points, or a fit with a
        non-positive intercept, ``cap`` is the best efficiency seen and ``ramp_s`` 0.
    """
    pts = [(x, e) for x, e in points if x > 0 and e > 0]
    if not pts:
        raise ValueError("no positive (ideal_seconds, efficiency) points to fit")
    if len(pts) >= 2:
        xs = [1.0 / x for x, _ in pts]
        ys = [1.0 / e for _, e in pts]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx > 0:
            b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
            a = my - b * mx
            if a > 0 and b >= 0:
                return {"cap": 1.0 / a, "ramp_s": b / a, "points": float(len(pts))}
    return {"cap": max(e for _, e in pts), "ramp_s": 0.0, "points": float(len(pts))}


def summarize(raw: Sequence[dict[str, Any]], peaks: dict[str, float | None],
              bandwidth_gbs: float | None) -> dict[str, Any]:
    """Efficiency of each record against the datasheet, fitted curves, estimator options.

    Args:
        raw: GEMM records (``kind`` "gemm", ``dtype``, ``flops``, ``median_ms``) and copy
            records (``kind`` "copy", ``bytes``, ``median_ms``); efficiency is added in place.
        peaks: datasheet dense peak TFLOPS per dtype (None: the GPU lacks it).
        bandwidth_gbs: datasheet DRAM bandwidth.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    best: dict[str, float] = {}
    for rec in raw:
        if rec["kind"] not in ("gemm", "copy"):  # skipped cases carry no time
            continue
        seconds = rec["median_ms"] / 1e3
        if rec["kind"] == "gemm":
            rec["tflops"] = rec["flops"] / seconds / 1e12
            peak = peaks.get(rec["dtype"])
            best[rec["dtype"]] = max(best.get(rec["dtype"], 0.0), rec["tflops"])
            if peak:
                ideal = rec["flops"] / (peak * 1e12)
                rec["efficiency"] = rec["tflops"] / peak
                curves.setdefault(rec["dtype"], []).append((ideal, rec["efficiency"]))
        elif rec["kind"] == "copy":
            rec["gbs"] = rec["bytes"] / seconds / 1e9
            best["copy"] = max(best.get("copy", 0.0), rec["gbs"])
            if bandwidth_gbs:
                rec["efficiency"] = rec["gbs"] / bandwidth_gbs
                curves.setdefault("copy", []).append(
                    (rec["bytes"] / (bandwidth_gbs * 1e9), rec["efficiency"]))
    summary: dict[str, Any] = {}
    for key, pts in curves.items():
        summary[key] = {**fit_efficiency(pts), "best": best[key],
                        "unit": "GB/s" if key == "copy" else "TFLOPS"}
    for key, value in best.items():
        summary.setdefault(key, {"best": value, "unit": "GB/s" if key == "copy" else "TFLOPS"})
    options: dict[str, float] = {}
    if "fp16" in curves:  # the estimator has one compute cap/ramp: take the FP16 curve
        options["compute_efficiency"] = min(1.0, summary["fp16"]["cap"])
        options["ramp_s"] = summary["fp16"]["ramp_s"]
    if "copy" in curves:
        options["memory_efficiency"] = min(1.0, summary["copy"]["cap"])
    return {"summary": summary, "estimate_options": options}


# --------------------------------------------------------------------------- GPU part


def _time_ms(torch: Any, fn: Callable[[], Any], repeats: int, warmup: int,
             min_region_ms: float = 0.5) -> tuple[float, float]:
    """Median and minimum milliseconds per call of ``fn`` over ``repeats`` CUDA-event-timed runs.

    Each timed region runs ``fn`` back to back enough times to last about ``min_region_ms``
    (an engine's kernels are enqueued back to back too, so a lone launch's host overhead and the
    event's own resolution would otherwise dominate the smallest GEMMs); the region's time is
    divided by that count.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()

    def region(calls: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / calls

    once = max(region(1), 1e-4)
    calls = max(1, min(1000, math.ceil(min_region_ms / once)))
    times = [region(calls) for _ in range(repeats)]
    return statistics.median(times), min(times)


def _gemm_case(torch: Any, dtype: str, m: int, n: int, k: int) -> Callable[[], Any] | None:
    """A closure running one GEMM, or None when this dtype/shape is not supported."""
    dev = "cuda"
    if dtype in ("fp16", "bf16", "fp32"):
        tdt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        a = torch.randn(m, k, device=dev, dtype=tdt)
        b = torch.randn(k, n, device=dev, dtype=tdt)
        return lambda: torch.matmul(a, b)
    if dtype == "fp8":
        if torch.cuda.get_device_capability() < (8, 9) or not hasattr(torch, "_scaled_mm"):
            return None
        a = torch.randn(m, k, device=dev).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=dev).to(torch.float8_e4m3fn).t()  # column-major B
        one = torch.ones((), device=dev, dtype=torch.float32)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    if dtype == "int8":
        if m <= 16 or not hasattr(torch, "_int_mm"):
            return None
        a = torch.randint(-128, 127, (m, k), device=dev, dtype=torch.int8)
        b = torch.randint(-128, 127, (k, n), device=dev, dtype=torch.int8)
        return lambda: torch._int_mm(a, b)
    raise ValueError(f"unknown dtype {dtype}")


def measure(dims: Sequence[int], precisions: Sequence[str], repeats: int,
            warmup: int) -> list[dict[str, Any]]:
    """Time every GEMM of the grid in every precision, then the copies (needs CUDA)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    raw: list[dict[str, Any]] = []
    for dtype in precisions:
        for m, n, k in shape_grid(dims):
            fn = _gemm_case(torch, dtype, m, n, k)
            if fn is None:
                continue
            try:
                fn()  # shapes/dtypes a kernel rejects (e.g. some _int_mm layouts) are skipped
            except RuntimeError as err:
                raw.append({"kind": "skipped", "dtype": dtype, "m": m, "n": n, "k": k,
                            "reason": str(err).splitlines()[0]})
                continue
            med, low = _time_ms(torch, fn, repeats, warmup)
            raw.append({"kind": "gemm", "dtype": dtype, "m": m, "n": n, "k": k,
                        "flops": gemm_flops(m, n, k), "median_ms": med, "min_ms": low})
            del fn
            torch.cuda.empty_cache()
    for mib in COPY_MIB:
        src = torch.empty(mib * 2**20, device="cuda", dtype=torch.uint8)
        dst = torch.empty_like(src)
        def copy(s: Any = src, d: Any = dst) -> Any:
            return d.copy_(s)

        med, low = _time_ms(torch, copy, repeats, warmup)
        raw.append({"kind": "copy", "dtype": "uint8", "bytes": 2 * mib * 2**20,
                    "median_ms": med, "min_ms": low})
        del src, dst
        torch.cuda.empty_cache()
    return raw


def cuda_problem() -> str | None:
    """Why this machine cannot run the measurement, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install torch with CUDA support)."
    if not torch.cuda.is_available():
        build = torch.version.cuda or "a CPU-only build"
        return (f"no CUDA GPU is available to torch {torch.__version__} ({build}); run this on "
                "a machine with an NVIDIA GPU, its driver and a CUDA build of torch.")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", help="row of quantkit's GPU table to compare against "
                                      "(e.g. H100-SXM); without it no efficiency is computed")
    parser.add_argument("-o", "--output", type=Path, default=Path("gpu_gemm.json"))
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        print(f"gpu_gemm: --precisions: unknown {', '.join(bad)}; choose from "
              f"{', '.join(PRECISIONS)}.", file=sys.stderr)
        return 2
    row = None
    if args.gpu:
        from quantkit.errors import InputError
        from quantkit.latency import get_gpu

        try:
            row = get_gpu(args.gpu)
        except InputError as err:
            print(f"gpu_gemm: --gpu: {err}", file=sys.stderr)
            return 2
    problem = cuda_problem()
    if problem:
        print(f"gpu_gemm: {problem} Nothing was measured or written.", file=sys.stderr)
        return 2
    import torch

    raw = measure(QUICK_DIMS if args.quick else DEFAULT_DIMS, precisions, args.repeats,
                  args.warmup)
    peaks = {p: (row.tensor_peak_tflops(p) if row else None) for p in precisions}
    doc = {"device": {"name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                      "torch": torch.__version__,
                      "capability": ".".join(map(str, torch.cuda.get_device_capability()))},
           "gpu": row.to_json() if row else None, "repeats": args.repeats,
           "warmup": args.warmup, "raw": raw,
           **summarize(raw, peaks, row.bandwidth_gbs if row else None)}
    from quantkit._io import write_text_atomic

    write_text_atomic(args.output, json.dumps(doc, indent=2))
    print(json.dumps({"summary": doc["summary"], "estimate_options": doc["estimate_options"]},
                     indent=2))
    print(f"wrote {os.fspath(args.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
