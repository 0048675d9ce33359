"""Ray executor vs local on the demo sweep and sensitivity, and Ray's per-task overhead.

    .venv/bin/python -m benchmarks.ray.sweep [--cpus 2] [--parts sweep,sensitivity,overhead]

Prints the machine (nproc, CPU model, load average), the Ray version and the date, then:

* **sweep**: the demo recipe (``quantkit.demo.prepare_demo``) run with the local executor
  (in-process, in order) and on a local Ray instance (one task per config), wall time of each
  (Ray start-up reported apart), and whether ``results.csv`` is identical minus the timing
  columns;
* **sensitivity**: ``layer_sensitivity`` on the demo model (entropy scales, the 500 labelled
  evaluation digits) in-process vs one Ray task per layer (1 ONNX Runtime thread each);
  identical results (floats compared exactly) and wall times;
* **overhead**: the round trip of one tiny Ray task (submitted and awaited one at a time), the
  cost per task of many tiny tasks submitted at once, and sharded calibration with 1, 2 and 4
  shards on the same data (3,072 digits, entropy) with the per-task overhead derived from the
  tasks' own timings.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import cpu_model, utc_now

TIMINGS = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput",
           "engine_build_s"}


def _machine() -> str:
    import ray

    model = cpu_model()
    return (f"date {utc_now()}; nproc "
            f"{os.cpu_count()}; cpu {model}; python {platform.python_version()}; ray "
            f"{ray.__version__}; load average {_load()}")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(fh)]


def bench_sweep(tmp: Path, ray_ex: Any, repeats: int) -> None:
    from quantkit._log import set_progress
    from quantkit.demo import prepare_demo
    from quantkit.sweep import run_sweep

    set_progress(False)
    recipe = prepare_demo(tmp / "demo")
    print(f"\n== sweep: demo recipe (7 configs), load average before {_load()}")
    for rep in range(repeats):  # alternating, so that a change of load hits both
        t = time.perf_counter()
        local = run_sweep(recipe, tmp / "sweep-local", force=True)
        t_local = time.perf_counter() - t
        print(f"[{rep}] local executor (in-process, in order): {t_local:.1f} s; "
              f"load average {_load()}")
        t = time.perf_counter()
        remote = run_sweep(recipe, tmp / "sweep-ray", force=True, executor=ray_ex)
        t_ray = time.perf_counter() - t
        print(f"[{rep}] ray executor ({ray_ex.parallelism} tasks at once): {t_ray:.1f} s "
              f"(ratio {t_ray / t_local:.2f}); load average {_load()}")
    same = _rows(tmp / "sweep-local" / "results.csv") == _rows(tmp / "sweep-ray" / "results.csv")
    print(f"results.csv identical minus timing columns: {'yes' if same else 'NO'}; "
          f"status {[r['status'] for r in remote.rows]} (local "
          f"{[r['status'] for r in local.rows]})")


def bench_sensitivity(ray_ex: Any, repeats: int) -> None:
    from quantkit.capture import calibrate
    from quantkit.demo import asset
    from quantkit.model import load_model
    from quantkit.sweep import Evaluator, layer_sensitivity

    model = asset("demo_cnn.onnx")
    with np.load(asset("demo_data.npz"), allow_pickle=False) as d:
        cal = d["calibration"].astype(np.float32)[:, None] / 255.0
        x = d["evaluation"].astype(np.float32)[:, None] / 255.0
        labels = d["evaluation_labels"].astype(np.int64)
    scales = calibrate(model, cal, method="entropy", batch_size=64).scales
    fp = load_model(model)
    ev = Evaluator(str(model), [{"input": x[i: i + 100]} for i in range(0, len(x), 100)],
                   labels, "top1")
    print(f"\n== sensitivity: demo model, {len(x)} samples, load average before {_load()}")
    loc, rem = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        local = layer_sensitivity(fp, scales, ev)
        loc.append(time.perf_counter() - t)
        t = time.perf_counter()
        on_ray = layer_sensitivity(fp, scales, ev, executor=ray_ex, threads=1)
        rem.append(time.perf_counter() - t)
    print(f"{len(local)} layers, {2 * len(local)} probes; identical results: "
          f"{'yes' if on_ray == local else 'NO'}")
    print(f"in-process: {_fmt(loc)}; ray, one task per layer, 1 ORT thread each: {_fmt(rem)}; "
          f"load average {_load()}")


def _fmt(xs: list[float]) -> str:
    runs = ", ".join(f"{v:.2f}" for v in xs)
    return f"median {statistics.median(xs):.2f} s of {len(xs)} ({runs})"


def _noop(x: int) -> int:
    return x


def bench_overhead(tmp: Path, ray_ex: Any) -> None:
    from quantkit.capture import calibrate
    from quantkit.capture.shard import ShardReport, calibrate_sharded
    from quantkit.demo import asset
    from quantkit.sweep.executor import LocalExecutor

    print(f"\n== overhead, load average before {_load()}")
    seq = []
    for i in range(30):
        t = time.perf_counter()
        list(ray_ex.map_unordered(_noop, [i]))
        seq.append(time.perf_counter() - t)
    print(f"one tiny task, submitted and awaited alone (30 times): median "
          f"{1e3 * statistics.median(seq):.1f} ms, min {1e3 * min(seq):.1f} ms")
    for n in (100, 400):
        t = time.perf_counter()
        got = list(ray_ex.map_unordered(_noop, range(n)))
        dt = time.perf_counter() - t
        assert len(got) == n
        print(f"{n} tiny tasks submitted at once: {dt:.2f} s, {1e3 * dt / n:.2f} ms per task")

    model = asset("demo_cnn.onnx")
    with np.load(asset("demo_data.npz"), allow_pickle=False) as d:
        x = d["calibration"].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    views = [np.roll(x, (int(dy), int(dx)), axis=(1, 2)) * rng.uniform(0.6, 1.4)
             for dy, dx in rng.integers(-3, 4, size=(12, 2))]
    data = tmp / "calib.npy"
    np.save(data, np.concatenate(views)[:, None].astype(np.float32))
    t = time.perf_counter()
    ref = calibrate(model, data, method="entropy", batch_size=64)
    single = time.perf_counter() - t
    t = time.perf_counter()
    calibrate_sharded(model, data, executor=LocalExecutor(), shards=1, method="entropy",
                      batch_size=64, threads=1)  # in-process, 1 ORT thread
    single1 = time.perf_counter() - t
    print(f"calibration, {ref.num_samples} samples, entropy, batch 64: single process "
          f"{single:.2f} s (ORT default threads), {single1:.2f} s (1 thread)")
    print("| executor | shards | wall s | sum of task s | slowest task s | "
          "wall - slowest task s | identical |")
    print("|---|---|---|---|---|---|---|")
    # in-process (one shard after the other, no contention) isolates the fixed cost of a
    # shard (ORT session, opening the source); on Ray the shards run 2 at a time
    for name, ex in (("in-process", LocalExecutor()), ("ray", ray_ex)):
        for k in (1, 2, 4):
            report = ShardReport()
            t = time.perf_counter()
            res = calibrate_sharded(model, data, executor=ex, shards=k, method="entropy",
                                    batch_size=64, threads=1, report=report)
            wall = time.perf_counter() - t
            secs = [s["seconds"] for s in report.shards]
            same = res.scales.to_json_dict() == ref.scales.to_json_dict()
            print(f"| {name} | {k} | {wall:.2f} | {sum(secs):.2f} | {max(secs):.2f} | "
                  f"{wall - max(secs):.2f} | {'yes' if same else 'NO'} |")
    print(f"load average after: {_load()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--parts", default="sweep,sensitivity,overhead")
    ap.add_argument("--repeats", type=int, default=3, help="sensitivity repeats")
    ap.add_argument("--sweep-repeats", type=int, default=2)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    import ray

    from quantkit.sweep.ray_executor import RayExecutor

    print(_machine())
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    t = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False,
             logging_level="WARNING")
    print(f"ray.init(num_cpus={args.cpus}): {time.perf_counter() - t:.1f} s (not included "
          "below)")
    ex = RayExecutor()  # the running instance
    list(ex.map_unordered(_noop, range(2 * args.cpus)))  # Ray starts its workers lazily
    try:
        if "sweep" in parts:
            bench_sweep(tmp, ex, args.sweep_repeats)
        if "sensitivity" in parts:
            bench_sensitivity(ex, args.repeats)
        if "overhead" in parts:
            bench_overhead(tmp, ex)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
