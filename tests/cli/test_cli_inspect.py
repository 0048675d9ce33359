"""`quantkit inspect`: tables, --json, --strict, engine sidecars and bad input (no mocks)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.cli.main import main

F32 = TensorProto.FLOAT


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def flat(text: str) -> str:
    """One line, as the wrapped error paragraph reads (the CLI wraps at hyphens too)."""
    return " ".join(text.replace("-\n", "-").split())


def qdq_model(path: Path, *, zero_point: int = 0) -> Path:
    """x -> Q/DQ -> Conv (int8 weight, per-channel DQ axis 0) -> Relu -> Q/DQ -> Gemm -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a, n) for n, a in {
        "x_s": np.array(0.03, np.float32), "x_zp": np.array(zero_point, np.int8),
        "r_s": np.array(0.02, np.float32), "r_zp": np.array(0, np.int8),
        "w_q": rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
        "w_s": np.full(4, 0.01, np.float32), "w_zp": np.zeros(4, np.int8),
        "b": np.zeros(4, np.float32),
        "f_q": rng.integers(-127, 128, (5, 4 * 8 * 8)).astype(np.int8),
        "f_s": np.full(5, 0.01, np.float32), "f_zp": np.zeros(5, np.int8)}.items()]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xdq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["xdq", "w", "b"], ["c"], name="/conv/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("Flatten", ["r"], ["flat"], name="/flatten/Flatten"),
        helper.make_node("QuantizeLinear", ["flat", "r_s", "r_zp"], ["rq"], name="r_Q"),
        helper.make_node("DequantizeLinear", ["rq", "r_s", "r_zp"], ["rdq"], name="r_DQ"),
        helper.make_node("DequantizeLinear", ["f_q", "f_s", "f_zp"], ["f"], name="f_DQ", axis=0),
        helper.make_node("Gemm", ["rdq", "f"], ["y"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", F32, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", F32, [1, 5])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_table_for_a_clean_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["inspect", str(qdq_model(tmp_path / "m.onnx"))], capsys)
    assert code == 0 and err == ""
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("/")}
    assert rows["/conv/Conv"][1:3] == ["Conv", "int8"] and rows["/fc/Gemm"][2] == "int8"
    assert rows["/relu/Relu"][2] == "fp32"
    assert "per-channel[4] axis 0" in out and "x_DQ" not in out  # Q/DQ hidden by default
    assert "no findings" in out and "compute ops: 2 int8" in out
    code, out, _ = run(["inspect", str(tmp_path / "m.onnx"), "--all"], capsys)
    assert code == 0 and "x_DQ" in out and "DequantizeLinear" in out


def test_findings_json_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = qdq_model(tmp_path / "bad.onnx", zero_point=3)
    code, out, err = run(["inspect", str(path)], capsys)
    assert code == 0 and err == ""  # an inspector: findings alone do not fail
    assert "ERROR   QK102 x_DQ [xq]" in out and "Non-zero zero point" in out
    assert "1 error(s), 0 warning(s), 0 info" in out

    code, out, _ = run(["inspect", str(path), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["format"] == "quantkit-inspect/1" and doc["kind"] == "onnx"
    assert doc["file"] == str(path)
    assert {"name", "op_type", "precision", "weights", "weight_axis", "scales",
            "notes"} == set(doc["nodes"][0])
    conv = next(n for n in doc["nodes"] if n["name"] == "/conv/Conv")
    assert conv["precision"] == "int8" and conv["weights"] == "per-channel"
    assert conv["scales"][1] == {"input": 1, "tensor": "w", "kind": "weight", "qtype": "int8",
                                 "channels": 4, "axis": 0, "scale_min": pytest.approx(0.01),
                                 "scale_max": pytest.approx(0.01)}
    (finding,) = doc["findings"]
    assert finding["code"] == "QK102" and finding["severity"] == "error"
    assert set(finding) == {"code", "severity", "node", "tensor", "message"}
    assert doc["summary"]["errors"] == 1 and doc["summary"]["compute_precision"] == {"int8": 2}

    code, out, err = run(["inspect", str(path), "--strict"], capsys)
    assert code == 1 and "1 error finding(s) (--strict)" in flat(err)
    assert "Traceback" not in err and "QK102" in out
    assert run(["inspect", str(qdq_model(tmp_path / "ok.onnx")), "--strict"], capsys)[0] == 0


def test_model_the_checker_rejects_is_still_linted(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx.load(str(qdq_model(tmp_path / "m.onnx")))
    model.opset_import[0].version = 12  # per-channel DQ needs opset 13
    onnx.save(model, str(tmp_path / "m12.onnx"))
    code, out, _ = run(["inspect", str(tmp_path / "m12.onnx")], capsys)
    assert code == 0 and "QK100" in out and "QK110" in out


@pytest.mark.parametrize("content, name, needle", [
    (None, "missing.onnx", "no such file"),
    (b"hello world\n", "text.onnx", "not a readable ONNX model"),
    (bytes(range(256)) * 8, "random.bin", "not a readable ONNX model"),
    (b"", "empty.onnx", "not an ONNX model"),
    (b"\x00" * 64, "m.engine", "no sidecar m.engine.json"),
])
def test_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None,
                   name: str, needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for args in ([], ["--json"], ["--strict"]):
        code, out, err = run(["inspect", str(path), *args], capsys)
        assert code == 2 and out == "" and "Traceback" not in err
        text = flat(err)
        assert needle in text and str(path) in text and text.count("error:") == 1


def test_folder_and_bad_sidecars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["inspect", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err
    (tmp_path / "m.engine").write_bytes(b"\x00" * 16)
    for text, needle in (("{not json", "not a readable JSON sidecar"),
                         ('{"format": "other/1"}', "quantkit-engine/1")):
        (tmp_path / "m.engine.json").write_text(text)
        code, _, err = run(["inspect", str(tmp_path / "m.engine")], capsys)
        assert code == 2 and needle in flat(err) and "Traceback" not in err


SIDECAR = {
    "format": "quantkit-engine/1", "backend": "tensorrt-rtx", "backend_version": "1.7.1.116",
    "created_utc": "2026-01-01T00:00:00+00:00", "engine_bytes": 1234, "build_time_s": 0.5,
    "model": "m.onnx", "shapes": {"x": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8],
                                        "max": [16, 3, 8, 8]}},
    "layers": [
        {"name": "x_Q", "type": "QUANTIZE", "precision": "int8", "output_dtypes": ["int8"],
         "onnx_node": "x_Q"},
        {"name": "/conv/Conv", "type": "CONVOLUTION", "precision": "int8",
         "output_dtypes": ["fp32"], "onnx_node": "/conv/Conv", "engine_precision": "int8"},
        {"name": "/relu/Relu", "type": "ACTIVATION", "precision": "fp16",
         "output_dtypes": ["fp16"], "onnx_node": "/relu/Relu", "engine_precision": "fp16"}],
    "disagreements": [{"layer": "/relu/Relu", "kind": "plan",
                       "message": "/relu/Relu: the precision plan says fp32, the parsed network "
                                  "has fp16"}],
}


def test_engine_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.engine").write_bytes(b"\x00" * 16)
    (tmp_path / "m.engine.json").write_text(json.dumps(SIDECAR))
    for target in ("m.engine", "m.engine.json"):
        code, out, err = run(["inspect", str(tmp_path / target)], capsys)
        assert code == 0 and err == ""
        assert "backend tensorrt-rtx, version 1.7.1.116" in out
        assert "shape x: min=1x3x8x8 opt=4x3x8x8 max=16x3x8x8" in out
        rows = {line.split()[0]: line.split() for line in out.splitlines()
                if line.startswith(("/", "x_"))}
        assert rows["/conv/Conv"][:4] == ["/conv/Conv", "CONVOLUTION", "int8", "int8"]
        assert rows["/relu/Relu"][2] == "fp16"
        assert "3 layers (1 fp16, 1 int8)" in out and "disagreement: /relu/Relu" in out
        assert "needs a GPU with TensorRT" in " ".join(out.split())
    code, out, _ = run(["inspect", str(tmp_path / "m.engine"), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["format"] == "quantkit-inspect/1" and doc["kind"] == "engine"
    assert doc["sidecar"] == SIDECAR and doc["engine_inspector"] is None
    assert doc["summary"] == {"layers": 3, "precision": {"fp16": 1, "int8": 1},
                              "disagreements": 1, "engine_inspector": False}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx_bindings") is None,
                    reason="needs TensorRT-RTX: pip install 'quantkit[rtx]'")
def test_engine_built_with_rtx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = qdq_model(tmp_path / "m.onnx")
    code, _, err = run(["build", str(model), "--backend", "tensorrt-rtx", "--shapes",
                        "x:1x3x8x8", "-o", str(tmp_path / "m.engine")], capsys)
    assert code == 0, err
    code, out, _ = run(["inspect", str(tmp_path / "m.engine")], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("/")}
    assert rows["/conv/Conv"][2] == "int8" and rows["/fc/Gemm"][2] == "int8"


def test_help_keeps_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["inspect", "--help"], capsys)
    assert code == 0 and "\n    quantkit inspect model.engine\n" in out and "\\b" not in out
    assert "--strict" in out and "--json" in out and "--all" in out
