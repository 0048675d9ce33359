"""A sweep killed with SIGKILL mid-config resumes without redoing finished configs.

The sweep runs in a subprocess on the shipped demo model and data (a few configs, small data).
The test waits until at least one config is finished and the next one is being staged, kills
the process with SIGKILL (no cleanup handlers run), checks what is on disk, re-runs the sweep
and compares with an uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from quantkit.demo import prepare_demo

RECIPE = """\
name: demo-kill-resume
model: demo_cnn.onnx
metric: top1
data:
  calibration: {source: data/calibration.npy, batch_size: 32, max_samples: 64}
  evaluation: {source: data/evaluation.npy, labels: data/evaluation_labels.npy,
               batch_size: 50, max_samples: 100}
calibration: {method: entropy}
configs:
  - {name: fp32, precision: fp32}
  - {name: int8-minmax, precision: int8, method: minmax}
  - {name: int8-entropy, precision: int8, method: entropy}
  - {name: int8-percentile, precision: int8, method: percentile, percentile: 99.9}
  - name: mixed
    precision: {default: int8, overrides: [{op_type: Softmax, precision: fp32}]}
latency: {iterations: 2, warmup: 1, batch_size: 1}
"""

TIMING = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput", "engine_build_s",
          "latency_ms_p50_min", "latency_ms_p50_max", "cpu_latency_ms_p50", "cpu_latency_ms_p99",
          "cpu_latency_ms_p50_min", "cpu_latency_ms_p50_max"}


def _recipe(folder: Path) -> Path:
    prepare_demo(folder)
    (folder / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    return folder / "recipe.yaml"


def _sweep(recipe: Path, out: Path, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "quantkit.cli.main", "-v", "-q", "sweep", str(recipe), "-o",
         str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _untimed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _committed(out: Path) -> set[str]:
    configs = out / "configs"
    if not configs.is_dir():
        return set()
    return {p.name for p in configs.iterdir() if not p.name.startswith(".")}


def _kill_mid_config(recipe: Path, out: Path) -> set[str]:
    """Start a sweep, SIGKILL it while a config after the first finished one is staged."""
    proc = _sweep(recipe, out)
    staged: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            done = _committed(out)
            staging = {p.name for p in (out / "configs").glob(".*.partial")} if done else set()
            if done and staging:
                staged = staging
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the sweep finished before it could be killed: " + (
            proc.stderr.read() if proc.stderr else "")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    return staged


def test_sigkill_mid_config_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "work")
    names = ["fp32", "int8-minmax", "int8-entropy", "int8-percentile", "mixed"]

    # reference: an uninterrupted run
    ref = _sweep(recipe, tmp_path / "ref")
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    ref_rows = _rows(tmp_path / "ref" / "results.csv")
    assert [r["config"] for r in ref_rows] == names

    # killed run
    out = tmp_path / "out"
    _kill_mid_config(recipe, out)
    finished = _committed(out)
    assert finished and finished <= set(names)  # (all of them only if the kill raced a commit)
    # every committed config folder is complete; results.csv (if any) has whole rows only,
    # each for a committed config, none twice
    for name in finished:
        folder = out / "configs" / name
        assert (folder / "result.json").is_file() and (folder / "model.onnx").is_file()
    if (out / "results.csv").exists():
        rows = _rows(out / "results.csv")
        assert len({r["config"] for r in rows}) == len(rows)
        assert {r["config"] for r in rows} <= finished
        assert all(r["status"] == "ok" and r["accuracy"] for r in rows)
    stamps = {n: (out / "configs" / n / "result.json").stat().st_mtime_ns for n in finished}
    models = {n: (out / "configs" / n / "model.onnx").read_bytes() for n in finished}

    # resume
    again = _sweep(recipe, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    for name in finished:  # not redone: untouched files, and the log says so
        assert (out / "configs" / name / "result.json").stat().st_mtime_ns == stamps[name]
        assert (out / "configs" / name / "model.onnx").read_bytes() == models[name]
        assert f"{name}: results exist, skipped" in err
        assert f"  {name}: ok" not in err
    for name in set(names) - finished:
        assert f"  {name}: ok" in err
    assert not [p for p in (out / "configs").iterdir() if p.name.startswith(".")]
    assert not [p for p in out.rglob("*.tmp")]

    rows = _rows(out / "results.csv")
    assert [r["config"] for r in rows] == names  # no duplicate, no missing, recipe order
    assert _untimed(rows) == _untimed(ref_rows)
    for name in names:  # the artefacts are the same bytes as the uninterrupted run's
        for artefact in ("model.onnx", "plan.json"):
            a, b = out / "configs" / name / artefact, tmp_path / "ref" / "configs" / name / artefact
            assert a.exists() == b.exists()
            if a.exists():
                assert a.read_bytes() == b.read_bytes(), f"{name}/{artefact} differs"
