#!/usr/bin/env python
"""Calibration benchmarks for quantkit: peers, overhead, flat memory, big file, KL search.

Run ``python -m benchmarks.calibration.run --help`` from the repository root. Every measured
tool runs in its own subprocess, so peaks of different tools never mix. Its peak RSS is the
child's own ``VmHWM``
(``/proc/self/status``, read at its end): ``ru_maxrss`` from ``os.wait4`` is recorded too but
is not used, because Linux carries the parent's RSS high-water mark into a child across
fork/exec (a child of an 800 MB parent reports ``ru_maxrss`` = 800 MB with ``VmHWM`` = 13 MB).
A sampler thread inside the child (10 ms period) splits the peak into anonymous memory
(``RssAnon``: heap, arrays) and file-backed pages (``RssFile``: shared libraries, memory-mapped
data). Wall times are taken inside the child around the measured call (imports excluded) and,
for reference, around the whole process.

Sections (``--only``):

* ``peers``    quantkit entropy vs ONNX Runtime's entropy calibrator vs ModelOpt ONNX PTQ
               (own venv under ``benchmarks/_work/venv-modelopt``), ResNet-18, 512 samples.
* ``overhead`` quantkit calibration vs plain ONNX Runtime inference with the same outputs.
* ``flat``     quantkit peak RSS with N and 8N samples.
* ``bigfile``  quantkit on a 2 GiB ``.npy`` (created, then deleted unless ``--keep``).
* ``kl``       ``quantkit.calibrators.entropy_amax`` vs a reference-style Python loop.

Results: a Markdown report on stdout (and ``--markdown``), JSON in ``--json``.
Helpers: ``workers.py`` (what runs in each child; only the standard library at module level,
so the ModelOpt venv can run its worker without quantkit), ``report.py`` (the Markdown),
``models.py`` (models and data); the child processes through ``benchmarks/_harness.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import _harness as harness
from benchmarks._harness import REPO, cpu_model, log
from benchmarks.calibration.report import TARGETS, render
from benchmarks.calibration.workers import worker_main

MODULE = "benchmarks.calibration.run"
WORK = REPO / "benchmarks" / "_work"
SECTIONS = ("peers", "overhead", "flat", "bigfile", "kl")


def run_worker(name: str, params: dict, *, python: str = sys.executable,
               timeout: float = 600, tag: str | None = None,
               env_extra: dict[str, str] | None = None) -> dict:
    """Run one worker in a child process; return its result, wall time and peak RSS.

    ``ru_maxrss`` of a child also holds the parent's RSS at fork/exec time (Linux keeps the old
    mm's high-water mark across exec), so the peak used is the child's own VmHWM, read from
    /proc/self/status at its end; ``ru_maxrss`` is kept for reference.
    """
    tag = tag or name
    log(f"{tag}: running ({Path(python).parent.parent.name}/bin/python)")
    out = harness.run_worker(MODULE, name, params, result=WORK / f"{tag}.result.json",
                             log_file=WORK / f"{tag}.log", python=python, timeout=timeout,
                             env_extra=env_extra, keep_pythonpath=True)
    if out["ok"]:
        log(f"{tag}: {out['time_s']:.1f} s, peak RSS {out['peak_rss_mb']:.0f} MB, "
            f"CPU {out['cpu_s']:.0f} s, load {out['loadavg_1min'][0]:.1f}->"
            f"{out['loadavg_1min'][1]:.1f}")
    else:
        log(f"{tag}: FAILED (rc={out['returncode']}, timed_out={out['timed_out']}); "
            f"see {out['log']}")
    return out


def machine_info() -> dict:
    import numpy
    import onnx
    import onnxruntime
    import scipy

    cpu = cpu_model()
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    osrel = {}
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            osrel[k] = v.strip('"')
    versions = {"python": platform.python_version(), "numpy": numpy.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "scipy": scipy.__version__}
    for mod in ("torch", "quantkit"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            versions[mod] = "not importable"
    import hashlib

    h = hashlib.sha256()
    for f in sorted((REPO / "quantkit").rglob("*.py")):
        h.update(f.read_bytes())
    return {"quantkit_sources_sha256": h.hexdigest()[:16],
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu, "cores": os.cpu_count(), "mem_total_gib": round(mem / 1024**2, 1),
            "os": f"{osrel.get('PRETTY_NAME', '?')}; kernel {platform.release()}",
            "versions": versions, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "argv": sys.argv}


# ---------------------------------------------------------------- ModelOpt venv
def ensure_modelopt_venv(timeout: float) -> dict:
    """Create benchmarks/_work/venv-modelopt (torch CPU wheel, then nvidia-modelopt[onnx])."""
    venv = WORK / "venv-modelopt"
    py = venv / "bin" / "python"
    marker = venv / "quantkit-bench-install.json"
    probe = [str(py), "-c", "import modelopt, onnxruntime, onnx; import modelopt.onnx."
             "quantization; print(modelopt.__version__, onnxruntime.__version__, onnx.__version__)"]
    if py.exists() and marker.exists():
        r = subprocess.run(probe, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            info = json.loads(marker.read_text())
            info.update(reused=True, python=str(py), versions=r.stdout.split()[-3:])
            return info
    shutil.rmtree(venv, ignore_errors=True)
    t0 = time.perf_counter()
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(py), "-m", "pip", "install", "torch==2.13.0"],
             [str(py), "-m", "pip", "install", "nvidia-modelopt[onnx]"]]
    with open(WORK / "venv-modelopt-install.log", "w") as lf:
        for cmd in steps:
            log("modelopt venv: " + " ".join(cmd[-3:]))
            left = timeout - (time.perf_counter() - t0)
            try:
                r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"install took longer than {timeout:.0f} s"}
            if r.returncode:
                return {"ok": False, "error": f"`{' '.join(cmd[-3:])}` failed (rc {r.returncode});"
                        " see benchmarks/_work/venv-modelopt-install.log"}
    r = subprocess.run(probe, capture_output=True, text=True, timeout=300)
    if r.returncode:
        return {"ok": False, "error": "modelopt installed but not importable: " + r.stderr[-500:]}
    info = {"ok": True, "install_s": round(time.perf_counter() - t0, 1),
            "installed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    marker.write_text(json.dumps(info))
    info.update(reused=False, python=str(py), versions=r.stdout.split()[-3:])
    return info


# ---------------------------------------------------------------- inputs
def prepare_inputs(args: argparse.Namespace) -> dict:
    from benchmarks.calibration import models as _models

    WORK.mkdir(parents=True, exist_ok=True)
    paths = {"resnet18": WORK / f"resnet18_{args.size}.onnx",
             "small_cnn": WORK / f"small_cnn_{args.size}.onnx",
             "data": WORK / f"smooth_{args.size}_{args.samples}.npy"}
    if not paths["resnet18"].exists():
        _models.resnet18(paths["resnet18"], args.size)
    if not paths["small_cnn"].exists():
        _models.small_cnn(paths["small_cnn"], args.size)
    if not paths["data"].exists():
        t0 = time.perf_counter()
        _models.write_smooth_images(paths["data"], args.samples, args.size)
        log(f"wrote {paths['data'].name} in {time.perf_counter() - t0:.1f} s")
    return {k: str(v) for k, v in paths.items()}


def rel_diffs(a: dict, b: dict) -> dict:
    import numpy as np

    common = sorted(set(a) & set(b))
    if not common:
        return {"common": 0}
    d = np.array([abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in common])
    return {"common": len(common), "median_rel": float(np.median(d)), "max_rel": float(d.max()),
            "within_10pct": int((d <= 0.10).sum())}


# ---------------------------------------------------------------- sections
def section_peers(args, inp, R) -> None:
    common = {"model": inp["resnet18"], "data": inp["data"], "batch_size": args.batch_size,
              "max_samples": args.samples}
    R["peers"] = peers = {"model": f"ResNet-18 (random weights), input 1x3x{args.size}x"
                          f"{args.size} dynamic batch", "samples": args.samples,
                          "batch_size": args.batch_size}
    peers["quantkit"] = run_worker("quantkit", common, tag="peers-quantkit")
    peers["ort"] = run_worker("ort", dict(common, augmented=str(WORK / "ort_augmented.onnx")),
                              tag="peers-ort", timeout=args.peer_timeout)
    if args.no_modelopt:
        peers["modelopt"] = {"ok": False, "skipped": "--no-modelopt"}
    else:
        venv = ensure_modelopt_venv(args.modelopt_install_timeout)
        peers["modelopt_venv"] = venv
        if venv.get("ok", True) and "python" in venv:
            peers["modelopt"] = run_worker(
                "modelopt", dict(common, output=str(WORK / "modelopt_quant.onnx")),
                python=venv["python"], tag="peers-modelopt", timeout=args.peer_timeout)
        else:
            peers["modelopt"] = {"ok": False, "skipped": venv.get("error")}
    qk = peers["quantkit"]
    if not qk["ok"]:
        return
    for peer in ("ort", "modelopt"):
        pr = peers[peer]
        if pr.get("ok"):
            pr["wall_ratio"] = qk["time_s"] / pr["time_s"]
            pr["rss_ratio"] = qk["peak_rss_mb"] / pr["peak_rss_mb"]
            pr["cpu_ratio"] = qk["cpu_s"] / pr["cpu_s"]  # process CPU time, less load-sensitive
            pr["agreement_vs_quantkit"] = rel_diffs(qk["amax"], pr["amax"])
            pr["agreement_vs_absmax"] = rel_diffs(pr["amax"], qk["absmax"])
    peers["quantkit"]["agreement_vs_absmax"] = rel_diffs(qk["amax"], qk["absmax"])


def section_overhead(args, inp, R) -> None:
    common = {"model": inp["resnet18"], "data": inp["data"], "batch_size": args.batch_size,
              "max_samples": args.samples}
    ov = R["overhead"] = {"repeats": args.repeats, "runs": []}
    # quantkit as configured (the numba kernel when importable) and, for the same-run
    # before/after, quantkit forced onto its numpy binning path
    variants = {"plain": ("plain", None), "quantkit": ("quantkit", None),
                "quantkit-numpy": ("quantkit", {"QUANTKIT_HISTOGRAM_KERNEL": "numpy"})}
    for i in range(args.repeats):  # alternate, so all see the same machine load
        for name, (worker, env) in variants.items():
            ov["runs"].append(dict(run_worker(worker, common, tag=f"overhead-{name}-{i + 1}",
                                              env_extra=env), worker=name))
    ok = [r for r in ov["runs"] if r.get("ok")]
    for name in variants:
        mine = [r for r in ok if r["worker"] == name]
        if mine:
            ov[name] = min(mine, key=lambda r: r["time_s"])
    if "plain" in ov and "quantkit-numpy" in ov:
        ov["ratio_numpy_path"] = ov["quantkit-numpy"]["time_s"] / ov["plain"]["time_s"]
        ov["cpu_ratio_numpy_path"] = ov["quantkit-numpy"]["cpu_s"] / ov["plain"]["cpu_s"]
    for r in ov["runs"]:
        r.pop("amax", None)
        r.pop("absmax", None)
    if "plain" in ov and "quantkit" in ov:
        ov["ratio"] = ov["quantkit"]["time_s"] / ov["plain"]["time_s"]
        ov["cpu_ratio"] = ov["quantkit"]["cpu_s"] / ov["plain"]["cpu_s"]
        if ov["ratio"] > TARGETS["overhead"] or args.profile:
            ov["profile"] = run_worker(
                "profile", dict(common, max_samples=args.profile_samples,
                                pstats=str(WORK / "quantkit_calibrate.pstats")),
                tag="overhead-profile")


def section_flat(args, inp, R) -> None:
    from benchmarks.calibration import models as _models

    n = args.flat_n
    data = WORK / f"smooth_{args.size}_{8 * n}.npy"
    if not data.exists():
        _models.write_smooth_images(data, 8 * n, args.size)
    fl = R["flat"] = {"model": f"small CNN, input 3x{args.size}x{args.size}", "data": data.name,
                      "n": n, "runs": []}
    plan = [("library", k) for k in (n, 2 * n, 4 * n, 8 * n)]
    if not args.no_diagnostics:
        plan += [("plain-read", n), ("plain-read", 8 * n)]
    for reader, k in plan:
        r = run_worker("quantkit", {"model": inp["small_cnn"], "data": str(data), "reader": reader,
                                    "batch_size": args.batch_size, "max_samples": k},
                       tag=f"flat-{reader}-{k}")
        r.pop("amax", None)
        r.pop("absmax", None)
        fl["runs"].append(dict(r, reader=reader, max_samples=k))
    for reader in ("library", "plain-read"):
        pair = [r for r in fl["runs"] if r["reader"] == reader and r["max_samples"] in (n, 8 * n)]
        if len(pair) == 2 and all(r["ok"] for r in pair):
            fl[f"growth_{reader}"] = pair[1]["peak_rss_mb"] / pair[0]["peak_rss_mb"] - 1
            fl[f"growth_anon_{reader}"] = pair[1]["peak_anon_mb"] / pair[0]["peak_anon_mb"] - 1


def section_bigfile(args, inp, R) -> None:
    import numpy as np

    from benchmarks.calibration import models as _models

    bf = R["bigfile"] = {}
    path = WORK / "bigfile.npy"
    sample = 3 * args.size * args.size
    n = -(-args.bigfile_bytes // (4 * sample))
    free = shutil.disk_usage(WORK).free
    bf.update(target_bytes=args.bigfile_bytes, samples=n, disk_free_gb=free / 1e9)
    if free < 2 * args.bigfile_bytes + (1 << 30):
        bf["skipped"] = f"only {free / 1e9:.1f} GB free on {WORK}"
        return
    if not (path.exists() and np.load(path, mmap_mode="r").shape == (n, 3, args.size, args.size)):
        t0 = time.perf_counter()
        _models.write_smooth_images(path, n, args.size, seed=7, chunk=128)
        bf["create_s"] = time.perf_counter() - t0
        log(f"bigfile: wrote {path.stat().st_size / 1e9:.2f} GB in {bf['create_s']:.1f} s")
    bf["file_bytes"] = path.stat().st_size
    try:
        for reader in ("library",) + (() if args.no_diagnostics else ("plain-read",)):
            r = run_worker("quantkit", {"model": inp["small_cnn"], "data": str(path),
                                        "batch_size": args.batch_size, "reader": reader},
                           tag=f"bigfile-{reader}", timeout=args.peer_timeout)
            r.pop("amax", None)
            r.pop("absmax", None)
            bf[reader] = r
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            bf["deleted"] = True


def reference_entropy_amax(counts, width: float, start_bin: int = 128, levels: int = 128):
    """The reference's per-candidate Python loop.

    docs/tensorrt_rules.md#entropy-calibration, steps 3-5.
    """
    import numpy as np
    from scipy.stats import entropy

    bins = np.array(counts, dtype=np.int64)
    bins[0] = bins[1]
    kls, cands = [], []
    for i in range(start_bin, len(bins) + 1):
        p = bins[:i].astype(np.float64)
        p[i - 1] += bins[i:].sum()
        level = np.digitize(range(i), np.linspace(0, i, levels + 1)) - 1
        sums = [0.0] * levels
        nums = [0] * levels
        for j in range(i):  # the reference spreads each level over its non-empty bins in Python
            if bins[j] != 0:
                sums[level[j]] += bins[j]
                nums[level[j]] += 1
        q = np.zeros(i)
        for j in range(i):
            if bins[j] != 0:
                q[j] = sums[level[j]] / nums[level[j]]
        with np.errstate(invalid="ignore", divide="ignore"):
            kl = entropy(p, q) if q.sum() > 0 else np.nan
        if not np.isnan(kl):  # skip NaN candidates (step 5)
            kls.append(kl)
            cands.append(i)
    kls = np.array(kls)
    last = len(kls) - 1 - int(np.argmin(kls[::-1]))
    return float(np.float32(cands[last] * width))


def section_kl(args, inp, R) -> None:
    import numpy as np

    from quantkit.calibrators import entropy_amax

    rng = np.random.default_rng(3)  # a ReLU'd, heavy-tailed activation: 2048-bin |x| histogram
    x = np.maximum(rng.standard_t(4, 2_000_000).astype(np.float32), 0)
    hi = float(np.abs(x).max())
    counts, _ = np.histogram(np.abs(x), bins=2048, range=(0, hi))
    width = hi / 2048
    entropy_amax(counts, width)  # warm-up
    times = []
    for _ in range(args.kl_runs):
        t0 = time.perf_counter()
        fast = entropy_amax(counts, width)
        times.append(time.perf_counter() - t0)
    ref_times = []
    for _ in range(args.kl_ref_runs):
        t0 = time.perf_counter()
        ref = reference_entropy_amax(counts, width)
        ref_times.append(time.perf_counter() - t0)
    med, ref_med = float(np.median(times)), float(np.median(ref_times))
    R["kl"] = {"bins": 2048, "candidates": 2048 - 128 + 1, "runs": args.kl_runs,
               "median_ms": med * 1e3, "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
               "ref_runs": args.kl_ref_runs, "ref_median_ms": ref_med * 1e3,
               "speedup": ref_med / med, "amax": fast, "ref_amax": ref, "same_amax": fast == ref}
    log(f"kl: {med * 1e3:.1f} ms vs reference loop {ref_med * 1e3:.0f} ms")


# ---------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--size", type=int, default=224, help="image side of the models' input")
    ap.add_argument("--samples", type=int, default=512, help="calibration samples (peers)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--flat-n", type=int, default=64, help="N for the flat test (N vs 8N)")
    ap.add_argument("--bigfile-bytes", type=int, default=2 << 30)
    ap.add_argument("--keep", action="store_true", help="keep the big .npy file")
    ap.add_argument("--kl-runs", type=int, default=200)
    ap.add_argument("--kl-ref-runs", type=int, default=3)
    ap.add_argument("--no-modelopt", action="store_true", help="skip the ModelOpt peer")
    ap.add_argument("--modelopt-install-timeout", type=float, default=600)
    ap.add_argument("--peer-timeout", type=float, default=600, help="seconds per peer run")
    ap.add_argument("--profile", action="store_true",
                    help="profile quantkit even when the overhead target is met")
    ap.add_argument("--profile-samples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2,
                    help="alternating plain/quantkit runs in the overhead section (best taken)")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="skip the diagnostic runs (quantkit with a read()-based .npy reader)")
    ap.add_argument("--ort-threads", type=int, default=0,
                    help="intra-op threads of every ONNX Runtime session in the workers "
                         "(0: ONNX Runtime's default). Use it when the run is confined to fewer "
                         "CPUs than the host has (cgroup cpuset), else ORT oversubscribes them")
    ap.add_argument("--json", default=str(WORK / "results.json"))
    ap.add_argument("--markdown", default=str(WORK / "results.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.params, args.result)
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    WORK.mkdir(parents=True, exist_ok=True)
    if args.ort_threads:
        os.environ["QK_BENCH_ORT_THREADS"] = str(args.ort_threads)  # read by the workers
    t0 = time.perf_counter()
    R: dict[str, Any] = {"machine": machine_info(), "sections": only,
                         "ort_threads": args.ort_threads or "ONNX Runtime default",
                         "cpus_allowed": sorted(os.sched_getaffinity(0))}
    inp = prepare_inputs(args)
    funcs = {"peers": section_peers, "overhead": section_overhead, "flat": section_flat,
             "bigfile": section_bigfile, "kl": section_kl}
    for s in SECTIONS:
        if s in only:
            funcs[s](args, inp, R)
    R["total_wall_s"] = time.perf_counter() - t0
    md = render(R) + f"\nTotal benchmark wall time: {R['total_wall_s']:.0f} s\n"
    Path(args.json).write_text(json.dumps(R, indent=1, default=str))
    Path(args.markdown).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
