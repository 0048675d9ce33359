"""Sweep, sensitivity and autotune optimise the chosen task metric on a detector-like head."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _require import require

from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.model import load_model
from quantkit.sweep import Evaluator, autotune, load_recipe, run_sweep
from tests.builders.tasks import ANCHORS, detector

CONV1, CONV2 = "/head/conv1/Conv", "/head/conv2/Conv"


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("det")
    detector(d / "det.onnx")
    x = np.random.default_rng(0).random((16, 8, 1, ANCHORS)).astype(np.float32)
    np.save(d / "x.npy", x)
    return {"model": d / "det.onnx", "x": d / "x.npy", "dir": d}


@pytest.fixture(scope="module")
def searched(det: dict[str, Path]) -> dict[str, Any]:
    from quantkit.capture import calibrate

    scales = calibrate(det["model"], str(det["x"]), method="minmax", batch_size=8).scales
    x = np.load(det["x"])
    ev = Evaluator(str(det["model"]), [{"x": x[:8]}, {"x": x[8:]}], None,
                   {"name": "detection", "score": 0.25}, "output0")
    return {"scales": scales, "ev": ev,
            "strict": autotune(load_model(det["model"]), scales, ev, 0.0)}


def test_autotune_says_when_it_kept_everything_out_of_int8(
        searched: dict[str, Any]) -> None:
    res = searched["strict"]
    ev = searched["ev"]
    assert isinstance(ev, Evaluator) and ev.metric == "detection" and ev.task.against == "fp32"
    # what the detection metric sees: all-INT8 loses about half the boxes' classes
    assert res.all_int8.accuracy < 75 and res.fp32.accuracy == 100.0
    assert sorted(res.kept) == [CONV1, CONV2] and res.reached
    doc = res.to_dict()
    assert doc["nearly_all_float"] and doc["kept_fraction"] == 1.0
    assert doc["compute_layers"] == 2 and doc["metric"] == "detection"
    assert "2 of 2 compute layers (100 %)" in doc["notice"]
    assert "latency is unknown (no GPU named" in doc["notice"]
    head = res.to_yaml().split("default:")[0]
    assert "# WARNING: the target was met only by keeping 2 of 2" in head


def test_a_looser_target_keeps_one_layer_and_says_nothing(
        det: dict[str, Path], searched: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    strict = searched["strict"]
    with caplog.at_level(logging.WARNING, logger="quantkit.sweep.autotune"):
        res = autotune(load_model(det["model"]), searched["scales"], searched["ev"],
                       5.0, sensitivity=strict.sensitivity)
    assert res.kept == [CONV2] and res.notice is None and res.final.accuracy > 95
    assert not res.to_dict()["nearly_all_float"]
    assert "met only by keeping" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="quantkit.sweep.autotune"):
        autotune(load_model(det["model"]), searched["scales"], searched["ev"], 0.0,
                 sensitivity=strict.sensitivity)
    assert "autotune: the target was met only by keeping 2 of 2" in caplog.text
    # the sensitivity ranks the layer by the detection metric: conv2 alone in INT8 is the damage
    by = {s.layer: s for s in strict.sensitivity}
    assert by[CONV2].int8_only.accuracy < 75 and by[CONV1].int8_only.accuracy > 95


def test_autotune_prices_the_float_result_with_an_estimate(
        det: dict[str, Path], searched: dict[str, Any]) -> None:
    require("tensorrt_rtx_bindings")
    strict = searched["strict"]
    res = autotune(load_model(det["model"]), searched["scales"], searched["ev"],
                   0.0, sensitivity=strict.sensitivity,
                   estimate_gpus=["L4"])
    cost = res.latency_cost
    assert cost is not None and cost["gpu"] == "L4", cost
    assert cost["kept_ms"] > 0 and cost["all_int8_ms"] > 0
    assert f"Estimated latency on L4: {cost['kept_ms']:.3f} ms" in (res.notice or "")


def test_cli_autotune_and_sensitivity_take_metric_and_output(
        det: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = det["dir"]
    common = ["--data", str(det["x"]), "--batch-size", "8", "--method", "minmax",
              "--metric", "detection:score=0.25", "--output-name", "output0"]
    code = main(["autotune", str(det["model"]), *common, "--max-accuracy-drop", "0",
                 "-o", str(d / "p.yaml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "metric detection (output output0)" in out
    assert "warning: the target was met only by keeping 2 of 2" in " ".join(err.split())
    text = (d / "p.yaml").read_text()
    assert "# WARNING:" in text and "metric detection" in text
    assert sorted(o["name"] for o in yaml.safe_load(text)["overrides"]) == [CONV1, CONV2]

    code = main(["sensitivity", str(det["model"]), *common, "-o", str(d / "sens")])
    out, err = capsys.readouterr()
    assert code == 0, err
    with open(d / "sens" / "sensitivity.csv") as fh:
        rows = {r["layer"]: r for r in csv.DictReader(fh)}
    assert float(rows[CONV2]["metric_int8_only"]) < 75 and rows[CONV2]["rank"] == "1"
    assert "scored against fp32" in out

    code = main(["autotune", str(det["model"]), *common[:-2], "--output-name", "nope",
                 "--max-accuracy-drop", "0", "-o", str(d / "q.yaml")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--output-name 'nope': the model's outputs are output0" in err


RECIPE = """
model: det.onnx
metric: {metric}
output: output0
data:
  calibration: {{source: x.npy, batch_size: 8}}
calibration: {{method: minmax}}
configs:
  - {{name: fp32, precision: fp32}}
  - {{name: int8, precision: int8}}
latency: {{iterations: 0}}
"""

PLUGIN = '''
import numpy as np
from quantkit.evaluate import Metric


class ClassAgreement(Metric):
    """Percent of anchors whose best class is FP32's (rows 4: of a [N, 4+C, A] head)."""

    needs_labels = False

    def __init__(self) -> None:
        self.same, self.n = 0, 0

    def reference_targets(self, reference):
        return np.asarray(reference)[:, 4:].argmax(axis=1)

    def update(self, outputs, targets):
        best = np.asarray(outputs)[:, 4:].argmax(axis=1)
        self.same += int((best == targets).sum())
        self.n += best.size

    def result(self):
        return 100.0 * self.same / self.n
'''


def test_sweep_recipe_metric_mapping_and_plugin(det: dict[str, Path]) -> None:
    d = det["dir"]
    (d / "plugins").mkdir(exist_ok=True)
    (d / "plugins" / "cls.py").write_text(PLUGIN, encoding="utf-8")
    for name, metric in (("map", "{name: detection, score: 0.25}"),
                         ("plugin", "{plugin: plugins/cls.py:ClassAgreement}")):
        (d / f"{name}.yaml").write_text(RECIPE.format(metric=metric))
        res = run_sweep(d / f"{name}.yaml", d / f"out-{name}")
        assert res.failed == []
        rows = {r["config"]: r for r in res.rows}
        assert rows["fp32"]["accuracy"] == 100.0 and rows["int8"]["accuracy"] < 75
        assert rows["int8"]["cosine"] > 0.999  # the flattened view still looks fine
        doc = json.loads((d / f"out-{name}" / "configs" / "int8" / "result.json").read_text())
        assert [o["name"] for o in doc["outputs"]] == ["output0"]
    assert rows["int8"]["metric"] == "ClassAgreement"
    # the plugin's count by hand: the INT8 logits all round to 0, so class 0 wins everywhere
    x = np.load(det["x"])
    logits = 4 * x[:, 4:6, 0, :] - 2
    assert rows["int8"]["accuracy"] == pytest.approx(100 * np.mean(logits.argmax(1) == 0))
    (d / "bad.yaml").write_text(RECIPE.format(metric="detection:scor=1"))
    with pytest.raises(InputError, match="unknown option 'scor'"):
        load_recipe(d / "bad.yaml")
