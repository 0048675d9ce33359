"""Latency sources in a real small sweep: results.csv, summary.md, report.html; resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.sweep import COLUMNS, load_recipe, run_sweep
from tests.builders.cnn import small_cnn

CONTRACT = ["config", "method", "accuracy", "agreement", "sqnr_db", "latency_ms_p50",
            "latency_ms_p99", "throughput", "model_bytes", "backend", "device",
            "latency_source", "latency_target", "cpu_latency_ms_p50", "cpu_latency_ms_p99"]

RECIPE = """
model: m.onnx
data:
  calibration: {{source: calib.npy, batch_size: 16}}
  evaluation: {{source: val.npy, batch_size: 16}}
calibration: {{method: minmax}}
configs:
  - {{name: fp32, precision: fp32}}
  - {{name: fp16, precision: fp16}}
  - {{name: int8, precision: int8}}
latency: {{iterations: 3, warmup: 1, repeats: 2, batch_size: 8{gpus}}}
"""


def _setup(tmp: Path, gpus: str = "") -> Path:
    small_cnn(tmp / "m.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp / "calib.npy", rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    np.save(tmp / "val.npy", rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    (tmp / "r.yaml").write_text(RECIPE.format(gpus=gpus))
    return tmp / "r.yaml"


def _rows(out: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(out / "results.csv", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = {r["config"]: r for r in reader}
        return list(reader.fieldnames or []), rows


def test_cpu_only_sweep_labels_every_latency(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _setup(tmp_path)
    assert main(["sweep", str(recipe), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    header, rows = _rows(tmp_path / "out")
    assert header[:15] == CONTRACT and header[:len(COLUMNS)] == COLUMNS
    assert [rows[c]["latency_source"] for c in rows] == ["cpu", "cpu", "cpu-fake-quant"]
    for r in rows.values():
        assert r["latency_target"].startswith("CPU: ") and r["latency_batch"] == "8"
        assert r["latency_ms_p50"] == r["cpu_latency_ms_p50"] != ""  # CPU is all there is
        assert r["latency_repeats"] == "2"
        assert float(r["latency_ms_p50_min"]) <= float(r["latency_ms_p50"]) <= \
            float(r["latency_ms_p50_max"])
        # small_cnn's output is a Softmax's: SQNR compares the logits that feed it
        assert r["sqnr_tensor"] == "logits"
    assert "cpu-fake-quant" in out and "latency source" in out
    assert "says nothing about a TensorRT engine's speed" in out
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "**All latency here is ONNX Runtime on this machine's CPU, not TensorRT" in summary
    assert "(cpu-fake-quant) | — |" in summary  # the INT8 row: its source, no speed-up
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="latency-note"' in page and ">not compared<" in page


def test_resume_keeps_environment_and_reports_skipped(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _setup(tmp_path)
    assert main(["sweep", str(recipe), "-o", str(tmp_path / "out")]) == 0
    env = (tmp_path / "out" / "environment.json").read_bytes()
    capsys.readouterr()
    assert main(["sweep", str(recipe), "-o", str(tmp_path / "out")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "resumed: 3 config(s) reuse the results of an earlier run: fp32, fp16, int8" in err
    assert (tmp_path / "out" / "environment.json").read_bytes() == env
    res = run_sweep(recipe, tmp_path / "out", force=True)
    assert res.skipped == []
    assert json.loads((tmp_path / "out" / "environment.json").read_text())["created_utc"]


def test_unknown_gpu_is_an_error_naming_the_key(tmp_path: Path) -> None:
    recipe = _setup(tmp_path, gpus=", estimate_gpus: [L4, GTX-480]")
    with pytest.raises(InputError, match=r"latency\.estimate_gpus: .*GTX-480"):
        load_recipe(recipe)


def test_estimated_latency_is_primary(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorrt_rtx_bindings")
    recipe = _setup(tmp_path, gpus=", estimate_gpus: [L4, Jetson-Orin-Nano]")
    assert main(["sweep", str(recipe), "-o", str(tmp_path / "out")]) == 0
    assert "estimated, L4, batch 8" in capsys.readouterr().out
    header, rows = _rows(tmp_path / "out")
    assert header[-2:] == ["est_ms_L4", "est_ms_Jetson-Orin-Nano"]
    for name, r in rows.items():
        assert (r["latency_source"], r["latency_target"]) == ("estimated", "L4"), name
        assert r["latency_ms_p50"] == r["est_ms_L4"] and float(r["est_ms_L4"]) > 0
        assert r["latency_ms_p99"] == ""  # an estimate has no tail
        assert float(r["throughput"]) == pytest.approx(8 * 1e3 / float(r["est_ms_L4"]))
        assert float(r["cpu_latency_ms_p50"]) > 0  # the CPU timing kept in its own columns
        est = json.loads((tmp_path / "out" / "configs" / name / "estimate.json").read_text())
        assert [e["gpu"] for e in est["estimates"]] == ["L4", "Jetson-Orin-Nano"]
        assert est["estimates"][0]["latency_ms"] == pytest.approx(float(r["est_ms_L4"]))
        assert est["estimates"][0]["shapes"] == {"x": [8, 3, 8, 8]}
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "latency ms (L4, batch 8; source)" in summary and "(estimated) |" in summary
    assert "All latency here is ONNX Runtime" not in summary
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "estimated ms, Jetson-Orin-Nano" in page and 'id="time"' in page


def test_primary_latency_is_the_best_source() -> None:
    from quantkit.sweep.latency import set_primary

    cpu = {"cpu_latency_ms_p50": 9.0, "cpu_latency_ms_p90": 9.5, "cpu_latency_ms_p99": 30.0,
           "cpu_throughput": 800.0, "cpu_latency_ms_p50_min": 8.0,
           "cpu_latency_ms_p50_max": 10.0, "cpu_source": "cpu-fake-quant",
           "cpu_target": "CPU: x", "latency_batch": 8}
    row = dict(cpu)
    set_primary(row, [])
    assert (row["latency_source"], row["latency_ms_p50"], row["latency_ms_p99"]) == \
        ("cpu-fake-quant", 9.0, 30.0)
    row = {**cpu, "est_ms_L4": 0.5, "est_ms_T4": 0.9}
    set_primary(row, ["L4", "T4"])
    assert (row["latency_source"], row["latency_target"], row["latency_ms_p50"]) == \
        ("estimated", "L4", 0.5)
    assert row["latency_ms_p99"] is None and row["throughput"] == 8 * 1e3 / 0.5
    assert row["cpu_latency_ms_p50"] == 9.0  # kept in its own column
    row = {**cpu, "est_ms_L4": 0.5, "measured_ms_p50": 0.7, "measured_ms_p90": 0.75,
           "measured_ms_p99": 0.9, "measured_throughput": 11000.0,
           "measured_ms_p50_min": 0.69, "measured_ms_p50_max": 0.72, "measured_gpu": "NVIDIA L4"}
    set_primary(row, ["L4"])
    assert (row["latency_source"], row["latency_target"], row["latency_ms_p50"],
            row["latency_ms_p99"]) == ("measured", "NVIDIA L4", 0.7, 0.9)


@pytest.mark.gpu
def test_engine_measured_on_the_gpu_is_primary(tmp_path: Path) -> None:  # pragma: no cover
    pytest.importorskip("tensorrt_rtx_bindings")
    recipe = _setup(tmp_path, gpus=", estimate_gpus: [L4]")
    text = recipe.read_text() + "build: {backend: tensorrt-rtx, shapes: 'x:8x3x8x8'}\n"
    recipe.write_text(text)
    res = run_sweep(recipe, tmp_path / "out")
    if any("could not load the engine" in str(r.get("measure_error", "")) for r in res.rows):
        pytest.skip("TensorRT-RTX engines do not run on this GPU (e.g. compute capability 9.0)")
    for r in res.rows:
        assert r["latency_source"] == "measured" and r["latency_target"], r["config"]
        assert r["latency_ms_p50"] == r["measured_ms_p50"] and r["est_ms_L4"] > 0
