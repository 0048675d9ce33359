#!/usr/bin/env python
"""Calibration speed (issue 21): quantkit vs the floor vs ONNX Runtime's calibrator.

For three models (``models.py``: a 4 x Conv(32) net at 3x32x32, ResNet-18, a ViT-B/16-sized
encoder), each tool runs in its own child process, best of ``--repeats``:

* ``floor``: plain ONNX Runtime inference with every float activation exposed as an output,
  over the same ``.npy`` batches (what any calibrator must at least do);
* ``floor_nchw``: the same with the session settings quantkit's capture uses (graph
  optimizations up to ``ORT_ENABLE_EXTENDED``: no NCHWc layout, so convolutions run the plain
  NCHW kernels, whose values quantkit's scales are defined on -- ``docs/inputs.md``); it tells
  how much of quantkit's distance to the floor is that kernel choice and how much its own work;
* ``ort``: ONNX Runtime's own calibrator (``onnxruntime.quantization.calibrate``, entropy:
  ``create_calibrator``, ``collect_data``, ``compute_data``);
* ``quantkit``: ``quantkit calibrate MODEL --data X.npy --method entropy --scales S.json``
  (the command line, in process: ``quantkit.cli.main.main``).

Wall time is the child's whole life (imports included: that is what a user waits for; a
``python -c pass`` start-up is printed for reference); peak RSS is its ``VmHWM``. The table on
stdout is ready to paste into ``benchmarks/RESULTS.md``.

    python benchmarks/calibration_speed/run.py             # sizes of issue 21, best of 3
    python benchmarks/calibration_speed/run.py --quick     # fewer samples, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = HERE / "_work"

#: model -> (input shape, samples, batch size, quick samples). ViT-B/16: ONNX Runtime's
#: calibrator keeps every activation of every sample, about 0.5 GB a sample (12.6 GB at 24),
#: so 24 is what a 24 GB machine shared with other work can give it
SIZES = {"small": ((3, 32, 32), 1024, 32, 256),
         "resnet18": ((3, 224, 224), 256, 32, 64),
         "vit_b16": ((3, 224, 224), 24, 8, 8)}
TOOLS = ("floor", "floor_nchw", "ort", "quantkit")


def _batches(path: str, batch: int) -> Any:
    import numpy as np

    data = np.load(path, mmap_mode="r")
    for lo in range(0, len(data), batch):
        yield np.ascontiguousarray(data[lo: lo + batch])


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pin_threads(threads: int) -> None:
    """Give every ONNX Runtime session of this process ``threads`` intra-op threads.

    For a process confined to fewer CPUs than the host has (a cpuset cgroup): ONNX Runtime
    sizes its pool from the host's cores and would oversubscribe. Applied to all three tools.
    """
    import onnxruntime as ort

    class Pinned(ort.SessionOptions):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = threads

    ort.SessionOptions = Pinned  # type: ignore[misc]


_FIRST: list[float] = []


def _watch_first_run() -> None:
    """Record when the first batch reaches ONNX Runtime (epoch seconds)."""
    import onnxruntime as ort

    run = ort.InferenceSession.run

    def first(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _FIRST:
            _FIRST.append(time.time())
        return run(self, *args, **kwargs)

    ort.InferenceSession.run = first  # type: ignore[method-assign]


def worker(tool: str, p: dict[str, Any]) -> dict[str, Any]:
    """One measured run (in a child process)."""
    if p.get("ort_threads"):
        _pin_threads(int(p["ort_threads"]))
    if p.get("watch"):
        _watch_first_run()
    if tool in ("floor", "floor_nchw"):
        import onnx
        import onnxruntime as ort

        model = onnx.load(p["model"])
        inferred = onnx.shape_inference.infer_shapes(model)
        floats = {v.name for v in (*inferred.graph.value_info, *inferred.graph.output)
                  if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
        have = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for name in node.output:
                if name in floats and name not in have:
                    model.graph.output.append(onnx.ValueInfoProto(name=name))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if tool == "floor_nchw":
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        sess = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for b in _batches(p["data"], p["batch"]):
            sess.run(names, {"input": b})
        return {"outputs": len(names)}
    if tool == "ort":
        from onnxruntime.quantization.calibrate import (
            CalibrationDataReader,
            CalibrationMethod,
            create_calibrator,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = _batches(p["data"], p["batch"])

            def get_next(self) -> dict[str, Any] | None:
                return next(({"input": b} for b in self.it), None)

        cal = create_calibrator(p["model"], None, augmented_model_path=p["augmented"],
                                calibrate_method=CalibrationMethod.Entropy)
        cal.collect_data(Reader())
        return {"tensors": len(cal.compute_data().data)}
    from quantkit.cli.main import main

    code = main(["-q", "calibrate", p["model"], "--data", p["data"], "--method", "entropy",
                 "--batch-size", str(p["batch"]), "--scales", p["scales"]])
    if code:
        raise SystemExit(code)
    return {"tensors": len(json.loads(Path(p["scales"]).read_text())["tensors"])}


def measure(tool: str, params: dict[str, Any]) -> dict[str, Any]:
    out = WORK / f"{tool}.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0, epoch0 = time.perf_counter(), time.time()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", tool,
                           "--params", json.dumps(params), "--result", str(out)],
                          env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(out.read_text())
    res["wall_s"] = wall
    if res.get("first_run_epoch"):
        res["first_batch_s"] = res["first_run_epoch"] - epoch0
    return res


def prepare(name: str, quick: bool, samples: int | None) -> dict[str, Any]:
    shape, n, batch, n_quick = SIZES[name]
    n = samples or (n_quick if quick else n)
    model, data = WORK / f"{name}.onnx", WORK / f"{name}_{n}.npy"
    if not model.exists():
        code = f"from models import BUILDERS; from pathlib import Path; " \
               f"BUILDERS[{name!r}](Path({str(model)!r}))"
        subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True, timeout=1800,
                       capture_output=True)
    if not data.exists():
        import numpy as np

        rng = np.random.default_rng(0)
        arr = np.lib.format.open_memmap(data, mode="w+", dtype=np.float32, shape=(n, *shape))
        for lo in range(0, n, 64):
            arr[lo: lo + 64] = rng.standard_normal((min(64, n - lo), *shape), np.float32)
        arr.flush()
        del arr
    return {"model": str(model), "data": str(data), "batch": batch, "samples": n,
            "augmented": str(WORK / f"{name}.augmented.onnx"),
            "scales": str(WORK / f"{name}.scales.json")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SIZES), help="comma-separated: "
                    + ", ".join(SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer samples, one repeat")
    ap.add_argument("--samples", type=int, default=None, help="override the sample count")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--ort-threads", type=int, default=0,
                    help="intra-op threads of every ONNX Runtime session (all tools); for a "
                         "process confined to fewer CPUs than the host has")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(args.worker, json.loads(args.params))
        res["peak_mb"] = _peak_mb()
        res["first_run_epoch"] = _FIRST[0] if _FIRST else None
        Path(args.result).write_text(json.dumps(res))
        return 0
    WORK.mkdir(exist_ok=True)
    repeats = 1 if args.quick else args.repeats
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    startup = time.perf_counter() - t
    rows, raw = [], {}
    for name in args.models.split(","):
        try:
            params = prepare(name, args.quick, args.samples)
            params["ort_threads"] = args.ort_threads
        except subprocess.CalledProcessError as err:
            print(f"{name}: skipped, the model could not be built ({err.stderr[-300:]!r})",
                  file=sys.stderr)
            continue
        best: dict[str, dict[str, Any]] = {}
        for r in range(repeats):
            for tool in TOOLS:  # interleaved: each repeat sees the same load
                res = measure(tool, params)
                print(f"[{time.strftime('%H:%M:%S')}] {name} {tool} #{r + 1}: "
                      f"{res['wall_s']:.2f} s, {res['peak_mb']:.0f} MB", file=sys.stderr)
                if tool not in best or res["wall_s"] < best[tool]["wall_s"]:
                    best[tool] = {**res, "peak_mb": min(res["peak_mb"], best.get(
                        tool, {}).get("peak_mb", res["peak_mb"]))}
        params["watch"] = True  # one more quantkit run: process start -> first batch
        first = measure("quantkit", params).get("first_batch_s", float("nan"))
        raw[name] = {"params": params, "best": best, "quantkit_first_batch_s": first}
        f, o, q, fx = best["floor"], best["ort"], best["quantkit"], best["floor_nchw"]
        rows.append(
            f"| {name} | {params['samples']} x {params['batch']} | {f['wall_s']:.2f} s | "
            f"{o['wall_s']:.2f} s / {o['peak_mb']:.0f} MB | "
            f"{q['wall_s']:.2f} s / {q['peak_mb']:.0f} MB ({q['tensors']} of {f['outputs']}) | "
            f"**{q['wall_s'] / o['wall_s']:.2f}x** | **{q['peak_mb'] / o['peak_mb']:.2f}x** | "
            f"**{q['wall_s'] / f['wall_s']:.2f}x** | {fx['wall_s']:.2f} s: "
            f"{q['wall_s'] / fx['wall_s']:.2f}x | {first:.2f} s |")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; load average at the end {' '.join(load)}; "
          f"`python -c pass` {startup:.2f} s; best of {repeats}.\n")
    print("| model | samples x batch | floor wall | ORT calibrator wall / peak | quantkit "
          "wall / peak (tensors calibrated of exposed) | wall vs ORT (<= 0.5x) | memory vs "
          "ORT (<= 0.3x) | wall vs floor (<= 1.5x small, 1.25x others) | NCHW floor: quantkit "
          "vs it | quantkit: process start to first batch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
