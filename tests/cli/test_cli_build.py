"""`quantkit build` through the command line: outputs, table/JSON, bad input, missing backends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from backends.qdq_models import int8_cnn, mixed_cnn, unsupported_model

from quantkit.backends import get_backend
from quantkit.cli.main import main

HAS_RTX = get_backend("tensorrt-rtx").available()
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="needs TensorRT-RTX: pip install "
                                                   "'quantkit[rtx]'")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@needs_rtx
def test_build_writes_engine_sidecar_and_table(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = int8_cnn(tmp_path / "m.onnx")
    code, out, err = run(["build", str(model), "--backend", "tensorrt-rtx", "-o",
                          str(tmp_path / "m.engine"), "--shapes", "x:2x3x8x8",
                          "--min-shapes", "x:1x3x8x8", "--max-shapes", "x:4x3x8x8",
                          "--workspace", "128", "--opt-level", "2"], capsys)
    assert code == 0, err
    assert files(tmp_path) == ["m.engine", "m.engine.json", "m.onnx"]
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "type", "precision", "engine", "outputs"]
    row = next(line.split() for line in lines if line.startswith("/conv1/Conv "))
    assert row == ["/conv1/Conv", "convolution", "int8", "int8", "fp32"]
    assert "x_QuantizeLinear" not in out  # Q/DQ layers stay in the sidecar, not the table
    assert "wrote " in out and "tensorrt-rtx" in out and "3 int8" in out
    doc = json.loads((tmp_path / "m.engine.json").read_text())
    assert doc["builder"]["workspace_mib"] == 128 and doc["builder"]["opt_level"] == 2
    assert doc["shapes"]["x"]["max"] == [4, 3, 8, 8]


@needs_rtx
def test_build_json_and_default_backend(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = mixed_cnn(tmp_path / "m.onnx", plan={"/fp16/Conv": "int8"})
    code, out, err = run(["build", str(model), "-o", str(tmp_path / "m.engine"), "--json"],
                         capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc == json.loads((tmp_path / "m.engine.json").read_text())
    expected = "tensorrt" if get_backend("tensorrt").available() else "tensorrt-rtx"
    assert doc["backend"] == expected
    assert "warning: /fp16/Conv: the precision plan says int8" in err


@needs_rtx
@pytest.mark.parametrize(("extra", "match"), [
    (["--shapes", "nope:1x3x8x8"], "--shapes nope: the model has no input named 'nope'"),
    (["--shapes", "x:4x3x8x8", "--max-shapes", "x:2x3x8x8"], "<= max [2x3x8x8] does not hold"),
    ([], "input 'x' has dynamic dimensions [-1, 3, 8, 8]"),
    (["--shapes", "x:1x3x8"], "rank 4"),
    (["--shapes", "x=1x3x8x8"], "is not NAME:DIMS"),
    (["--shapes", "x:1x3x8x8", "--opt-level", "9"], "--opt-level 9"),
    (["--shapes", "x:1x3x8x8", "--backend", "tvm"], "unknown backend"),
    (["--shapes", "x:1x3x8x8", "--backend", "onnxruntime"], "has no build step"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, extra: list[str], match: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = int8_cnn(tmp_path / "m.onnx")
    code, _, err = run(["build", str(model), "-o", str(tmp_path / "m.engine"), *extra], capsys)
    assert code == 2
    assert match in " ".join(err.split()) or pytest.fail(err)
    assert "Traceback" not in err
    assert files(tmp_path) == ["m.onnx"]


@needs_rtx
def test_parser_rejection_names_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = unsupported_model(tmp_path / "bad.onnx")
    code, _, err = run(["build", str(model), "-o", str(tmp_path / "bad.engine")], capsys)
    assert code == 2
    assert "/conv/bias_DequantizeLinear" in err and "parser rejected" in err
    assert files(tmp_path) == ["bad.onnx"]


def test_output_equal_to_input_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = int8_cnn(tmp_path / "m.onnx")
    before = model.read_bytes()
    code, _, err = run(["build", str(model), "--backend", "tensorrt-rtx", "-o", str(model),
                        "--shapes", "x:1x3x8x8"], capsys)
    assert code == 2 and "same file as the input" in " ".join(err.split())
    assert model.read_bytes() == before and files(tmp_path) == ["m.onnx"]


def test_missing_tensorrt_names_the_extra(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if get_backend("tensorrt").available():
        pytest.skip("the real TensorRT is installed")
    model, _ = int8_cnn(tmp_path / "m.onnx")
    code, _, err = run(["build", str(model), "--backend", "tensorrt", "-o",
                        str(tmp_path / "m.engine"), "--shapes", "x:1x3x8x8"], capsys)
    text = " ".join(err.split())
    assert code == 2 and "pip install 'quantkit[tensorrt]'" in text
    assert files(tmp_path) == ["m.onnx"]


def test_no_backend_at_all_exits_2_naming_both_extras(tmp_path: Path) -> None:
    # Hide both libraries from the import system of a fresh interpreter (no TensorRT mocks:
    # the imports simply fail as they would on a machine without them).
    model, _ = int8_cnn(tmp_path / "m.onnx")
    script = textwrap.dedent(f"""
        import sys
        from importlib.abc import MetaPathFinder

        class Hide(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorrt", "tensorrt_rtx_bindings"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Hide())
        from quantkit.cli.main import main
        sys.exit(main(["build", {str(model)!r}, "-o", {str(tmp_path / "m.engine")!r},
                       "--shapes", "x:1x3x8x8"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    text = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'quantkit[rtx]'" in text and "pip install 'quantkit[tensorrt]'" in text
    assert "Traceback" not in text
    assert files(tmp_path) == ["m.onnx"]


def test_help_lists_the_contract_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "quantkit.cli.main", "build", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--backend", "-o, --output", "--shapes", "--min-shapes", "--max-shapes",
                 "--workspace", "--timing-cache", "--opt-level"):
        assert flag in out
