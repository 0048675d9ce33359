"""`quantkit estimate` and `quantkit build --estimate-gpu` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _require import require
from backends.qdq_models import unsupported_model

from quantkit.cli.main import main

require("tensorrt_rtx_bindings")

import latency.latency_models as lm  # noqa: E402


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lm.matmul_model(tmp_path_factory.mktemp("est") / "mm.onnx", k=256, n=512)


def test_table(mm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["estimate", str(mm), "--gpu", "l4", "--shapes", "x:2x64x256"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("L4: ") and "(estimated, L4, batch 2;" in lines[0]
    assert lines[1].split()[:6] == ["kernel", "precision", "GFLOP", "MB", "bound", "time"]
    row = next(line.split() for line in lines if line.startswith("matmul_myl"))
    assert row[1] == "fp32" and row[2] == f"{2 * 128 * 256 * 512 / 1e9:.3f}"
    assert any(line.startswith("by precision: fp32 ") for line in lines)
    assert any(line.startswith("total: ") and "estimated on L4" in line for line in lines)
    assert any(line.startswith("method: estimated: ") and "SM89" in line for line in lines)
    assert "summary" not in out  # one GPU: no summary table
    code, out, err = run(["estimate", str(mm), "--gpu", "l4,t4", "--shapes", "x:2x64x256"],
                         capsys)
    assert code == 0, err
    summary = out[out.index("summary (estimated TensorRT latency):"):].splitlines()
    assert summary[1].split()[:3] == ["gpu", "latency", "throughput"]
    assert [line.split()[0] for line in summary[3:]] == ["L4", "T4"]


def test_json_one_and_several_gpus(mm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["estimate", str(mm), "--gpu", "A100", "--shapes", "x:2x64x256",
                          "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert {"gpu", "latency_ms", "by_precision", "kernels", "method", "batch_size",
            "shapes"} <= set(doc)
    assert doc["gpu"] == "A100-SXM" and doc["batch_size"] == 2
    assert doc["shapes"] == {"x": [2, 64, 256]} and doc["source"] == "estimated"
    kernel = doc["kernels"][0]
    assert {"name", "precision", "flops", "bytes", "ms", "onnx_layers"} <= set(kernel)
    assert doc["latency_ms"] == pytest.approx(sum(k["ms"] for k in doc["kernels"]))
    code, out, err = run(["estimate", str(mm), "--gpu", "A100,jetson-agx-orin", "--shapes",
                          "x:2x64x256", "--json"], capsys)
    assert code == 0, err
    docs = json.loads(out)
    assert [d["gpu"] for d in docs] == ["A100-SXM", "Jetson-AGX-Orin"]
    assert "SM87" in docs[1]["method"] and docs[1]["build_target"] == "SM86"


def test_list_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["estimate", "--list-gpus"], capsys)
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["gpu", "sm", "fp32"]
    for name in ("H100-SXM", "A100-PCIe", "L4", "T4", "RTX-5090", "Jetson-Orin-Nano"):
        assert f"\n{name} " in out and f"  {name} " in out  # table row and source line
    assert out.count("https://") >= 14
    code, out, err = run(["estimate", "--list-gpus", "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and all(r["url"].startswith("https://") for r in rows)


@pytest.mark.parametrize(("args", "needle"), [
    (["--gpu", "V100"], "Known GPUs: H100-SXM"),
    (["--gpu", "L4", "--shapes", "x:2xAx256"], "not a list of non-negative integers"),
    (["--gpu", "L4", "--shapes", "x:2x64"], "has rank 3"),
    (["--gpu", "L4"], "no shape was given"),
    (["--gpu", ""], "name the GPU"),
])
def test_bad_input_exits_2_without_output(mm: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], needle: str) -> None:
    code, out, err = run(["estimate", str(mm), *args], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_fp8_model_on_ampere_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = lm.matmul_model(tmp_path / "fp8.onnx", qdq="fp8")
    code, out, err = run(["estimate", str(model), "--gpu", "L4,A100", "--shapes",
                          "x:1x16x256"], capsys)
    assert code == 2 and out == ""
    assert "FP8" in err and "A100-SXM" in err and "8.9" in err


def test_model_that_does_not_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = unsupported_model(tmp_path / "bad.onnx")
    code, out, err = run(["estimate", str(model), "--gpu", "L4"], capsys)
    assert code == 2 and out == ""
    assert "parser rejected" in err and "/conv/bias_DequantizeLinear" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
    code, out, err = run(["estimate", str(tmp_path / "missing.onnx"), "--gpu", "L4"], capsys)
    assert code == 2 and out == "" and "no such file" in err


def test_build_estimate_gpu(mm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "mm.engine"
    code, out, err = run(["build", str(mm), "--backend", "tensorrt-rtx", "-o", str(engine),
                          "--shapes", "x:2x64x256", "--compute-capability", "SM89",
                          "--estimate-gpu", "L4,A100"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "mm.engine.json").read_text())
    l4, a100 = doc["estimates"]
    assert (l4["gpu"], a100["gpu"]) == ("L4", "A100-SXM")
    assert "separate" not in l4["method"]  # the build's own SM89 kernel list
    assert "separate TensorRT-RTX build" in a100["method"] and a100["build_target"] == "SM80"
    assert "estimated TensorRT latency on L4" in out
    # an unknown GPU is refused before anything is built
    code, out, err = run(["build", str(mm), "--backend", "tensorrt-rtx", "-o",
                          str(tmp_path / "x.engine"), "--shapes", "x:2x64x256",
                          "--estimate-gpu", "H800"], capsys)
    assert code == 2 and "Known GPUs" in err
    assert not (tmp_path / "x.engine").exists() and not (tmp_path / "x.engine.json").exists()


def test_as_built_keeps_the_int8_epilogue_kernels(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = lm.conv_model(tmp_path / "q.onnx", c=16, k=16, hw=16, qdq=True)
    base = ["estimate", str(model), "--gpu", "L4", "--shapes", "x:1x16x16x16", "--json"]
    code, out, err = run(base, capsys)
    assert code == 0, err
    fused = json.loads(out)
    code, out, err = run([*base, "--as-built"], capsys)
    assert code == 0, err
    built = json.loads(out)
    assert len(built["kernels"]) == len(fused["kernels"]) + 1
    assert any(k["fused"] for k in fused["kernels"]) and not any(k["fused"]
                                                                 for k in built["kernels"])
    assert built["latency_ms"] > fused["latency_ms"]
