"""Autotune with and without rescue transforms: FP16 layers needed, accuracy, CPU latency.

Issue 10's acceptance figure: "Autotune on the demo model and EfficientNet-Lite0: number of
FP16 layers needed to meet the same accuracy target with rescue versus without (fewer, or an
explanation of why not), with the CPU latency of both plans."

Run from the repository root::

    python -m benchmarks.rescue.autotune demo   [--drops 1.0 0.5] [--method entropy]
    python -m benchmarks.rescue.autotune effnet [--drops 3 2 1] [--model recipes/_data/...]

For each target drop and each rescue setting (none, bias correction, ...): autotune on the same
scales and evaluation set, then the final plan is written as a Q/DQ model (kept layers in the
base's float type) and timed with ONNX Runtime on the CPU (Q/DQ run as written, i.e. fake
quantization in float: this is *not* TensorRT's INT8 latency, which cannot be measured on this
machine; it is the number the sweep's latency column reports). Prints a markdown table and
writes it with the per-layer report (JSON) to ``--out``.

Data: demo = the shipped MNIST digits (256 calibration, 500 held-out, top-1 with labels);
effnet = the recipe's photos (66 calibration views, 448 held-out views,
``recipes.images``), top-1 agreement with FP32, percentile 99.99, the recipe's
``INT8_PLAN`` (Conv/Gemm INT8, rest FP16) as the base.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks._harness import REPO as ROOT
from quantkit.backends.onnxruntime import OrtRunner
from quantkit.capture import calibrate
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.sweep import Evaluator, autotune


def _batches(name: str, x: np.ndarray, size: int) -> list[dict[str, np.ndarray]]:
    return [{name: x[i: i + size]} for i in range(0, len(x), size)]


def demo_setup(args: argparse.Namespace) -> dict[str, Any]:
    from quantkit.demo import asset

    path = asset("demo_cnn.onnx")
    model = onnx.load(str(path))
    name = model.graph.input[0].name
    with np.load(asset("demo_data.npz")) as d:
        cal = d["calibration"].astype(np.float32)[:256, None] / 255.0
        ev = d["evaluation"].astype(np.float32)[:500, None] / 255.0
        labels = d["evaluation_labels"][:500]
    return {"path": path, "model": model, "cal": _batches(name, cal, 64),
            "eval": _batches(name, ev, 100), "labels": labels,
            "method": args.method or "entropy", "options": {}, "base": PrecisionConfig(),
            "latency_batch": {name: ev[:1]}}


def effnet_setup(args: argparse.Namespace) -> dict[str, Any]:
    from recipes import images
    from recipes.efficientnet_lite0 import INPUT_NAME, INT8_PLAN

    path = Path(args.model or ROOT / "recipes/_data/efficientnet_lite0/model.onnx")
    cal, ev = images.calibration_set(), images.evaluation_set()
    return {"path": path, "model": onnx.load(str(path)), "cal": _batches(INPUT_NAME, cal, 16),
            "eval": _batches(INPUT_NAME, ev, 32), "labels": None,
            "method": args.method or "percentile",
            "options": {} if args.method else {"percentile": 99.99},
            "base": PrecisionConfig.from_mapping(INT8_PLAN),
            "latency_batch": {INPUT_NAME: ev[:1]}}


def cpu_latency(model: onnx.ModelProto, feeds: dict[str, np.ndarray], iterations: int) -> float:
    with tempfile.TemporaryDirectory(prefix="qk-rescue-lat-") as tmp:
        path = Path(tmp) / "m.onnx"
        save_model(model, path)
        runner = OrtRunner(path)
        return float(runner.latency(feeds, warmup=5, iterations=iterations).p50_ms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", choices=["demo", "effnet"])
    ap.add_argument("--drops", type=float, nargs="+", default=None,
                    help="target drops in metric points (demo: 1.0 0.5; effnet: 3 2 1)")
    ap.add_argument("--rescue", nargs="+", default=["none", "bias_correction"],
                    help="rescue settings to compare ('none' or comma-joined transforms)")
    ap.add_argument("--method", default=None, help="calibration method")
    ap.add_argument("--model", default=None, help="effnet: the FP32 model")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--processes", type=int, default=None,
                    help="run the sensitivity probes in N processes (with --threads each)")
    ap.add_argument("--latency-iterations", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/_work/rescue-autotune"))
    args = ap.parse_args(argv)
    setup = demo_setup(args) if args.which == "demo" else effnet_setup(args)
    drops = args.drops or ([1.0, 0.5] if args.which == "demo" else [3.0, 2.0, 1.0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    scales = calibrate(setup["path"], setup["cal"], method=setup["method"],
                       method_options=setup["options"]).scales
    # the evaluator's own runs (all-INT8 check, search) use ONNX Runtime's default threads;
    # --threads is per sensitivity probe (with --processes)
    evaluator = Evaluator(str(setup["path"]), setup["eval"], setup["labels"], None)
    fp32_ms = cpu_latency(setup["model"], setup["latency_batch"], args.latency_iterations)
    from quantkit.sweep.executor import LocalExecutor

    executor = LocalExecutor(processes=args.processes) if args.processes else None
    rows: list[dict[str, Any]] = []
    sensitivity: dict[str, Any] = {}  # per rescue setting: the ranking does not depend on the drop
    for drop in drops:
        for rescue in args.rescue:
            names = () if rescue == "none" else tuple(rescue.split(","))
            start = time.perf_counter()
            res = autotune(setup["model"], scales, evaluator, drop, base=setup["base"],
                           rescue=names, rescue_data=setup["cal"] if names else None,
                           rescue_options={"method": setup["method"],
                                           "method_options": setup["options"]},
                           sensitivity=sensitivity.get(rescue), threads=args.threads,
                           executor=executor)
            if res.sensitivity:
                sensitivity[rescue] = res.sensitivity
            spent = time.perf_counter() - start
            final_model = res.model if res.model is not None else setup["model"]
            # for the latency only: the scale values do not change the graph that is timed
            qdq = quantize_model(final_model, scales, res.config).model
            ms = cpu_latency(qdq, setup["latency_batch"], args.latency_iterations)
            row = {"target_drop": drop, "rescue": rescue, "fp32": res.fp32.accuracy,
                   "all_int8": res.all_int8.accuracy, "kept": len(res.kept),
                   "kept_layers": res.kept, "final": res.final.accuracy,
                   "reached": res.reached, "evaluations": res.evaluations,
                   "time_s": spent, "latency_ms_p50": ms,
                   "layers": [r.to_dict() for r in res.layers]}
            rows.append(row)
            print(f"drop {drop} rescue {rescue}: kept {len(res.kept)}, final "
                  f"{res.final.accuracy:.2f}, {res.evaluations} evaluations, {spent:.0f} s, "
                  f"{ms:.2f} ms", flush=True)
    metric = "top-1 %" if setup["labels"] is not None else "top-1 agreement %"
    lines = [f"{args.which}: calibration {setup['method']} {setup['options'] or ''}; metric "
             f"{metric}; FP32 {rows[0]['fp32']:.2f}; FP32 model CPU latency (batch 1, p50) "
             f"{fp32_ms:.2f} ms", "",
             "| target drop | rescue | all-INT8 | layers kept (FP16/FP32) | final | reached | "
             "evaluations | autotune time s | CPU latency p50 ms (Q/DQ, batch 1) |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target_drop']} | {r['rescue']} | {r['all_int8']:.2f} | {r['kept']} | "
              f"{r['final']:.2f} | {r['reached']} | {r['evaluations']} | {r['time_s']:.0f} | "
              f"{r['latency_ms_p50']:.2f} |" for r in rows]
    lines += ["", f"Command: `python -m benchmarks.rescue.autotune {' '.join(sys.argv[1:])}`; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}; total {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines)
    print("\n" + text)
    (out / f"{args.which}.md").write_text(text + "\n")
    (out / f"{args.which}.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
