"""Atomic, non-destructive outputs: every command refuses an output that is one of its
inputs (exit 2, input untouched, nothing written), and a failed write leaves no partial file.
(quantize -o MODEL, calibrate --cache MODEL, cache convert and build are covered in tests/cli.)
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from quantkit._io import atomic_write, write_text_atomic
from quantkit.cli.main import main
from tests.builders.cnn import small_cnn


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, " ".join(capsys.readouterr().err.split())


@pytest.fixture()
def d(tmp_path: Path) -> Path:
    small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    probs = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.save(tmp_path / "labels.npy", probs.argmax(1))
    (tmp_path / "labels.csv").write_text("\n".join(str(v) for v in probs.argmax(1)) + "\n")
    (tmp_path / "p.yaml").write_text("default: int8\n")
    (tmp_path / "pre.yaml").write_text("preprocess: {layout: NCHW}\n")
    return tmp_path


@pytest.mark.parametrize("target", ["x.npy", "p.yaml", "pre.yaml", "link-to-model"])
def test_quantize_refuses_any_input_as_output(d: Path, target: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    os.symlink(d / "m.onnx", d / "link-to-model")  # another name for the model
    before = _digest(d)
    code, err = _run(["quantize", d / "m.onnx", "--data", d / "x.npy", "--precision",
                      d / "p.yaml", "--preprocess", d / "pre.yaml", "-o", d / target], capsys)
    assert code == 2 and "same file as the input" in err and "Traceback" not in err
    assert _digest(d) == before


def test_autotune_refuses_an_input_as_output(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(d)
    for target in ("labels.npy", "m.onnx", "x.npy"):
        code, err = _run(["autotune", d / "m.onnx", "--data", d / "x.npy", "--labels",
                          d / "labels.npy", "--max-accuracy-drop", "1", "-o", d / target],
                         capsys)
        assert code == 2 and "same file as the input" in err
    assert _digest(d) == before


def test_sensitivity_refuses_to_overwrite_an_input(d: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (d / "labels.csv").rename(d / "sensitivity.csv")  # the labels sit where the output goes
    before = _digest(d)
    code, err = _run(["sensitivity", d / "m.onnx", "--data", d / "x.npy", "--labels",
                      d / "sensitivity.csv", "-o", d], capsys)
    assert code == 2 and "same file as the input" in err and "sensitivity.csv" in err
    assert _digest(d) == before
    code, err = _run(["sensitivity", d / "m.onnx", "--data", d / "x.npy", "-o", d / "m.onnx"],
                     capsys)
    assert code == 2 and "is a file" in err
    assert _digest(d) == before


def _sweep_dir(d: Path) -> Path:
    (d / "r.yaml").write_text(
        "model: m.onnx\nmetric: top1\n"
        "data:\n  calibration: {source: x.npy}\n"
        "  evaluation: {source: x.npy, labels: labels.npy}\n"
        "configs:\n  - {name: fp32, precision: fp32}\n"
        "  - {name: int8, precision: int8, method: minmax}\n"
        "latency: {iterations: 1, warmup: 0}\n")
    assert main(["-q", "sweep", str(d / "r.yaml"), "-o", str(d / "out")]) == 0
    return d / "out"


def test_report_refuses_to_overwrite_the_sweep(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _sweep_dir(d)
    capsys.readouterr()
    before = _digest(out)
    cases = [
        (["-o", out / "results.csv"], "-o", "results.csv"),
        (["--summary", out / "environment.json"], "--summary", "environment.json"),
        (["-o", out / "configs" / "int8" / "plan.json"], "-o", "configs/ folder"),
        (["-o", out / "x.html", "--summary", out / "x.html"], "-o", "same file"),
        (["-o", out / "summary.md"], "-o", "same file"),  # summary.md next to it by default
    ]
    for extra, flag, needle in cases:
        code, err = _run(["report", out, *extra], capsys)
        assert code == 2 and flag in err and needle in err, err
        assert "Traceback" not in err
    assert _digest(out) == before


def test_sweep_never_overwrites_recipe_inputs(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _sweep_dir(d)
    # a recipe inside the output folder, named recipe.yaml: kept as is, not rewritten
    recipe = out / "recipe.yaml"
    recipe.write_text((d / "r.yaml").read_text().replace("m.onnx", "../m.onnx")
                      .replace("x.npy", "../x.npy").replace("labels.npy", "../labels.npy"))
    os.utime(recipe, ns=(1, 1))
    assert main(["-q", "sweep", str(recipe), "-o", str(out)]) == 0
    assert recipe.stat().st_mtime_ns == 1
    # labels that are the sweep's own results.csv: refused before anything is written
    (d / "out2").mkdir()
    (d / "out2" / "results.csv").write_text("0\n" * 16)
    (d / "r2.yaml").write_text((d / "r.yaml").read_text().replace("labels.npy",
                                                                  "out2/results.csv"))
    capsys.readouterr()
    before = _digest(d / "out2")
    code, err = _run(["sweep", d / "r2.yaml", "-o", d / "out2"], capsys)
    assert code == 2 and "data.evaluation.labels" in err and "never overwrites" in err
    assert _digest(d / "out2") == before


def test_sweep_results_csv_is_complete_after_each_config(d: Path) -> None:
    out = _sweep_dir(d)
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["config"] for r in rows] == ["fp32", "int8"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half of the new cont")
        raise RuntimeError("killed midway")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_failed_quantize_leaves_no_output(d: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    real = onnx.save_model

    def crash(model: object, f: object, *a: object, **k: object) -> None:
        Path(str(f)).write_bytes(b"partial")  # what a crash mid-write leaves in the temp file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", crash)
    before = set(os.listdir(d))
    code = main(["quantize", str(d / "m.onnx"), "--data", str(d / "x.npy"), "-o",
                 str(d / "q.onnx")])
    capsys.readouterr()
    monkeypatch.setattr(onnx, "save_model", real)
    assert code != 0 and set(os.listdir(d)) == before
