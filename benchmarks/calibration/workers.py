"""Workers of ``calibration/run.py``: each runs one measured tool inside its own child process.

Run as ``python -m benchmarks.calibration.run --worker NAME --params JSON --result PATH``. Only
the standard library is imported at module level, so the ModelOpt venv (which has no quantkit)
can run its worker.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks._harness import REPO, serve


def _npy_batches(path: str, batch_size: int, n: int):
    import numpy as np

    mm = np.load(path, mmap_mode="r")
    n = min(n, len(mm))
    for lo in range(0, n, batch_size):
        yield np.array(mm[lo:min(n, lo + batch_size)])


def _hist_absmax(hist: Any) -> float:
    """max|x| as seen by a quantkit histogram (upper edge of its last non-empty bin)."""
    import numpy as np

    nz = np.flatnonzero(hist.counts)
    return float((nz[-1] + 1) * hist.width) if len(nz) else 0.0


def _patch_npy_plain_read() -> None:
    """Diagnostic only: make NpySource read batches with read() instead of a memory map.

    The pages of a memory-mapped file that a process has touched count in its RSS (RssFile)
    until the kernel reclaims them; batches read with ``readinto`` leave no such pages.
    """
    from contextlib import contextmanager

    import numpy as np

    import quantkit.data.npy as npy
    from quantkit.data.rows import as_slice, read_rows

    @contextmanager
    def _open(self):
        header = np.load(self.path, mmap_mode="r")
        offset, shape, dtype = header.offset, header.shape, header.dtype
        del header
        row = int(np.prod(shape[1:])) * dtype.itemsize
        with open(self.path, "rb", buffering=0) as fp:
            def read(chunk):
                window = as_slice(chunk)
                if window is None:  # not contiguous (seeded subsets): as the library does
                    return read_rows(np.load(self.path, mmap_mode="r"), chunk)
                out = np.empty((window.stop - window.start, *shape[1:]), dtype=dtype)
                fp.seek(offset + window.start * row)
                fp.readinto(memoryview(out).cast("B"))
                return out
            yield {self._name: read}

    npy.NpySource._open = _open


def w_quantkit(p: dict) -> dict:
    from quantkit.calibrators import create_calibrator
    from quantkit.capture import ActivationCapture, calibrate

    if p.get("reader") == "plain-read":
        _patch_npy_plain_read()
    # Phase timers: ORT runs and histogram updates, without a profiler's overhead.
    # run_cpu_s: CPU time of all the process's threads during session.run (ORT's parallelism).
    spent = {"run_batch_s": 0.0, "run_cpu_s": 0.0, "update_many_s": 0.0}
    run_batch = ActivationCapture.run_batch

    def timed_run_batch(self, batch):
        t, c = time.perf_counter(), time.process_time()
        try:
            return run_batch(self, batch)
        finally:
            spent["run_batch_s"] += time.perf_counter() - t
            spent["run_cpu_s"] += time.process_time() - c

    ActivationCapture.run_batch = timed_run_batch
    cal = create_calibrator("entropy")
    update_many = cal.update_many

    def timed_update_many(tensors):
        t = time.perf_counter()
        update_many(tensors)
        spent["update_many_s"] += time.perf_counter() - t

    cal.update_many = timed_update_many
    t0 = time.perf_counter()
    res = calibrate(p["model"], p["data"], method="entropy", batch_size=p["batch_size"],
                    max_samples=p.get("max_samples"), calibrator=cal)
    dt = time.perf_counter() - t0
    amax = res.scales.amaxes
    absmax = {n: _hist_absmax(res.calibrator.histogram(n)) for n in res.tensors}
    from quantkit.calibrators._kernel import get_kernel

    return {"time_s": dt, "num_samples": res.num_samples, "amax": dict(amax), "absmax": absmax,
            "histogram_kernel": "numpy" if get_kernel() is None else "numba", **spent}


def w_ort(p: dict) -> dict:
    import numpy as np
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = _npy_batches(p["data"], p["batch_size"], p["max_samples"])

        def get_next(self):
            return next(({"input": b} for b in self.it), None)

    t0 = time.perf_counter()
    cal = create_calibrator(p["model"], None, augmented_model_path=p["augmented"],
                            calibrate_method=CalibrationMethod.Entropy)
    cal.collect_data(Reader())
    data = cal.compute_data()
    dt = time.perf_counter() - t0
    amax = {}
    for name, td in data.items():
        lo, hi = td.range_value
        amax[name] = float(max(abs(np.float64(lo)), abs(np.float64(hi))))
    return {"time_s": dt, "amax": amax, "num_bins": cal.num_bins,
            "num_quantized_bins": cal.num_quantized_bins}


def w_modelopt(p: dict) -> dict:
    import numpy as np
    import onnx
    from modelopt.onnx.quantization import quantize
    from onnx import numpy_helper

    data = np.load(p["data"], mmap_mode="r")[: p["max_samples"]]
    shape = "x".join(str(d) for d in (p["batch_size"], *data.shape[1:]))
    t0 = time.perf_counter()
    quantize(onnx_path=p["model"], quantize_mode="int8", calibration_data=data,
             calibration_method="entropy", calibration_shapes=f"input:{shape}",
             calibration_eps=["cpu"], output_path=p["output"], log_level="WARNING")
    dt = time.perf_counter() - t0
    model = onnx.load(p["output"])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    inits.update(consts)
    amax = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            scale = np.asarray(inits[node.input[1]], dtype=np.float64)
            if scale.size == 1:
                amax[node.input[0]] = float(scale.reshape(()) * 127.0)
    return {"time_s": dt, "amax": amax}


def w_plain(p: dict) -> dict:
    """Plain ONNX Runtime inference with the same exposed outputs and session settings."""
    import onnx
    import onnxruntime as ort

    from quantkit.model import activation_tensors

    t0 = time.perf_counter()
    model = onnx.load(p["model"])
    existing = {o.name for o in model.graph.output}
    acts = activation_tensors(model)
    for a in acts:
        if a.name not in existing:  # exactly what ActivationCapture adds (graph input too)
            model.graph.output.append(onnx.ValueInfoProto(name=a.name))
    opts = ort.SessionOptions()  # as quantkit's _make_session: defaults, log level 3
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    n, run_s, run_cpu_s = 0, 0.0, 0.0
    for batch in _npy_batches(p["data"], p["batch_size"], p["max_samples"]):
        t, c = time.perf_counter(), time.process_time()
        sess.run(names, {"input": batch})
        run_s += time.perf_counter() - t
        run_cpu_s += time.process_time() - c
        n += len(batch)
    return {"time_s": time.perf_counter() - t0, "run_s": run_s, "run_cpu_s": run_cpu_s,
            "num_samples": n,
            "outputs": len(names),
            "intra_op_threads_default": opts.intra_op_num_threads}


def w_profile(p: dict) -> dict:
    """cProfile of quantkit calibration: top functions and per-phase cumulative times."""
    import cProfile
    import pstats

    from quantkit.capture import calibrate

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(calibrate, p["model"], p["data"], method="entropy",
                 batch_size=p["batch_size"], max_samples=p["max_samples"])
    total = time.perf_counter() - t0
    prof.dump_stats(p["pstats"])
    st = pstats.Stats(prof)

    def label(fn: tuple) -> str:
        path, line, name = fn
        if path == "~":
            return name
        short = path.split("site-packages/")[-1].split(str(REPO) + "/")[-1]
        return f"{short}:{line}({name})"

    rows = [{"function": label(fn), "ncalls": v[1], "tottime_s": v[2], "cumtime_s": v[3]}
            for fn, v in st.stats.items()]
    top_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:20]
    # Phases by the cumulative time of quantkit's own functions (names as of this commit).
    phases = {
        "run_batch": "ORT inference (ActivationCapture.run_batch)",
        "update_many": "histogram updates (Calibrator.update_many)",
        "compute_amax": "KL search (Calibrator.compute_amax)",
        "validate_batch": "batch validation (validate_batch)",
        "read_rows": "data read (.npy memmap copy, read_rows)",
        "load_model": "model load + onnx checker (load_model)",
        "activation_tensors": "shape inference (activation_tensors)",
        "_make_session": "session creation (_make_session)",
    }
    phase_rows = []
    for key, title in phases.items():
        cum = max((r["cumtime_s"] for r in rows if r["function"].endswith(f"({key})")
                   and "quantkit/" in r["function"]), default=0.0)
        phase_rows.append({"phase": title, "time_s": cum, "share": cum / total})
    rest = total - sum(r["time_s"] for r in phase_rows if "validate" not in r["phase"])
    phase_rows.append({"phase": "everything else (isfinite check, glue)", "time_s": rest,
                       "share": rest / total})
    return {"time_s": total, "top_tottime": top_tot, "phases": phase_rows}


WORKERS = {"quantkit": w_quantkit, "ort": w_ort, "modelopt": w_modelopt, "plain": w_plain,
           "profile": w_profile}


def _pin_ort_threads() -> None:
    """``--ort-threads N``: every ONNX Runtime session of this worker (quantkit's, the plain
    baseline's and ORT's own calibrator's) gets ``intra_op_num_threads = N``. Needed where the
    process is confined to fewer CPUs than the host has (a cpuset cgroup): ONNX Runtime sizes
    its pool from the host's cores, ignores the cgroup and oversubscribes the allowed CPUs."""
    threads = int(os.environ.get("QK_BENCH_ORT_THREADS", "0") or 0)
    if threads <= 0:
        return
    import onnxruntime as ort

    base_options = ort.SessionOptions

    class PinnedOptions(base_options):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = threads

    ort.SessionOptions = PinnedOptions


def worker_main(name: str, params: str, result: str) -> None:
    _pin_ort_threads()
    serve(WORKERS, name, params, result)
