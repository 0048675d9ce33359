#!/usr/bin/env python
"""Issue 10 item 6: quantkit with and without its rescue transforms vs NNCF, AIMET-ONNX and PPQ.

One run, the same FP32 ONNX models, the same calibration data and the same evaluation path
for every tool:

* EfficientNet-Lite0 (``recipes/_data/efficientnet_lite0``: 66 calibration views, evaluated on
  the 448 views of ``images.evaluation_set()``): top-1 agreement with FP32;
* all-MiniLM-L6-v2 (``recipes/_data/minilm``: 128 / 256 sentences): mean / min cosine of the
  sentence embeddings to FP32.

Tools and configurations (details in ``_rescue_workers.py``):

* quantkit (dev venv): no rescue, bias correction, CLE + bias correction (EfficientNet,
  percentile 99.99) / SmoothQuant alpha 0.5 and 0.8 (MiniLM, minmax); each with every
  Conv/Gemm/MatMul INT8 and the rest FP32 (as the peers write it) and with the recipe's
  ``INT8_PLAN`` (rest FP16);
* NNCF ``nncf.quantize`` (ONNX backend): without and with fast bias correction, MiniLM with
  SmoothQuant (``model_type=TRANSFORMER``);
* AIMET-ONNX: ``QuantizationSimModel`` without and with ``equalize_model`` (CLE), exported as
  ONNX Q/DQ;
* PPQ ``quantize_onnx_model(TRT_INT8)``: without and with equalization + bias correction.

Each peer runs in its own venv (``benchmarks/_work/venv-<peer>``, created on first use by
``_rescue_env.ensure_venv``; a peer that does not install or import is recorded with pip's or
Python's reason and skipped). Each quantization runs in a child process: wall time, CPU time
and peak RSS (the child's ``VmHWM``) are recorded. Every output is evaluated with ONNX Runtime
CPU with Q/DQ run as written (``recipes.runtime.ort_session``), inspected (activation / weight
quantizer types, ops reading a DequantizeLinear), re-evaluated as TensorRT could take it when
it has uint8 activation quantizers (``_rescue_eval.int8_view``) and parsed by TensorRT-RTX
(CPU parser, INT8 layers counted).

    .venv/bin/python -m benchmarks.rescue.peers                      # everything
    .venv/bin/python -m benchmarks.rescue.peers --only effnet --peers nncf

Outputs in ``-o`` (default ``benchmarks/_work/rescue-peers``, git-ignored): models, logs,
``results.json``, ``RESULTS-section.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as harness
from benchmarks._harness import REPO, log
from benchmarks.rescue.workers import worker_main

MODULE = "benchmarks.rescue.peers"
BENCH = REPO / "benchmarks"
VENVS = BENCH / "_work"

EFF_INT8 = {"default": "int8", "default_float": "fp32"}  # every Conv/Gemm INT8, rest FP32
MINILM_INT8_FP32 = {"default": "int8", "default_float": "fp32"}  # every MatMul INT8, rest FP32


def run_worker(work: Path, name: str, params: dict, tag: str, *, python: str = sys.executable,
               timeout: float = 1800, env_extra: dict | None = None) -> dict:
    """One worker in a child process: its result + process wall/CPU time, load averages.

    The child runs in ``work`` with the repository root alone on ``PYTHONPATH`` (for
    ``benchmarks``; the peer venvs have no quantkit and never import it).
    """
    logs = work / "logs"
    return harness.run_worker(MODULE, name, params, result=logs / f"{tag}.result.json",
                              log_file=logs / f"{tag}.log", python=python, timeout=timeout,
                              cwd=work, env_extra=env_extra, tail=4000)


# --------------------------------------------------------------------------- the run matrix
def jobs_for(key: str, peers: list[str], cfg: dict) -> list[dict]:
    """``[{tool, config, rescue, worker, params}]`` for one model, quantkit first."""
    from recipes import efficientnet_lite0 as eff
    from recipes import minilm as ml

    jobs: list[dict] = []
    if "quantkit" in peers:
        if key == "effnet":
            plans = [("rest FP32", EFF_INT8), ("recipe INT8_PLAN, rest FP16", eff.INT8_PLAN)]
            variants = [("no rescue", "baseline", False), ("bias correction", "bc", True),
                        ("CLE + bias correction", "cle+bc", True)]
            extra = {"method": "percentile", "method_options": {"percentile": 99.99}}
        else:
            plans = [("rest FP32", MINILM_INT8_FP32),
                     ("recipe INT8_PLAN, rest FP16, LayerNorm FP32", ml.INT8_PLAN)]
            variants = [("no rescue", "baseline", False),
                        ("SmoothQuant alpha 0.5", "sq0.5", True),
                        ("SmoothQuant alpha 0.8", "sq0.8", True)]
            extra = {"method": "minmax"}
        for plan_label, plan in plans:
            for label, variant, rescue in variants:
                p = {"kind": key, "variant": variant, "plan": plan, **extra}
                if variant.startswith("sq"):
                    p["alpha"] = float(variant[2:])
                jobs.append({"tool": "quantkit", "config": f"{label} ({plan_label})",
                             "rescue": rescue, "worker": "quantkit", "params": p,
                             "group": plan_label})
    if "nncf" in peers:
        jobs.append({"tool": "NNCF", "config": "no rescue (bias correction off"
                     + (", SmoothQuant off)" if key == "minilm" else ")"), "rescue": False,
                     "worker": "nncf", "params": {"kind": key, "rescue": False}})
        if key == "effnet":
            jobs.append({"tool": "NNCF", "config": "fast bias correction", "rescue": True,
                         "worker": "nncf", "params": {"kind": key, "rescue": True}})
        else:
            jobs.append({"tool": "NNCF", "config": "fast bias correction only (SmoothQuant off)",
                         "rescue": True, "worker": "nncf",
                         "params": {"kind": key, "rescue": True, "sq_alpha": -1}})
            for alpha in cfg["nncf_sq_alphas"]:
                jobs.append({"tool": "NNCF", "config": f"SmoothQuant alpha {alpha} + fast bias "
                             "correction", "rescue": True, "worker": "nncf",
                             "params": {"kind": key, "rescue": True, "sq_alpha": alpha}})
    if "aimet" in peers:
        for rescue in (False, True):
            jobs.append({"tool": "AIMET-ONNX", "config": "CLE (equalize_model)" if rescue
                         else "no rescue", "rescue": rescue, "worker": "aimet",
                         "params": {"kind": key, "rescue": rescue, "config": cfg["aimet_cfg"]}})
    if "ppq" in peers:
        for rescue in (False, True):
            p = {"kind": key, "rescue": rescue}
            if key == "effnet" and not rescue:  # is PPQ's level its own or its export's?
                p["check_inputs"] = cfg["check_inputs"]
            jobs.append({"tool": "PPQ", "config": "equalization + bias correction" if rescue
                         else "no rescue", "rescue": rescue, "worker": "ppq", "params": p})
    return jobs


#: AIMET quantsim config: AIMET's default_config_per_channel.json with symmetric activations
#: (TensorRT: INT8, zero point 0, [-128, 127]); placement as AIMET's. Not "strict_symmetric":
#: AIMET represents that grid as [0, 254] with offset 127, which the signed export writes as
#: zero point 1 (TensorRT-RTX rejects non-zero zero points).
AIMET_CONFIG = {
    "defaults": {
        "ops": {"is_output_quantized": "True", "is_symmetric": "True"},
        "params": {"is_quantized": "True", "is_symmetric": "True"},
        "strict_symmetric": "False",
        "unsigned_symmetric": "False",
        "per_channel_quantization": "False",
    },
    "params": {"bias": {"is_quantized": "False"}},
    "op_type": {t: {"per_channel_quantization": "True"}
                for t in ("Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu")}
    | {"Cast": {"is_output_quantized": "False"}},
    "supergroup_pass_list": ["MatmulAdd"],
    "supergroups": [{"op_list": ["Conv", "Relu"]}, {"op_list": ["Conv", "Clip"]},
                    {"op_list": ["ConvTranspose", "Relu"]}, {"op_list": ["Add", "Relu"]},
                    {"op_list": ["Gemm", "Relu"]}],
    "model_input": {"is_input_quantized": "True"},
    "model_output": {},
}


def _slug(*parts: str) -> str:
    s = "-".join(parts).lower()
    return "".join(c if c.isalnum() or c in "-." else "_" for c in s).strip("_")[:120]


def bench_model(m: Any, args: argparse.Namespace, R: dict, installs: dict, work: Path) -> None:
    from benchmarks.rescue import evaluation as ev

    out_dir = work / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    ev.reference(m)
    log(f"{m.key}: FP32 reference in {time.perf_counter() - t:.0f} s")
    M = R["models"][m.key] = {"title": m.title, "info": m.info, "rows": []}
    cfg = {"nncf_sq_alphas": args.nncf_sq_alphas,
           "aimet_cfg": str(work / "aimet_quantsim_config.json"),
           "check_inputs": str(ev.EFF_DIR / "evaluation.npy")}
    previous = {(r["tool"], r["config"]): r for r in args.previous.get(m.key, {}).get("rows", [])
                if (r.get("quantize") or {}).get("ok") and r.get("metrics")}
    for job in jobs_for(m.key, args.peers, cfg):
        tool, label = job["tool"], job["config"]
        tag = _slug(m.key, tool, label)
        if (tool, label) in previous:  # --resume: keep the finished row of the earlier run
            M["rows"].append(dict(previous[(tool, label)], resumed=True))
            log(f"{tag}: kept from the earlier run (--resume)")
            continue
        row: dict[str, Any] = {"tool": tool, "config": label, "rescue": job["rescue"],
                               "group": job.get("group")}
        M["rows"].append(row)
        peer = job["worker"] if job["worker"] != "quantkit" else None
        if peer and not installs.get(peer, {}).get("ok"):
            row["quantize"] = {"ok": False, "skipped": True,
                               "error": f"{peer} not installed: see installs"}
            continue
        output = out_dir / f"{tag}.onnx"
        output.unlink(missing_ok=True)
        params = dict(job["params"], model=str(m.fp32), cal=str(m.cal), input=m.inputs[0],
                      output=str(output))
        python = installs[peer]["python"] if peer else sys.executable
        q = run_worker(work, job["worker"], params, tag, python=python, timeout=args.timeout,
                       env_extra={"NNCF_CI": "1"} if peer == "nncf" else None)
        row["quantize"] = q
        row["output"] = str(output)
        if not q["ok"] or not output.exists():
            q["ok"] = False
            log(f"{tag}: FAILED rc={q['returncode']}: {q.get('error')} (see {q['log']})")
            _save(work, R)
            continue
        if peer == "nncf":  # what NNCF's progress bars say it applied, and to how many
            text = Path(q["log"]).read_text(errors="replace").replace("\r", "\n")
            q["nncf_applied"] = {a.strip(): int(n) for a, n in re.findall(
                r"Applying ([A-Za-z ]+?)\s*[^\sA-Za-z]+\s+100%\s+(\d+)/\d+", text)}
            row["nncf_applied"] = q["nncf_applied"]
        log(f"{tag}: quantized in {q['time_s']:.1f} s (process {q['process_wall_s']:.1f} s, "
            f"CPU {q['cpu_s']:.0f} s, peak RSS {q['peak_rss_mb']:.0f} MB)")
        for what, fn in (("settings", lambda o=output: ev.qdq_settings(o)),
                         ("metrics", lambda o=output: ev.evaluate(m, o))):
            t = time.perf_counter()
            try:
                row[what] = fn()
            except Exception as err:  # noqa: BLE001 - a model ORT cannot run is a result too
                row[what] = None
                row[f"{what}_error"] = repr(err)[:1500]
            row[f"{what}_s"] = time.perf_counter() - t
        if q.get("executor_outputs"):
            try:
                row["executor_check"] = ev.executor_check(m, q["executor_outputs"], output)
            except Exception as err:  # noqa: BLE001
                row["executor_check_error"] = repr(err)[:500]
        fp32_copy = Path(str(output).replace(".onnx", ".fp32.onnx"))
        if fp32_copy.exists():  # AIMET's equalized FP32 model: what CLE alone does
            try:
                row["transformed_fp32_metrics"] = ev.evaluate(m, fp32_copy)
            except Exception as err:  # noqa: BLE001
                row["transformed_fp32_error"] = repr(err)[:500]
        try:
            view = ev.int8_view(output, out_dir / f"{tag}.int8view.onnx")
            if view:
                row["int8_view"] = view
                row["int8_view_metrics"] = ev.evaluate(m, view["path"])
        except Exception as err:  # noqa: BLE001
            row["int8_view_error"] = repr(err)[:500]
        if not args.no_rtx:
            row["rtx"] = run_worker(work, "rtx_parse", {"model": str(output)}, tag + "-rtx",
                                    timeout=600)
            if row.get("int8_view"):
                row["rtx_int8_view"] = run_worker(work, "rtx_parse",
                                                  {"model": row["int8_view"]["path"]},
                                                  tag + "-int8view-rtx", timeout=600)
        log(f"{tag}: {row.get('metrics') or row.get('metrics_error')}; int8 view "
            f"{row.get('int8_view_metrics')}; RTX parse {row.get('rtx', {}).get('parse_ok')} "
            f"({row.get('rtx', {}).get('rtx_layers')})")
        _save(work, R)


def _save(work: Path, R: dict) -> None:
    (work / "results.json").write_text(json.dumps(R, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="effnet,minilm", help="subset of effnet,minilm")
    ap.add_argument("--peers", default="nncf,aimet,ppq",
                    help="subset of nncf,aimet,ppq (quantkit always runs unless "
                         "--no-quantkit)")
    ap.add_argument("--no-quantkit", action="store_true")
    ap.add_argument("-o", "--out", default=str(BENCH / "_work" / "rescue-peers"))
    ap.add_argument("--timeout", type=float, default=1800, help="per quantizer child, s")
    ap.add_argument("--install-timeout", type=float, default=1800)
    ap.add_argument("--nncf-sq-alphas", type=float, nargs="+", default=[0.95, 0.8],
                    help="NNCF SmoothQuant alphas for MiniLM (0.95: NNCF's default for MatMul)")
    ap.add_argument("--no-rtx", action="store_true", help="skip the TensorRT-RTX parse")
    ap.add_argument("--resume", action="store_true",
                    help="keep the finished rows of -o's results.json, run only the others")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker, args.params, args.result)
        return
    from benchmarks.rescue import evaluation as ev
    from benchmarks.rescue.env import ensure_venv, machine_info
    from benchmarks.rescue.report import write_report

    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    args.peers = ([] if args.no_quantkit else ["quantkit"]) + peers
    (work / "aimet_quantsim_config.json").write_text(json.dumps(AIMET_CONFIG, indent=1))
    args.previous = {}
    if args.resume and (work / "results.json").exists():
        old = json.loads((work / "results.json").read_text())
        args.previous = old.get("models", {})
        R_runs = old.get("runs", [])
    else:
        R_runs = []
    R: dict[str, Any] = {"machine": machine_info(), "command": " ".join(
        [Path(sys.executable).relative_to(REPO).as_posix()
         if sys.executable.startswith(str(REPO)) else sys.executable,
         "-m", MODULE, *sys.argv[1:]]),
        "installs": {}, "models": {}}
    R["runs"] = [*R_runs, {"command": R["command"], "date_utc": R["machine"]["date_utc"]}]
    t_all = time.perf_counter()
    for peer in peers:
        t = time.perf_counter()
        try:
            R["installs"][peer] = ensure_venv(peer, VENVS, log, args.install_timeout)
        except Exception as err:  # noqa: BLE001 - recorded, the run goes on
            R["installs"][peer] = {"peer": peer, "ok": False, "stage": "install",
                                   "error": repr(err)[:1500]}
        inst = R["installs"][peer]
        log(f"{peer}: {'ok' if inst['ok'] else 'NOT AVAILABLE'} in "
            f"{time.perf_counter() - t:.0f} s: {inst.get('versions') or inst.get('error')}")
        _save(work, R)
    for key in args.only.split(","):
        t = time.perf_counter()
        m = ev.BUILDERS[key](work)
        log(f"{key}: data ready in {time.perf_counter() - t:.0f} s ({m.info})")
        bench_model(m, args, R, R["installs"], work)
    R["total_s"] = time.perf_counter() - t_all
    R["runs"][-1]["total_s"] = R["total_s"]
    R["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    _save(work, R)
    md = write_report(R, work)
    print(md)
    log(f"done in {R['total_s'] / 60:.1f} min; {work / 'results.json'}, "
        f"{work / 'RESULTS-section.md'}")


if __name__ == "__main__":
    main()
