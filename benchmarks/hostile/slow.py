"""Slow hostile-input cases (too slow or too big for CI): run them before a release.

Each case drives the real ``quantkit`` command in child processes and checks an outcome that
docs/reliability.md promises:

* ``bigsample``: one sample of 3.2 GB (a model input of 3x16384x16384 float32, the data a
  sparse ``.npy``) under a 2 GiB address-space limit: a clear exit (1, out of memory, or 2),
  never an internal error or a traceback;
* ``race``: two ``sweep`` commands started at the same instant into one folder, several rounds:
  exactly one runs, the other is refused naming it, and the finished folder holds every config;
* ``sigterm``: ``quantize`` of a ~200 MB model terminated with SIGTERM at random instants:
  exit 143 (or 0 if it finished first), never a temporary file or folder left, never a partial
  output;
* ``bigscales``: a 513 MiB "scales file" is refused with exit 2 without reading it.

Usage::

    python -m benchmarks.hostile.slow                  # every case
    python -m benchmarks.hostile.slow --only race,sigterm --rounds 5

Everything is created under ``benchmarks/_work/hostile/`` (git-ignored) and removed afterwards
unless ``--keep``. Exit code 1 when any case fails.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks._harness import REPO as ROOT

WORK = ROOT / "benchmarks" / "_work" / "hostile"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _quantkit(*args: object, preexec: Callable[[], None] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantkit.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout,
                          preexec_fn=preexec, cwd=ROOT)


def _clean_exit(res: subprocess.CompletedProcess[str]) -> str | None:
    """``None`` when the command ended with a clear message, else what went wrong."""
    if "Traceback" in res.stderr or "internal error" in res.stderr:
        return f"exit {res.returncode}: {res.stderr.strip()[-400:]}"
    if res.returncode not in (0, 1, 2):
        return f"exit {res.returncode} (killed?): {res.stderr.strip()[-200:]}"
    return None


def _conv_model(path: Path, side: int) -> Path:
    """Conv(3->4, 3x3) + GlobalAveragePool on an input [N, 3, side, side]."""
    w = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def case_bigsample(folder: Path, rounds: int) -> str | None:
    side = 16384
    model = _conv_model(folder / "big.onnx", side)
    data = folder / "big.npy"
    arr = np.lib.format.open_memmap(data, mode="w+", dtype=np.float32, shape=(2, 3, side, side))
    del arr  # sparse: the file takes no disk until written

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    res = _quantkit("calibrate", model, "--data", data, "--batch-size", "1", "--scales",
                    folder / "s.json", preexec=limit)
    problem = _clean_exit(res)
    if problem is None and res.returncode == 0:
        problem = "a 3.2 GB sample calibrated under a 2 GiB limit?"
    print(f"  bigsample: exit {res.returncode}: {' '.join(res.stderr.split())[-300:]}")
    return problem


def _recipe(folder: Path) -> Path:
    from tests.builders.cnn import small_cnn

    folder.mkdir(parents=True, exist_ok=True)
    small_cnn(folder / "m.onnx")
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    np.save(folder / "y.npy", rng.integers(0, 10, 32))
    configs = "".join(f"  - {{name: c{i}, precision: int8, method: minmax}}\n" for i in range(4))
    (folder / "r.yaml").write_text(
        "model: m.onnx\ndata:\n  calibration: {source: x.npy}\n"
        "  evaluation: {source: x.npy, labels: y.npy}\nconfigs:\n" + configs)
    return folder / "r.yaml"


def case_race(folder: Path, rounds: int) -> str | None:
    recipe = _recipe(folder / "proj")
    for r in range(rounds):
        out = folder / f"out{r}"
        cmd = [sys.executable, "-m", "quantkit.cli.main", "sweep", str(recipe), "-o", str(out)]
        procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  text=True, env=ENV, cwd=ROOT) for _ in range(2)]
        results = [(p.wait(timeout=900), p.stderr.read() if p.stderr else "") for p in procs]
        codes = sorted(c for c, _ in results)
        refusals = [e for c, e in results if c == 2]
        print(f"  race round {r}: exit codes {codes}")
        if codes not in ([0, 2], [0, 0]):
            return f"round {r}: exit codes {codes}: {[e[-300:] for _, e in results]}"
        if codes == [0, 2] and "another quantkit run is writing there" not in refusals[0]:
            return f"round {r}: refusal does not name the holder: {refusals[0][-300:]}"
        done = sorted(p.name for p in (out / "configs").iterdir())
        if done != [f"c{i}" for i in range(4)]:
            return f"round {r}: configs folder holds {done}"
    return None


def _big_model(path: Path, side: int = 4096, layers: int = 3) -> Path:
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((side, side)) / side ** 0.5).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", side])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", side])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def case_sigterm(folder: Path, rounds: int) -> str | None:
    model = _big_model(folder / "big.onnx")
    data = folder / "x.npy"
    np.save(data, np.random.default_rng(1).standard_normal((8, 4096)).astype(np.float32))
    out_dir = folder / "out"
    out_dir.mkdir()
    t0 = time.perf_counter()
    res = _quantkit("quantize", model, "--data", data, "-o", out_dir / "full.onnx")
    full = time.perf_counter() - t0
    if res.returncode != 0:
        return f"the uninterrupted quantize failed: {res.stderr[-300:]}"
    (out_dir / "full.onnx").unlink()
    rng = random.Random(0)
    terminated = 0
    for r in range(rounds):
        delay = rng.uniform(0.1, 0.6) * full
        target = out_dir / f"q{r}.onnx"
        proc = subprocess.Popen([sys.executable, "-m", "quantkit.cli.main", "quantize",
                                 str(model), "--data", str(data), "-o", str(target)],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                env=ENV, cwd=ROOT)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=600)
        err = proc.stderr.read() if proc.stderr else ""
        left = sorted(p.name for p in out_dir.iterdir() if p.name != target.name)
        print(f"  sigterm round {r}: after {delay:.1f} s of ~{full:.1f} s: exit {code}, "
              f"left {left}")
        if code not in (0, 143) or "Traceback" in err:
            return f"round {r}: exit {code}: {err[-300:]}"
        if left:
            return f"round {r}: left behind {left}"
        if code == 143 and target.exists():
            return f"round {r}: a terminated run left {target.name}"
        terminated += code == 143
        if target.exists():
            target.unlink()
    if terminated == 0:
        return "no round was terminated before it finished; run more --rounds"
    return None


def case_bigscales(folder: Path, rounds: int) -> str | None:
    path = folder / "huge.json"
    with open(path, "wb") as fh:
        fh.write(b"{")
        fh.truncate((512 << 20) + 1)
    t0 = time.perf_counter()
    res = _quantkit("cache", "show", path)
    took = time.perf_counter() - t0
    print(f"  bigscales: exit {res.returncode} in {took:.1f} s: {res.stderr.strip()[:120]}")
    if res.returncode != 2 or "bytes; not a scales file" not in " ".join(res.stderr.split()):
        return f"exit {res.returncode}: {res.stderr[-300:]}"
    return None


CASES: dict[str, Callable[[Path, int], str | None]] = {
    "bigsample": case_bigsample, "race": case_race, "sigterm": case_sigterm,
    "bigscales": case_bigscales,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of race and sigterm")
    parser.add_argument("--keep", action="store_true", help="keep benchmarks/_work/hostile")
    args = parser.parse_args()
    failed = []
    for name in args.only.split(","):
        folder = WORK / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            problem = CASES[name](folder, args.rounds)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        verdict = "ok" if problem is None else f"FAILED: {problem}"
        print(f"{name}: {verdict} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if problem is not None:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
