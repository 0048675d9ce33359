#!/usr/bin/env python
"""Issue 20: FP8 (E4M3) beside INT8 -- accuracy, lint, TensorRT-RTX SM89 builds, vs ModelOpt fp8.

Per model (``--models``; the models the project already uses, from ``quantkit/assets`` and
``recipes``, nothing downloaded):

* quantkit configs, the rest FP16 in all: all-INT8 (the recipe's INT8 method), all-FP8
  (minmax: FP8 needs no clipping, docs/fp8.md), mixed INT8/FP8 (the recipe's mixed plan with
  its FP16 layers in FP8 instead; for the demo CNN autotune's tiers with target L4) and mixed
  INT8/FP16 (the recipe's mixed plan; for the demo CNN autotune's result);
* ModelOpt 0.47 ``quantize(quantize_mode="fp8", calibration_method="max",
  calibration_eps=["cpu"])`` on the same calibration data, in its own interpreter
  (``--modelopt-python``);
* every output: accuracy against FP32 under ONNX Runtime on the CPU (fake quantization,
  quantkit's session: ``session.disable_quant_qdq`` and basic graph optimizations for FP8),
  Q/DQ count, compute-op precisions and errors from quantkit's linter, and a TensorRT-RTX build
  for SM89 on this CPU (success, the parsed network's and the compiled kernels' precision of
  the compute layers, plan disagreements).

Run from the repository root (2 shared cores: about 10 minutes for all four models)::

    python -m benchmarks.fp8.run                      # all models
    python -m benchmarks.fp8.run --models demo,rec --no-build

The ModelOpt interpreter: a venv made with ``python -m venv --system-site-packages`` plus
``pip install onnx-graphsurgeon onnxslim polygraphy onnxconverter-common onnxscript lief
cppimport`` (ModelOpt's ``[onnx]`` extra without its onnx / onnxruntime-gpu pins; the worker
hides the CPU-only ``tensorrt`` stub from ModelOpt). Results go to
``benchmarks/_work/fp8/results.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import REPO

BENCH = REPO / "benchmarks"

COMPUTE = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")


@dataclass
class Model:
    """One model: FP32 file, calibration batches, evaluation inputs and metrics."""

    key: str
    title: str
    fp32: Path
    cal: list[dict[str, np.ndarray]]
    ev: dict[str, np.ndarray]
    metric: Callable[[np.ndarray, np.ndarray], dict[str, float]]  # (fp32 out, out) -> metrics
    shapes: dict[str, tuple[tuple[int, ...], ...]]
    int8_method: str
    mixed_fp16: dict[str, Any] | None  # the recipe's mixed plan (None: autotune)
    ev_batch: int = 32
    info: dict[str, str] = field(default_factory=dict)
    #: more quantkit configs: label -> (method, precision mapping, note)
    extra: dict[str, tuple[str, dict[str, Any], str]] = field(default_factory=dict)


def _top1(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean(ref.argmax(1) == out.argmax(1)) * 100)


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    err = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return float("inf") if err == 0 else 10 * float(np.log10(np.sum(ref.astype(np.float64) ** 2)
                                                             / err))


def demo(work: Path) -> Model:
    import quantkit

    assets = Path(quantkit.__file__).parent / "assets"
    d = np.load(assets / "demo_data.npz")
    cal = d["calibration"][:, None].astype(np.float32)
    ev = d["evaluation"][:, None].astype(np.float32)
    labels = d["evaluation_labels"]

    def metric(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
        return {"top1": float(np.mean(out.argmax(1) == labels) * 100),
                "agreement": _top1(ref, out), "sqnr_db": _sqnr(ref, out)}

    return Model("demo", "demo CNN", assets / "demo_cnn.onnx",
                 [{"input": b} for b in np.array_split(cal, 8)], {"input": ev}, metric,
                 {"input": ((1, 1, 28, 28), (32, 1, 28, 28), (64, 1, 28, 28))}, "entropy", None,
                 info={"data": f"{len(cal)} calibration / {len(ev)} evaluation digits"})


def effnet(work: Path, views: int) -> Model:
    from benchmarks.qdq.models import EFFNET_LABELS
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    path = eff.export_onnx(work / "models")
    cal = images.calibration_set().astype(np.float32)
    ev = images.evaluation_set(views_per_photo=views).astype(np.float32)
    photo = np.repeat(np.arange(len(images.EVALUATION_PHOTOS)), views)
    accept = [EFFNET_LABELS[n] for n in images.EVALUATION_PHOTOS]

    def metric(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
        ok = [t in accept[p] for t, p in zip(out.argmax(1), photo, strict=True)]
        return {"agreement": _top1(ref, out), "top1": float(np.mean(ok) * 100),
                "sqnr_db": _sqnr(ref, out)}

    return Model("effnet", "EfficientNet-Lite0", path,
                 [{eff.INPUT_NAME: b} for b in np.array_split(cal, max(1, len(cal) // 16))],
                 {eff.INPUT_NAME: ev}, metric, eff.TRT_SHAPES, eff.CALIBRATION_METHOD,
                 eff.MIXED_PLAN, ev_batch=16,
                 info={"data": f"{len(cal)} calibration views / {len(ev)} evaluation views"},
                 extra={"FP8, depthwise FP16": (
                     "minmax", {"default": "fp8", "default_float": "fp16", "overrides": [
                         {"regex": "_depthwise_conv/", "precision": "fp16"}]},
                     "every Conv/Gemm FP8 but the 16 depthwise convs (FP16, as ModelOpt keeps "
                     "them)")})


def minilm(work: Path, n_cal: int, n_ev: int) -> Model:
    from recipes import minilm as ml

    path = ml.export_onnx(work / "models")
    cal_s, ev_s = ml.sentence_sets(n_cal, n_ev)
    cal, ev = ml.tokenize(cal_s), ml.tokenize(ev_s)

    def metric(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
        cos = ml.cosine_to_reference(ref, out)
        return {"cosine": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
                "retrieval": float(ml.retrieval_agreement(ref, out) * 100)}

    return Model("minilm", "all-MiniLM-L6-v2", path, ml.batches(cal, 32), ev, metric,
                 ml.TRT_SHAPES, ml.CALIBRATION_METHOD, ml.MIXED_PLAN,
                 info={"data": f"{n_cal} calibration / {n_ev} evaluation sentences, "
                               f"{ml.SEQ_LEN} tokens"})


def rec(work: Path) -> Model:
    from recipes import ppocr

    _, path = ppocr.model_paths()
    cal_l, ev_l = ppocr.rec_sets()
    cal, ev = ppocr.rec_batch(cal_l), ppocr.rec_batch(ev_l)
    truth = [line.text for line in ev_l]
    chars = ppocr.character_list(path)

    def metric(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
        text = [s.strip() for s in ppocr.ctc_greedy_decode(out, chars)]
        ref_text = [s.strip() for s in ppocr.ctc_greedy_decode(ref, chars)]
        return {"cer": float(ppocr.character_error_rate(text, truth) * 100),
                "agreement": float(np.mean([a == b for a, b in zip(text, ref_text,
                                                                    strict=True)]) * 100)}

    return Model("rec", "PP-OCRv4 rec", Path(path),
                 [{ppocr.REC_INPUT: b.astype(np.float32)} for b in np.array_split(cal, 6)],
                 {ppocr.REC_INPUT: ev.astype(np.float32)}, metric, ppocr.REC_TRT_SHAPES,
                 ppocr.CALIBRATION_METHOD, ppocr.REC_MIXED_PLAN,
                 info={"data": f"{len(cal)} calibration / {len(ev)} evaluation lines"})


# --------------------------------------------------------------------------- measuring


def run_model(path: Path, ev: dict[str, np.ndarray], batch: int) -> np.ndarray:
    from quantkit._ort import session

    s = session(str(path))
    n = len(next(iter(ev.values())))
    names = [i.name for i in s.get_inputs()]
    outs = [s.run(None, {k: ev[k][i:i + batch] for k in names})[0] for i in range(0, n, batch)]
    return np.concatenate(outs).astype(np.float32)


def describe(path: Path) -> dict[str, Any]:
    import onnx

    from quantkit.qdq.lint import lint_model

    model = onnx.load(str(path))
    ops = Counter(n.op_type for n in model.graph.node)
    rep = lint_model(model, source=path.name, base_dir=str(path.parent))
    prec = Counter(n.precision for n in rep.nodes
                   if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"))
    return {"Q": ops.get("QuantizeLinear", 0), "DQ": ops.get("DequantizeLinear", 0),
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "lint_errors": sorted({f.code for f in rep.findings if f.severity == "error"}),
            "lint_warnings": dict(Counter(f.code for f in rep.findings
                                          if f.severity == "warning")),
            "compute_precision": dict(prec)}


def build(path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]], out: Path
          ) -> dict[str, Any]:
    """TensorRT-RTX build for SM89 on the CPU: parsed and compiled precision of compute layers."""
    from quantkit.backends import BuildOptions, get_backend

    opts = BuildOptions(shapes={k: v[1] for k, v in shapes.items()},
                        min_shapes={k: v[0] for k, v in shapes.items()},
                        max_shapes={k: v[2] for k, v in shapes.items()},
                        compute_capabilities=("SM89",))
    t0 = time.perf_counter()
    try:
        doc = get_backend("tensorrt-rtx").build(path, out, opts).sidecar
    except Exception as err:  # noqa: BLE001 - recorded, the run goes on
        return {"ok": False, "error": str(err)[:400], "time_s": time.perf_counter() - t0}
    compute = [x for x in doc["layers"] if x["type"] in COMPUTE and "onnx_node" in x]
    return {"ok": True, "time_s": round(time.perf_counter() - t0, 1),
            "engine_mb": round(doc["engine_bytes"] / 2 ** 20, 2),
            "network": dict(Counter(x["precision"] for x in compute)),
            "engine": dict(Counter(x.get("engine_precision", "?") for x in compute)),
            "plan_disagreements": sum(d["kind"] == "plan" for d in doc["disagreements"]),
            "engine_disagreements": sum(d["kind"] == "engine" for d in doc["disagreements"])}


def to_fp8(plan: dict[str, Any]) -> dict[str, Any]:
    """The mixed plan with its FP16 overrides in FP8 (ops without FP8 stay in default_float)."""
    rules = [{**r, "precision": "fp8"} if r.get("precision") == "fp16" else r
             for r in plan.get("overrides", [])]
    return {**plan, "overrides": rules}


MODELOPT_WORKER = r"""
import json, sys, time
sys.modules["tensorrt"] = None  # the CPU-only tensorrt stub of this machine is not TensorRT
import numpy as np
import modelopt
from modelopt.onnx.quantization import quantize
p = json.loads(sys.argv[1])
data = {k: np.load(v) for k, v in p["cal"].items()}
shapes = ",".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in data.items())
t0 = time.perf_counter()
quantize(onnx_path=p["model"], quantize_mode="fp8", calibration_method="max",
         calibration_data=data if len(data) > 1 else next(iter(data.values())),
         calibration_shapes=shapes, calibration_eps=["cpu"], output_path=p["output"],
         log_level="ERROR")
print(json.dumps({"time_s": time.perf_counter() - t0, "modelopt": modelopt.__version__}))
"""


def modelopt_fp8(python: str, m: Model, work: Path, out: Path) -> dict[str, Any]:
    cal = {}
    for name in m.cal[0]:
        arr = np.concatenate([b[name] for b in m.cal])
        cal[name] = str(work / f"{m.key}_cal_{name}.npy")
        np.save(cal[name], arr)
    # ModelOpt rewrites its input file (shape inference): give it a copy, never the original
    src = work / f"{m.key}_fp32_for_modelopt.onnx"
    shutil.copyfile(m.fp32, src)
    params = {"model": str(src), "cal": cal, "output": str(out)}
    r = subprocess.run([python, "-c", MODELOPT_WORKER, json.dumps(params)], capture_output=True,
                       text=True, timeout=1800)
    if r.returncode != 0 or not out.exists():
        return {"ok": False, "error": (r.stderr or r.stdout)[-800:]}
    return {"ok": True, **json.loads(r.stdout.strip().splitlines()[-1])}


def quantkit_configs(m: Model, work: Path) -> dict[str, tuple[Path, str]]:
    """Write the quantkit configs; returns label -> (model path, note)."""
    import onnx

    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    fp32 = onnx.load(str(m.fp32))
    scales = {meth: calibrate(m.fp32, m.cal, method=meth).scales
              for meth in dict.fromkeys([m.int8_method, "minmax"])}
    plans: dict[str, tuple[str, dict[str, Any], str]] = {
        "all-INT8": (m.int8_method, {"default": "int8", "default_float": "fp16"},
                     f"every Conv/Gemm/MatMul INT8 ({m.int8_method}), rest FP16"),
        "all-FP8": ("minmax", {"default": "fp8", "default_float": "fp16"},
                    "every Conv/Gemm/MatMul FP8 (minmax), rest FP16"),
    }
    plans.update(m.extra)
    out: dict[str, tuple[Path, str]] = {}
    if m.mixed_fp16 is not None:
        base = {"default_float": "fp16", **m.mixed_fp16}
        plans["mixed INT8/FP8"] = (m.int8_method, to_fp8(base),
                                   "the recipe's mixed plan, its FP16 layers in FP8")
        plans["mixed INT8/FP16"] = (m.int8_method, base, "the recipe's mixed plan")
    else:
        out.update(_autotuned(m, work, fp32, scales[m.int8_method]))
    for label, (meth, plan, note) in plans.items():
        res = quantize_model(fp32, scales[meth], PrecisionConfig.from_mapping(plan),
                             source=m.fp32.name)
        path = work / f"{m.key}_{label.replace('/', '-').replace(' ', '_').replace(',', '')}.onnx"
        save_model(res.model, path)
        out[label] = (path, note)
    return out


def _autotuned(m: Model, work: Path, fp32: Any, scales: Any) -> dict[str, tuple[Path, str]]:
    from quantkit.model import save_model
    from quantkit.qdq.writer import quantize_model
    from quantkit.sweep import Evaluator, autotune
    from quantkit.sweep.tiers import fp8_target, fp8_tier

    d = np.load(Path(m.fp32).parent / "demo_data.npz")
    ev = Evaluator(str(m.fp32), [m.ev], d["evaluation_labels"], "top1")
    res = autotune(fp32, scales, ev, 0.2, base=_fp16_base())
    tiered = fp8_tier(fp32, scales, ev, res, fp8_target(gpu="L4"))
    out = {}
    for label, cfg, note in (
            ("mixed INT8/FP8", tiered.config,
             f"autotune (drop <= 0.2) + tiers for L4: {tiered.counts()}"),
            ("mixed INT8/FP16", res.config,
             f"autotune (drop <= 0.2): {len(res.kept)} layer(s) FP16")):
        path = work / f"{m.key}_{label.replace('/', '-').replace(' ', '_')}.onnx"
        save_model(quantize_model(fp32, scales, cfg).model, path)
        out[label] = (path, note)
    return out


def _fp16_base() -> Any:
    from quantkit.qdq.plan import PrecisionConfig

    return PrecisionConfig(default_float="fp16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="demo,effnet,minilm,rec")
    ap.add_argument("--work", default=str(BENCH / "_work" / "fp8"))
    ap.add_argument("--modelopt-python", default=str(BENCH / "_work" / "venv-modelopt-fp8" /
                                                     "bin" / "python"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--views", type=int, default=2, help="EfficientNet views per photo")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    import quantkit

    try:
        import tensorrt_rtx_bindings as rtx
        rtx_version = rtx.__version__
    except ImportError:
        rtx_version = None
    results: dict[str, Any] = {"machine": {
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "quantkit": quantkit.__version__, "onnxruntime": onnxruntime.__version__,
        "tensorrt_rtx": rtx_version, "argv": sys.argv}, "models": {}}
    loaders = {"demo": lambda: demo(work), "effnet": lambda: effnet(work, args.views),
               "minilm": lambda: minilm(work, 64, 128), "rec": lambda: rec(work)}
    for key in args.models.split(","):
        t0 = time.perf_counter()
        m = loaders[key]()
        ref = run_model(m.fp32, m.ev, m.ev_batch)
        rows: dict[str, Any] = {}
        paths = quantkit_configs(m, work)
        mo_path = work / f"{m.key}_modelopt_fp8.onnx"
        if Path(args.modelopt_python).exists():
            mo = modelopt_fp8(args.modelopt_python, m, work, mo_path)
            if mo["ok"]:
                paths["ModelOpt fp8"] = (mo_path, f"ModelOpt {mo['modelopt']} quantize_mode=fp8,"
                                                  " max, default settings")
            else:
                rows["ModelOpt fp8"] = {"error": mo["error"]}
        for label, (path, note) in paths.items():
            row: dict[str, Any] = {"note": note, **m.metric(ref, run_model(path, m.ev,
                                                                           m.ev_batch)),
                                   **describe(path)}
            if not args.no_build:
                row["rtx_sm89"] = build(path, m.shapes, work / f"{path.stem}.engine")
            rows[label] = row
            print(f"{m.title} {label}: {json.dumps(row)}", flush=True)
        results["models"][key] = {"title": m.title, "info": m.info, "rows": rows,
                                  "time_s": round(time.perf_counter() - t0, 1)}
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for r in results["models"].values():
        rows = r["rows"]
        metrics = [k for k in next((v for v in rows.values() if "Q" in v), {})
                   if k in ("top1", "agreement", "sqnr_db", "cosine", "cosine_min",
                            "retrieval", "cer")]
        lines += [f"\n**{r['title']}** ({r['info'].get('data', '')})\n",
                  "| config | " + " | ".join(metrics) + " | Q/DQ | compute ops (lint) | lint "
                  "errors | RTX SM89 build: network / kernels |",
                  "|---" * (len(metrics) + 5) + "|"]
        for label, v in rows.items():
            if "Q" not in v:
                lines.append(f"| {label} | failed: {v.get('error', '')[:120]} |")
                continue
            b = v.get("rtx_sm89")
            bt = ("not built" if b is None else
                  f"ok, {_fmt_counts(b['network'])} / {_fmt_counts(b['engine'])}"
                  if b["ok"] else f"failed: {b['error'][:80]}")
            lines.append(f"| {label} | " + " | ".join(f"{v[k]:.4g}" for k in metrics)
                         + f" | {v['Q']}/{v['DQ']} | {_fmt_counts(v['compute_precision'])} | "
                         f"{', '.join(v['lint_errors']) or 'none'} | {bt} |")
    return "\n".join(lines)


def _fmt_counts(c: dict[str, int]) -> str:
    return " ".join(f"{n} {k}" for k, n in sorted(c.items(), key=lambda kv: -kv[1]))


if __name__ == "__main__":
    main()
