"""Sharded calibration on Ray vs a single-process run on the same data (docs/ray.md).

    .venv/bin/python -m benchmarks.ray.calibration [--views 12] [--shards 2] [--method entropy]

Prints: identical scales (yes/no), single-process wall time, sharded wall time (Ray already
started: the instance start-up is reported apart), the ratio, and per-shard task time vs the
time spent in the shard's calibration loop (the difference is Ray's per-shard overhead plus
the ONNX Runtime session creation each shard needs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from quantkit.capture import calibrate
from quantkit.capture.shard import ShardReport, calibrate_sharded
from quantkit.demo import asset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=12, help="x256 demo digits")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--method", default="entropy")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    import ray

    from quantkit.sweep.ray_executor import RayExecutor

    model = asset("demo_cnn.onnx")
    with np.load(asset("demo_data.npz"), allow_pickle=False) as d:
        x = d["calibration"].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    views = [np.roll(x, (int(dy), int(dx)), axis=(1, 2)) * rng.uniform(0.6, 1.4)
             for dy, dx in rng.integers(-3, 4, size=(args.views, 2))]
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "calib.npy"
    np.save(data, np.concatenate(views)[:, None].astype(np.float32))
    print(f"load average before: {os.getloadavg()}; cpus: {os.cpu_count()}")

    t = time.perf_counter()
    ref = calibrate(model, data, method=args.method, batch_size=args.batch_size)
    single = time.perf_counter() - t

    t = time.perf_counter()
    ray.init(address="local", num_cpus=args.shards, include_dashboard=False,
             logging_level="WARNING")
    startup = time.perf_counter() - t
    ex = RayExecutor()
    # warm-up: Ray starts its worker processes lazily
    list(ex.map_unordered(abs, range(args.shards)))
    report = ShardReport()
    t = time.perf_counter()
    res = calibrate_sharded(model, data, executor=ex, shards=args.shards, method=args.method,
                            batch_size=args.batch_size, threads=1, report=report)
    sharded = time.perf_counter() - t
    ray.shutdown()
    same = res.scales.to_json_dict() == ref.scales.to_json_dict()
    print(f"samples {ref.num_samples}, batches of {args.batch_size}, method {args.method}")
    print(f"identical scales: {'yes' if same else 'NO'}")
    print(f"single process: {single:.2f} s; sharded on Ray ({args.shards} shards, 1 ORT thread "
          f"each, prefix {report.prefix_batches} batch on the driver): {sharded:.2f} s; "
          f"ratio {sharded / single:.2f}; Ray start-up {startup:.1f} s (not included)")
    for s in report.shards:
        print(f"  shard {s['index']}: {s['samples']} samples, {s['seconds']:.2f} s in the task")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
