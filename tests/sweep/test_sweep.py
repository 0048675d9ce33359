"""Recipes, sweeps (with resume and failures), sensitivity and autotune on real models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.sweep import COLUMNS, Evaluator, autotune, load_recipe, run_sweep
from tests.builders.cnn import small_cnn

RECIPE = """
name: small-cnn
model: m.onnx
metric: top1
data:
  calibration: {{source: calib.npy, batch_size: 16}}
  evaluation: {{source: val.npy, labels: labels.npy, batch_size: 32}}
calibration: {{method: minmax}}
configs:
  - {{name: fp32, precision: fp32}}
  - {{name: fp16, precision: fp16}}
  - {{name: int8-minmax, precision: int8}}
  - {{name: int8-entropy, precision: int8, method: entropy}}
  - name: mixed
    precision: {{default: int8, default_float: fp16,
                 overrides: [{{op_type: Softmax, precision: fp32}}]}}
  - {{name: auto, autotune: {{max_accuracy_drop: {drop}}}}}
{extra}
latency: {{iterations: 3, warmup: 1}}
"""


def _setup(tmp: Path, drop: float = 1.0, extra: str = "") -> Path:
    small_cnn(tmp / "m.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp / "calib.npy", rng.standard_normal((64, 3, 8, 8)).astype(np.float32))
    val = rng.standard_normal((96, 3, 8, 8)).astype(np.float32)
    np.save(tmp / "val.npy", val)
    probs = ort.InferenceSession(str(tmp / "m.onnx"),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": val})[0]
    np.save(tmp / "labels.npy", probs.argmax(1))  # FP32 is 100 % by construction
    (tmp / "r.yaml").write_text(RECIPE.format(drop=drop, extra=extra))
    return tmp / "r.yaml"


def test_sweep_writes_results_and_resumes(tmp_path: Path) -> None:
    recipe = _setup(tmp_path, extra="build: {backend: tensorrt-rtx, shapes: 'x:1x3x8x8'}")
    res = run_sweep(recipe, tmp_path / "out")
    assert res.failed == []
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:11] == COLUMNS[:11]
    by = {r["config"]: r for r in rows}
    assert list(by) == ["fp32", "fp16", "int8-minmax", "int8-entropy", "mixed", "auto"]
    assert float(by["fp32"]["accuracy"]) == 100.0 and by["fp32"]["sqnr_db"] == "inf"
    assert float(by["fp16"]["sqnr_db"]) > float(by["int8-minmax"]["sqnr_db"]) > 10
    assert by["int8-minmax"]["method"] == "minmax" and by["int8-entropy"]["method"] == "entropy"
    assert int(by["int8-minmax"]["int8_layers"]) == 3
    assert float(by["auto"]["accuracy"]) >= 99.0  # the 1-point target
    for name in by:
        assert (tmp_path / "out" / "configs" / name / "result.json").exists()
    pytest.importorskip("tensorrt_rtx_bindings")
    assert by["int8-minmax"]["engine_backend"].startswith("tensorrt-rtx 1")
    assert int(by["int8-minmax"]["engine_bytes"]) > 0
    assert (tmp_path / "out" / "configs" / "mixed" / "model.engine.json").exists()
    auto = json.loads((tmp_path / "out" / "autotune.json").read_text())
    assert auto["reached"] and auto["evaluations"] >= 1
    assert (tmp_path / "out" / "configs" / "auto" / "precision.yaml").read_text().startswith(
        "# quantkit autotune")
    assert (tmp_path / "out" / "calibration" / "minmax.json").exists()
    # resume: nothing re-runs, same rows (timings included, read back from result.json)
    stamp = (tmp_path / "out" / "configs" / "mixed" / "result.json").stat().st_mtime_ns
    again = run_sweep(recipe, tmp_path / "out")
    assert [r["config"] for r in again.rows] == list(by)
    assert (tmp_path / "out" / "configs" / "mixed" / "result.json").stat().st_mtime_ns == stamp


def test_failed_config_is_recorded_and_others_continue(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _setup(tmp_path)
    text = recipe.read_text().replace(
        "  - {name: auto, autotune: {max_accuracy_drop: 1.0}}",
        "  - name: broken\n    precision: {overrides: [{name: /nope/Conv, precision: fp16}]}")
    recipe.write_text(text)
    code = main(["sweep", str(recipe), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "1 config(s) failed: broken" in " ".join(captured.err.split())
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = {r["config"]: r for r in csv.DictReader(fh)}
    assert rows["broken"]["status"] == "failed" and "/nope/Conv" in rows["broken"]["error"]
    assert rows["mixed"]["status"] == "ok"


@pytest.mark.parametrize("edit, needle", [
    (("int8-minmax, precision: int8}", "int8-minmax, precision: int4}"),
     "configs[2].precision: 'int4' is not one of"),
    (("name: fp16, precision: fp16", "name: fp32, precision: fp16"), "repeated: fp32"),
    (("model: m.onnx", "model: missing.onnx"), "missing.onnx does not exist"),
    (("metric: top1", "metric: top1\ncolour: red"), "colour: Extra inputs are not permitted"),
    (("name: fp16, precision: fp16", "name: fp16, precision: fp16, rescue: [equalize]"),
     "configs[1]: rescue transforms apply to int8"),
    (("int8-minmax, precision: int8}", "int8-minmax, precision: int8, rescue: [magic]}"),
     "configs[2].rescue: 'magic' is not one of bias_correction, equalize"),
])
def test_recipe_errors_name_the_field(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    recipe = _setup(tmp_path)
    text = recipe.read_text()
    assert edit[0] in text
    recipe.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(InputError) as err:
        load_recipe(recipe)
    assert needle in str(err.value)


def test_autotune_is_minimal_and_reports_unreachable(tmp_path: Path) -> None:
    recipe = load_recipe(_setup(tmp_path))
    from quantkit.capture import calibrate

    model = onnx.load(str(tmp_path / "m.onnx"))
    scales = calibrate(tmp_path / "m.onnx", str(tmp_path / "calib.npy"), method="entropy").scales
    val = np.load(tmp_path / "val.npy")
    ev = Evaluator(str(tmp_path / "m.onnx"), [{"x": val}], np.load(tmp_path / "labels.npy"),
                   "top1")
    res = autotune(model, scales, ev, 0.0)
    drop = ev.drop(res.fp32, res.final)
    if res.reached:
        assert drop <= 0.0
        for layer in res.kept:  # minimal: putting any kept layer back breaks the target
            fewer = [k for k in res.kept if k != layer]
            from quantkit.qdq.plan import PrecisionConfig, Rule
            from quantkit.qdq.writer import quantize_model

            cfg = PrecisionConfig(overrides=tuple(Rule(name=k, precision="fp32")
                                                  for k in fewer))
            assert ev.drop(res.fp32, ev.score(quantize_model(model, scales, cfg).model)) > 0
    else:
        assert res.kept and "NOT reached" in res.to_yaml()
    assert recipe.name == "small-cnn"


def test_replaced_calibration_data_recalibrates_and_reruns(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    """Same paths, new content: the cached scales and the finished configs are not reused."""
    import logging
    import os

    recipe = _setup(tmp_path)
    text = recipe.read_text().split("configs:")[0] + (
        "configs:\n  - {name: int8-minmax, precision: int8}\n"
        "latency: {iterations: 2, warmup: 1}\n")
    recipe.write_text(text)
    out = tmp_path / "out"
    run_sweep(recipe, out)
    scales = json.loads((out / "calibration" / "minmax.json").read_text())
    with caplog.at_level(logging.INFO, logger="quantkit.sweep.run"):
        run_sweep(recipe, out)  # unchanged inputs: skipped, scales reused
    assert "int8-minmax: results exist, skipped" in caplog.text
    caplog.clear()
    bigger = np.load(tmp_path / "calib.npy") * 3.0
    np.save(tmp_path / "calib.npy", bigger)
    st = (tmp_path / "calib.npy").stat()
    os.utime(tmp_path / "calib.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO, logger="quantkit.sweep.run"):
        run_sweep(recipe, out)
    assert "results exist, skipped" not in caplog.text
    rescaled = json.loads((out / "calibration" / "minmax.json").read_text())
    name = next(iter(scales["tensors"]))  # the graph input: its amax is max |calib|
    assert rescaled["tensors"][name]["amax"] == pytest.approx(3 * scales["tensors"][name]["amax"],
                                                              rel=1e-6)


def test_rescue_transforms_in_a_recipe_are_applied_and_recorded(tmp_path: Path) -> None:
    """`rescue: [bias_correction]` on an int8 config: the quantized model is of the corrected
    FP32 model, and results.csv, plan.json, the model's metadata and the report say so."""
    from quantkit.report import write_report
    from quantkit.transforms import applied_transforms

    recipe = _setup(tmp_path)
    text = recipe.read_text().split("configs:")[0] + (
        "configs:\n"
        "  - {name: int8, precision: int8}\n"
        "  - {name: int8-bc, precision: int8, rescue: [bias_correction]}\n"
        "  - {name: auto-bc, autotune: {max_accuracy_drop: 50}, rescue: [bias_correction]}\n"
        "latency: {iterations: 2, warmup: 1}\n")
    recipe.write_text(text)
    out = tmp_path / "out"
    res = run_sweep(recipe, out)
    assert res.failed == []
    with open(out / "results.csv") as fh:
        rows = {r["config"]: r for r in csv.DictReader(fh)}
    assert rows["int8"]["transforms"] == ""
    assert rows["int8-bc"]["transforms"] == rows["auto-bc"]["transforms"] == "bias_correction"
    plan = json.loads((out / "configs" / "int8-bc" / "plan.json").read_text())
    assert [t["transform"] for t in plan["transforms"]] == ["bias_correction"]
    assert plan["transforms"][0]["changed"] > 0
    model = onnx.load(str(out / "configs" / "int8-bc" / "model.onnx"))
    assert [t["transform"] for t in applied_transforms(model)] == ["bias_correction"]
    plain = onnx.load(str(out / "configs" / "int8" / "model.onnx"))
    biases = {t.name: t for t in plain.graph.initializer}
    changed = [t for t in model.graph.initializer
               if t.name in biases and t.raw_data != biases[t.name].raw_data]
    assert changed  # the corrected biases differ from the plain int8 model's
    html = write_report(out)
    assert "minmax + bias_correction" in Path(html).read_text()
