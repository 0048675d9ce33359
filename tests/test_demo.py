"""`quantkit demo` end to end, as the README runs it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit.cli.main import main
from quantkit.demo import asset


def test_shipped_demo_assets() -> None:
    model = onnx.load(str(asset("demo_cnn.onnx")))
    ops = [n.op_type for n in model.graph.node]
    assert sum(op in ("Conv", "Gemm", "MatMul") for op in ops) >= 6
    assert "Add" in ops and "Softmax" in ops
    with np.load(asset("demo_data.npz")) as d:
        assert d["calibration"].shape == (256, 28, 28) and d["evaluation"].shape == (500, 28, 28)
        assert len(np.unique(d["evaluation_labels"])) == 10
    assert asset("demo_cnn.onnx").stat().st_size + asset("demo_data.npz").stat().st_size < 1e6


def test_demo_runs_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "-o", str(tmp_path / "demo")])
    out, err = capsys.readouterr()
    assert code == 0, err
    with open(tmp_path / "demo" / "results" / "results.csv") as fh:
        rows = {r["config"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["fp32", "fp16", "int8-entropy", "int8-minmax", "int8-percentile",
                          "mixed-fp16", "auto"]
    assert all(r["status"] == "ok" for r in rows.values())
    fp32 = float(rows["fp32"]["accuracy"])
    assert fp32 > 90  # a trained network, evaluated on held-out digits
    assert fp32 - float(rows["auto"]["accuracy"]) <= 0.5 + 1e-9
    assert "results:" in out and "int8-entropy" in out
    # every latency names its source; CPU timings of INT8 are fake quantisation, said once
    assert "latency source" in out and "CPU p50 ms/batch" in out
    assert "(cpu-fake-quant)" in out and "says nothing about a TensorRT engine's speed" in out
    for r in rows.values():
        assert r["latency_batch"] == "100" and float(r["cpu_latency_ms_p50"]) > 0
    int8 = [c for c in rows if c.startswith(("int8", "mixed", "auto"))]
    # entropy calibration clips the demo's activations: the warning reaches the results
    assert "entropy calibration clipped" in rows["int8-entropy"]["calibration_warnings"]
    assert rows["int8-percentile"]["calibration_warnings"] == ""
    summary = (tmp_path / "demo" / "results" / "summary.md").read_text(encoding="utf-8")
    assert "Headline rule: " in summary and "within 0.5 top1 points of the best" in summary
    assert "calibration of `int8-entropy`, `auto`: entropy calibration clipped" in summary
    if rows["fp32"]["engine_bytes"]:  # TensorRT-RTX installed: estimated TensorRT latency
        for name, r in rows.items():
            assert (r["latency_source"], r["latency_target"]) == ("estimated", "H100-SXM"), name
            assert float(r["est_ms_Jetson-Orin-Nano"]) > float(r["est_ms_H100-SXM"]) > 0
        est = {c: float(r["latency_ms_p50"]) for c, r in rows.items()}
        assert est["int8-percentile"] < est["fp16"] < est["fp32"]  # all-INT8 < FP16 < FP32
        assert "estimated, H100-SXM, batch 100" in out
        assert "All latency here is ONNX Runtime" not in summary
        # the headline is the fastest INT8 config within 0.5 points (by the H100 estimate)
        ok = [c for c in int8 if fp32 - float(rows[c]["accuracy"]) <= 0.5 + 1e-9]
        fastest = min(ok, key=lambda c: (float(rows[c]["latency_ms_p50"]),
                                         -float(rows[c]["accuracy"])))  # equal: more accurate
        assert f"Headline config: `{fastest}`" in summary
    else:
        assert {r["latency_source"] for r in rows.values()} == {"cpu", "cpu-fake-quant"}
        assert "All latency here is ONNX Runtime on this machine's CPU" in summary


def test_demo_refuses_a_non_empty_folder(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["demo", "-o", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not empty" in err and "--force" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    (tmp_path / "file").write_text("x")
    assert main(["demo", "-o", str(tmp_path / "file")]) == 2


def test_demo_refuses_an_unwritable_folder(capsys: pytest.CaptureFixture[str]) -> None:
    # /proc refuses new folders to every user, root included
    assert main(["demo", "-o", "/proc/quantkit-demo"]) == 2
    assert "cannot write there" in " ".join(capsys.readouterr().err.split())


def test_ctrl_c_exits_cleanly_without_partial_files(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "quantkit.cli.main", "demo", "-o",
                             str(tmp_path / "demo")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "demo" / "results" / "configs").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    leftovers = [p for p in (tmp_path / "demo").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert not (tmp_path / "demo" / "results" / "report.html").exists()
