"""The real-model zoo (``recipes/zoo``): what each model is, what calibrating it costs, how its
default INT8 model scores, whether TensorRT-RTX builds it, and the default method against
every other one.

For every zoo model, on its full-size sample (``make(..., small=False)``; ``--small`` for the CI
sample):

* **zoo table**: top-level node count (plus nodes inside If/Loop/Scan bodies), the most common
  op types; ``quantkit calibrate`` (default method, ``auto``) run as a child process: wall
  time and peak RSS (``wait4``); the task metric of the default INT8 plan and of the mixed plan
  against FP32 (``quantkit eval --reference``, ONNX Runtime CPU running the Q/DQ model as
  written); ``quantkit build --backend tensorrt-rtx --compute-capability SM89`` of the default
  INT8 model: built or the builder's reason, and planned INT8 compute layers read back as INT8.
* **method table** (issue 17): activations captured ONCE into 2048-bin histograms and maxima,
  as ``benchmarks/default_method.py`` does; ``auto``, ``entropy``, ``percentile``, ``mse``,
  ``minmax`` scales from those same statistics, each written with the default plan and scored
  with the model's task metric against FP32.
* **FP8 table** (issue 20 item 5, ``--fp8``): all-INT8, all-FP8, mixed INT8/FP8 and mixed
  INT8/FP16 (the zoo's mixed layers in FP8 / FP16), scored the same way, and built for SM89.

Run from the repository root (nothing is downloaded; exports cached in
``benchmarks/_work/zoo``)::

    python -m benchmarks.zoo.run                       # every installed zoo model
    python -m benchmarks.zoo.run --models yolox_det,crnn_ocr --fp8
    python -m benchmarks.zoo.run --render benchmarks/_work/zoo.json    # tables of a results file

Output: Markdown tables on stdout, ``benchmarks/_work/zoo.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import cpu_model, loadavg, utc_now, wait_child

_ROOT = Path(__file__).resolve().parents[2]
WORK = _ROOT / "benchmarks" / "_work"
_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_BODIES = ("If", "Loop", "Scan")


def cli(args: list[str]) -> tuple[int, str, str]:
    """``quantkit ARGS`` in this process: (exit code, stdout, stderr)."""
    from quantkit.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--quiet", *args])
    return code, out.getvalue(), err.getvalue()


def graph_facts(path: Path) -> dict[str, Any]:
    """Top-level node count, nodes inside control-flow bodies, the five commonest op types."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def body_nodes(graph: Any) -> int:
        count = 0
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    count += len(attr.g.node) + body_nodes(attr.g)
        return count

    ops = collections.Counter(n.op_type for n in model.graph.node if n.op_type != "Constant")
    return {"nodes": len(model.graph.node), "body_nodes": body_nodes(model.graph),
            "ops": ", ".join(f"{k} {v}" for k, v in ops.most_common(5)),
            "control_flow": sorted({n.op_type for n in model.graph.node if n.op_type in _BODIES})}


def calibrate_child(p: Any, scales: Path) -> dict[str, Any]:
    """``quantkit calibrate`` as a child process: seconds and peak RSS (MiB)."""
    cmd = [sys.executable, "-m", "quantkit.cli.main", "-q", "calibrate", str(p.model), "--data",
           str(p.calibration), *p.data_args, "--batch-size", str(p.batch_size), "--scales",
           str(scales)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(_ROOT)})
    code, ru, timed_out = wait_child(proc, t0, 1800)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if code != 0:
        raise RuntimeError(f"calibrate {p.name} failed ({code}): {err[-800:]}")
    return {"calibrate_s": round(time.perf_counter() - t0, 1),
            "calibrate_rss_mib": round(ru.ru_maxrss / 1024)}


def score(p: Any, model: Path) -> float:
    """The task metric of ``model`` against the FP32 model on the evaluation sample."""
    args = ["eval", str(model), "--data", str(p.evaluation), *p.data_args, "--batch-size",
            str(p.batch_size), "--reference", str(p.model), "--metric", p.metric,
            *(["--output", p.output] if p.output else []), "--iterations", "0", "--json"]
    code, out, err = cli(args)
    if code != 0:
        raise RuntimeError(f"eval {model.name} failed ({code}): {err[-800:]}")
    return float(json.loads(out)["accuracy"])


def rtx_build(p: Any, model: Path) -> dict[str, Any]:
    """Build for SM89: ``{built, reason, planned_int8, read_int8, planned_fp8, read_fp8}``."""
    import onnx

    q = onnx.load(str(model), load_external_data=False)
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i.data_type for i in q.graph.initializer}
    planned: dict[str, str] = {}
    for node in q.graph.node:
        if node.op_type not in _COMPUTE or len(node.input) < 2:
            continue
        dqs = [producer.get(i) for i in node.input[:2]]
        if all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            src = dqs[1].input[0]  # type: ignore[union-attr]
            dtype = inits.get(src) or next(
                (inits.get(n.input[2]) for n in [producer.get(src)] if n is not None
                 and len(n.input) > 2), None)
            planned[node.name] = "fp8" if dtype == onnx.TensorProto.FLOAT8E4M3FN else "int8"
    opt, lo, hi = p.shapes
    shapes = ["--shapes", opt, "--min-shapes", lo, "--max-shapes", hi] if opt else []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "m.engine"
        t0 = time.perf_counter()
        code, _, err = cli(["build", str(model), "--backend", "tensorrt-rtx",
                            "--compute-capability", "SM89", "-o", str(engine), *shapes])
        out: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 1)}
        if code != 0:
            reason = " ".join(err.split())
            return {**out, "built": False, "reason": reason[:300]}
        sidecar = json.loads(engine.with_name("m.engine.json").read_text())
    layers = {lay["name"]: lay["precision"] for lay in sidecar["layers"]}
    out.update(built=True)
    for prec in ("int8", "fp8"):
        names = [n for n, v in planned.items() if v == prec]
        out[f"planned_{prec}"] = len(names)
        out[f"read_{prec}"] = sum(layers.get(n) == prec for n in names)
    return out


def capture_tables(p: Any, methods: tuple[str, ...]) -> dict[str, Any]:
    """Capture once (the model's layout, its calibration sample), scales for every method."""
    from quantkit.calibrators import Calibrator, MinMaxCalibrator, ScaleTable, create_calibrator
    from quantkit.capture import ActivationCapture
    from quantkit.data import InputLayout, open_source

    axes, consts = {}, {}
    args = list(p.data_args)
    for flag, value in zip(args[::2], args[1::2], strict=True):
        key, val = value.split("=", 1)
        if flag == "--batch-axis":
            axes[key] = int(val)
        else:
            consts[key] = float(val) if "." in val else int(val)
    hist, mm = create_calibrator("auto"), MinMaxCalibrator()
    capture = ActivationCapture(p.model, histograms=True, calibrating=True,
                                layout=InputLayout(axes, consts))
    src = open_source(str(p.calibration), capture.inputs, constants=consts, batch_axes=axes)
    batches = list(src.batches(p.batch_size))

    def sink(acts: Any) -> None:
        hist.update_many(acts)
        mm.update_many(acts)

    samples = capture.run(iter(batches), sink, source=p.name)
    state = hist.state()
    tables = {}
    for method in methods:
        cal: Calibrator = mm if method == "minmax" else Calibrator.from_state(
            {**state, "method": method, "settings": {"num_bins": 2048}})
        tables[method] = ScaleTable.from_amax(cal.compute_amax(), method=method,
                                              num_samples=samples,
                                              algorithm=cal.cache_algorithm)
    return tables


def quantized(p: Any, scales: Any, plan: dict[str, Any], out: Path) -> Path:
    import onnx

    from quantkit.model import save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    res = quantize_model(onnx.load(str(p.model)), scales, PrecisionConfig.from_mapping(plan),
                         source=str(p.model))
    save_model(res.model, out)
    return out


def run_model(name: str, small: bool, methods: tuple[str, ...], fp8: bool) -> dict[str, Any]:
    from quantkit.calibrators.cache import read_scales
    from recipes import zoo

    p = zoo.MODELS[name].make(WORK / "zoo" / "data", small)
    spec = p.metric.split(".py:")[1] if ".py:" in p.metric else p.metric  # a plugin: its class
    res: dict[str, Any] = {"metric": spec.split(":")[0],
                           "data": p.data_note, **graph_facts(p.model)}
    work = WORK / "zoo" / name
    work.mkdir(parents=True, exist_ok=True)
    res.update(calibrate_child(p, work / "scales.json"))
    scales = read_scales(work / "scales.json")
    int8 = quantized(p, scales, {"default": "int8"}, work / "int8.onnx")
    res["int8"] = score(p, int8)
    res["mixed"] = score(p, quantized(p, scales, p.mixed, work / "mixed.onnx"))
    res["rtx"] = rtx_build(p, int8)
    print(f"  {name}: {res}", file=sys.stderr, flush=True)
    if methods:
        tables = capture_tables(p, methods)
        res["methods"] = {m: score(p, quantized(p, tables[m], {"default": "int8"},
                                                work / f"{m}.onnx")) for m in methods}
        print(f"  {name} methods: {res['methods']}", file=sys.stderr, flush=True)
    if fp8:
        names = [o["name"] for o in p.mixed["overrides"]]
        plans = {"all-INT8": {"default": "int8"}, "all-FP8": {"default": "fp8"},
                 "mixed INT8/FP8": {"default": "int8", "overrides": [
                     {"name": n, "precision": "fp8"} for n in names]},
                 "mixed INT8/FP16": p.mixed}
        res["fp8"] = {}
        for label, plan in plans.items():
            path = quantized(p, scales, plan, work / f"{label.replace('/', '_')}.onnx")
            res["fp8"][label] = {"metric": score(p, path), "rtx": rtx_build(p, path)}
        print(f"  {name} fp8: {res['fp8']}", file=sys.stderr, flush=True)
    return res


def _rtx_cell(r: dict[str, Any]) -> str:
    if not r["built"]:
        return f"fails: {r['reason'][:120]}"
    parts = [f"{r[f'read_{k}']}/{r[f'planned_{k}']} {k}" for k in ("int8", "fp8")
             if r.get(f"planned_{k}")]
    return "built, " + ", ".join(parts or ["no quantized layer"])


def tables(results: dict[str, Any], methods: tuple[str, ...]) -> str:
    lines = ["| model | nodes (in bodies) | top ops | calibrate s | peak RSS MiB | metric | "
             "INT8 | mixed | RTX SM89 build (read back / planned) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['nodes']} ({r['body_nodes']}) | {r['ops']} | "
                     f"{r['calibrate_s']} | {r['calibrate_rss_mib']} | {r['metric']} | "
                     f"{r['int8']:.4g} | {r['mixed']:.4g} | {_rtx_cell(r['rtx'])} |")
    if methods and all("methods" in r for r in results.values()):
        lines += ["", "| model | metric | " + " | ".join(methods) + " | auto - best |",
                  "|---|---|" + "---|" * len(methods) + "---|"]
        for name, r in results.items():
            vals = r["methods"]
            best = max(vals.values())
            cells = [f"**{vals[m]:.4g}**" if vals[m] == best else f"{vals[m]:.4g}"
                     for m in methods]
            gap = vals["auto"] - best if "auto" in vals else float("nan")
            lines.append(f"| {name} | {r['metric']} | " + " | ".join(cells) + f" | {gap:+.4g} |")
    if all("fp8" in r for r in results.values()) and results:
        labels = list(next(iter(results.values()))["fp8"])
        lines += ["", "| model | metric | " + " | ".join(labels) + " |",
                  "|---|---|" + "---|" * len(labels)]
        for name, r in results.items():
            cells = [f"{r['fp8'][k]['metric']:.4g} ({_rtx_cell(r['fp8'][k]['rtx'])})"
                     for k in labels]
            lines.append(f"| {name} | {r['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from recipes import zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(zoo.MODELS))
    parser.add_argument("--methods", default="auto,entropy,percentile,mse,minmax",
                        help="'' to skip the method table")
    parser.add_argument("--fp8", action="store_true", help="also the INT8/FP8/FP16 table")
    parser.add_argument("--small", action="store_true", help="the CI-sized samples")
    parser.add_argument("--render", metavar="JSON", help="only print the tables of a results file")
    parser.add_argument("--out", default=str(WORK / "zoo.json"), help="results file to write")
    args = parser.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    if args.render:
        print(tables(json.loads(Path(args.render).read_text()), methods))
        return 0
    results: dict[str, Any] = {}
    out = Path(args.out)
    for name in args.models.split(","):
        lacking = zoo.missing(zoo.MODELS[name].needs)
        if lacking:
            print(f"skip {name}: pip install {'; '.join(lacking)}", file=sys.stderr)
            continue
        results[name] = run_model(name, args.small, methods, args.fp8)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    print(f"<!-- {utc_now()}; {cpu_model()}; load average at the end {loadavg():.1f} -->")
    print(tables(results, methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
