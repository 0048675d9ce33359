"""Autotune precision tiers: a layer that fails in INT8 goes to FP8 on an FP8 target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.calibrators import ScaleTable
from quantkit.errors import InputError
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.sweep import Evaluator, autotune
from quantkit.sweep.tiers import fp8_target, fp8_tier


def _outlier_model(path: Path) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, ScaleTable]:
    """``x[N,16] -> MatMul(w1) -> Relu -> MatMul(w2)``; feature 15 of x is ~1000, the rest ~1.

    w1 ignores feature 15, so the output depends on the small features only -- but feature 15
    sets the activation amax of x. INT8's step there (1000/127 ~ 7.9) rounds every small value
    to 0; FP8's relative precision keeps them (1000/448 per unit, 3 mantissa bits).
    """
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 16)).astype(np.float32)
    w1[15] = 0.0
    w2 = rng.standard_normal((16, 10)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 16])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(path))
    x = rng.standard_normal((256, 16)).astype(np.float32)
    x[:, 15] = 1000.0
    h = np.maximum(x @ w1, 0)
    labels = (h @ w2).argmax(axis=1)  # FP32 is 100 % right by construction
    amax = {"x": 1000.0, "r": float(h.max())}
    return model, x, labels, ScaleTable.from_amax(amax)


def _accuracy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray) -> float:
    from quantkit._ort import session

    out = session(model.SerializeToString()).run(None, {"x": x})[0]
    return float((out.argmax(axis=1) == labels).mean() * 100)


def test_fp8_target_from_gpu_table_and_compute_capability() -> None:
    assert fp8_target(gpu="L4").supported and fp8_target(gpu="H100-SXM").supported
    assert not fp8_target(gpu="A100-SXM").supported
    assert "no FP8" in fp8_target(gpu="T4").why
    assert fp8_target(compute_capability="SM89").supported
    assert fp8_target(compute_capability="12.0").supported
    assert not fp8_target(compute_capability="8.6").supported
    assert not fp8_target().supported
    with pytest.raises(InputError, match="not in quantkit's GPU table"):
        fp8_target(gpu="no-such-gpu")
    with pytest.raises(InputError, match="SMnn"):
        fp8_target(compute_capability="ampere")


@pytest.fixture()
def tuned(tmp_path: Path) -> tuple[onnx.ModelProto, ScaleTable, Evaluator, np.ndarray,
                                   np.ndarray, object]:
    model, x, labels, scales = _outlier_model(tmp_path / "m.onnx")
    ev = Evaluator(str(tmp_path / "m.onnx"), [{"x": x}], labels, "top1")
    res = autotune(model, scales, ev, 5.0)
    return model, scales, ev, x, labels, res


def test_layer_failing_int8_goes_to_fp8_on_an_fp8_gpu(tuned: tuple) -> None:
    model, scales, ev, x, labels, res = tuned
    # independent check of the premise: all-INT8 collapses, mm1 in FP8 does not
    assert _accuracy(quantize_model(model, scales).model, x, labels) < 50
    fp8_cfg = PrecisionConfig.from_mapping({"overrides": [{"name": "mm1", "precision": "fp8"}]})
    fp8_acc = _accuracy(quantize_model(model, scales, fp8_cfg).model, x, labels)
    assert fp8_acc >= 95
    assert res.reached and res.kept == ["mm1"]
    tiered = fp8_tier(model, scales, ev, res, fp8_target(gpu="L4"))
    assert tiered.reached and tiered.tier_of("mm1") == "fp8" and tiered.tier_of("mm2") == "int8"
    assert [(r.name, r.precision) for r in tiered.config.overrides] == [("mm1", "fp8")]
    assert tiered.final.accuracy == pytest.approx(fp8_acc)
    (layer,) = tiered.layers
    assert "INT8 misses the target" in layer.reason and "<= 5.0" in layer.reason
    text = tiered.to_yaml()
    assert "FP8 tier: on (L4 (SM89) has FP8 tensor math)" in text
    assert "precision: fp8" in text
    # the file round-trips into the same plan
    import yaml

    doc = yaml.safe_load(text)
    assert PrecisionConfig.from_mapping(doc) == tiered.config


def test_no_fp8_tier_on_a_gpu_without_fp8(tuned: tuple) -> None:
    model, scales, ev, _, _, res = tuned
    before = ev.evaluations
    tiered = fp8_tier(model, scales, ev, res, fp8_target(gpu="A100-SXM"))
    assert ev.evaluations == before  # nothing tried
    assert tiered.tier_of("mm1") == "fp32"
    assert "FP8 tier off" in tiered.layers[0].reason and "A100" in tiered.layers[0].reason
    assert [(r.name, r.precision) for r in tiered.config.overrides] == [("mm1", "fp32")]


RECIPE = """
name: outlier
model: m.onnx
metric: top1
data:
  calibration: {source: x.npy, batch_size: 64}
  evaluation: {source: x.npy, labels: labels.npy, batch_size: 64}
calibration: {method: minmax}
configs:
  - {name: fp32, precision: fp32}
  - {name: int8, precision: int8}
  - {name: fp8, precision: fp8}
  - name: int8-fp8
    precision: {default: int8, overrides: [{name: mm1, precision: fp8}]}
  - {name: auto-l4, autotune: {max_accuracy_drop: 5.0, target_gpu: L4}}
latency: {iterations: 2, warmup: 1, repeats: 1}
"""


def test_sweep_runs_fp8_configs_and_autotune_tiers(tmp_path: Path) -> None:
    import csv
    import json

    from quantkit.report.load import config_kind, load_sweep
    from quantkit.sweep import run_sweep

    _, x, labels, _ = _outlier_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "labels.npy", labels)
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = run_sweep(tmp_path / "r.yaml", tmp_path / "out")
    assert res.failed == []
    with open(tmp_path / "out" / "results.csv") as fh:
        by = {r["config"]: r for r in csv.DictReader(fh)}
    assert (by["fp8"]["fp8_layers"], by["fp8"]["int8_layers"]) == ("2", "0")
    assert (by["int8-fp8"]["fp8_layers"], by["int8-fp8"]["int8_layers"]) == ("1", "1")
    assert float(by["int8"]["accuracy"]) < 50 <= 95 <= float(by["int8-fp8"]["accuracy"])
    assert by["fp8"]["cpu_latency_ms_p50"] and by["fp8"]["latency_source"] == "cpu-fake-quant"
    assert float(by["auto-l4"]["accuracy"]) >= 95 and by["auto-l4"]["fp8_layers"] == "1"
    tiers = json.loads((tmp_path / "out" / "autotune.json").read_text())["tiers"]
    assert tiers["fp8_target"] and [(t["layer"], t["tier"]) for t in tiers["layers"]] == [
        ("mm1", "fp8")]
    assert "mm1: fp8 --" in (tmp_path / "out" / "configs" / "auto-l4" /
                             "precision.yaml").read_text()
    sweep = load_sweep(tmp_path / "out")
    kinds = {r["config"]: config_kind(r) for _, r in sweep.results.iterrows()}
    assert kinds == {"fp32": "fp32", "int8": "int8", "fp8": "fp8", "int8-fp8": "int8",
                     "auto-l4": "int8"}
    from quantkit.report import write_report

    html = write_report(tmp_path / "out").read_text()
    assert 'class="dot fp8"' in html and "fp8 nodes" in html and "(2 fp8)" in html
    assert "Precision tiers int8" in html and "L4 (SM89) has FP8 tensor math" in html


def test_sensitivity_probes_fp8_when_the_base_is_fp8(tmp_path: Path) -> None:
    from quantkit.sweep import layer_sensitivity

    model, x, labels, scales = _outlier_model(tmp_path / "m.onnx")
    ev = Evaluator(str(tmp_path / "m.onnx"), [{"x": x}], labels, "top1")
    int8 = {r.layer: r for r in layer_sensitivity(model, scales, ev)}
    fp8 = {r.layer: r for r in layer_sensitivity(model, scales, ev,
                                                 PrecisionConfig(default="fp8"))}
    assert set(int8) == set(fp8) == {"mm1", "mm2"}
    # mm1 alone quantized: INT8 collapses, FP8 keeps the accuracy (as computed by hand above)
    assert int8["mm1"].int8_only.accuracy < 50 <= 95 <= fp8["mm1"].int8_only.accuracy
    only = PrecisionConfig.from_mapping({"default": "fp32",
                                         "overrides": [{"name": "mm1", "precision": "fp8"}]})
    assert fp8["mm1"].int8_only.accuracy == pytest.approx(
        _accuracy(quantize_model(model, scales, only).model, x, labels))


def test_cli_autotune_with_target_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    import yaml

    from quantkit.cli.main import main

    _, x, labels, _ = _outlier_model(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "labels.npy", labels)
    args = ["autotune", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "labels.npy"), "--metric", "top1", "--method", "minmax",
            "--max-accuracy-drop", "5", "-o", str(tmp_path / "p.yaml")]
    assert main([*args, "--target-gpu", "nonesuch"]) == 2
    err = capsys.readouterr().err
    assert "--target-gpu" in err and "Traceback" not in err
    assert not (tmp_path / "p.yaml").exists()
    assert main([*args, "--target-gpu", "L4"]) == 0
    out = capsys.readouterr().out
    assert "precision tiers int8 -> fp8 -> fp32" in out and "mm1" in out
    doc = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert doc["overrides"] == [{"name": "mm1", "precision": "fp8"}]
