"""autotune(..., rescue=...) / `quantkit autotune --rescue`: transforms before the search.

On the shipped demo CNN with entropy scales (which leave all-INT8 ~2 points below FP32, so
the search has to keep layers out of INT8). Checks that it runs end to end and reports what
was applied; it does not assert that the rescue helps (measured in docs/transforms.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper

from quantkit.capture import calibrate
from quantkit.sweep import Evaluator, autotune
from quantkit.transforms import applied_transforms


def _biases(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from quantkit.transforms._common import working_copy

    m = working_copy(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.name: inits[n.input[2]] for n in m.graph.node
            if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits}


def test_autotune_with_bias_correction_rescue(demo: dict[str, Any]) -> None:
    name = demo["model"].graph.input[0].name
    cal = [{name: demo["cal"][i: i + 64]} for i in range(0, 128, 64)]
    ev = Evaluator(str(demo["path"]), [{name: demo["eval"][i: i + 100]}
                                       for i in range(0, 200, 100)],
                   demo["labels"][:200], None)
    scales = calibrate(demo["path"], cal, method="entropy").scales
    model = onnx.load(str(demo["path"]))
    res = autotune(model, scales, ev, 0.5, rescue=("bias_correction",), rescue_data=cal)
    assert [r["transform"] for r in res.rescue] == ["bias_correction"]
    assert res.rescue[0]["changed"] == 7  # the demo's 5 Conv + 2 Gemm
    assert res.model is not None
    assert [r["transform"] for r in applied_transforms(res.model)] == ["bias_correction"]
    doc = res.to_dict()
    assert json.loads(json.dumps(doc))["rescue"][0]["transform"] == "bias_correction"
    text = res.to_yaml()
    assert "rescue transforms: bias_correction (7 changed)" in text
    assert yaml.safe_load(text)["default"] == "int8"
    # kept layers got their original bias back; INT8 layers keep the correction
    before, after = _biases(model), _biases(res.model)
    for layer, b in before.items():
        if layer in res.kept:
            np.testing.assert_array_equal(after[layer], b)
        else:
            assert not np.array_equal(after[layer], b), layer
    assert res.evaluations >= 1 and res.final.accuracy is not None


def test_autotune_rescue_needs_data_and_known_names(demo: dict[str, Any]) -> None:
    from quantkit.errors import InputError

    name = demo["model"].graph.input[0].name
    ev = Evaluator(str(demo["path"]), [{name: demo["eval"][:50]}], None, None)
    scales = calibrate(demo["path"], [{name: demo["cal"][:64]}], method="minmax").scales
    with pytest.raises(InputError, match="calibration data"):
        autotune(demo["model"], scales, ev, 1.0, rescue=("bias_correction",))
    with pytest.raises(InputError, match="unknown rescue"):
        autotune(demo["model"], scales, ev, 1.0, rescue=("magic",), rescue_data=[])


def test_cli_autotune_rescue(demo: dict[str, Any], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from quantkit.cli.main import main

    np.save(tmp_path / "x.npy", demo["cal"][:96])
    code = main(["autotune", str(demo["path"]), "--data", str(tmp_path / "x.npy"),
                 "--method", "minmax", "--max-accuracy-drop", "1", "--rescue", "bias-correct",
                 "-o", str(tmp_path / "p.yaml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "rescue: bias_correction (7 changed)" in out
    assert "rescue transforms: bias_correction" in (tmp_path / "p.yaml").read_text()
    rescued = onnx.load(str(tmp_path / "p.onnx"))
    assert [r["transform"] for r in applied_transforms(rescued)] == ["bias_correction"]
    # the file quantizes the transformed model
    assert main(["quantize", str(tmp_path / "p.onnx"), "--data", str(tmp_path / "x.npy"),
                 "--method", "minmax", "--precision", str(tmp_path / "p.yaml"),
                 "-o", str(tmp_path / "q.onnx")]) == 0


def _plain_layer_sqnr(reference: onnx.ModelProto, candidate: onnx.ModelProto,
                      layers: list[str], batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """SQNR of each layer's output, with plain onnxruntime and numpy (not quantkit's code)."""
    import onnxruntime as ort

    def outputs(model: onnx.ModelProto) -> dict[str, list[np.ndarray]]:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        names = {n.name: n.output[0] for n in m.graph.node}
        for layer in layers:
            m.graph.output.append(onnx.ValueInfoProto(name=names[layer]))
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.disable_quant_qdq", "1")  # Q/DQ as written
        sess = ort.InferenceSession(m.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        runs = [sess.run([names[x] for x in layers], b) for b in batches]
        return {x: [r[i] for r in runs] for i, x in enumerate(layers)}

    ref, cand = outputs(reference), outputs(candidate)
    out = {}
    for x in layers:
        r = np.concatenate([a.ravel() for a in ref[x]]).astype(np.float64)
        q = np.concatenate([a.ravel() for a in cand[x]]).astype(np.float64)
        out[x] = float(10 * np.log10(np.sum(r ** 2) / np.sum((q - r) ** 2)))
    return out


def test_autotune_per_layer_report(demo: dict[str, Any], tmp_path: Path) -> None:
    """Kept layers, rescued layers and their all-INT8 SQNR before / after the rescue."""
    from quantkit.model import save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from quantkit.sweep.sensitivity import rank
    from quantkit.transforms import bias_correct, equalize

    name = demo["model"].graph.input[0].name
    cal = [{name: demo["cal"][i: i + 64]} for i in range(0, 128, 64)]
    batches = [{name: demo["eval"][i: i + 100]} for i in range(0, 200, 100)]
    ev = Evaluator(str(demo["path"]), batches, demo["labels"][:200], None)
    scales = calibrate(demo["path"], cal, method="entropy").scales
    model = onnx.load(str(demo["path"]))
    res = autotune(model, scales, ev, 0.3, rescue="cle,bias-correction", rescue_data=cal)
    assert res.kept, "entropy all-INT8 misses a 0.3-point target: layers must be kept"
    kept_rows = [r for r in res.layers if r.outcome.startswith("kept_")]
    assert sorted(r.layer for r in kept_rows) == sorted(res.kept)
    assert {r.outcome for r in kept_rows} == {f"kept_{res.keep_as}"}
    assert len(res.layers) == len({r.layer for r in res.layers})  # one row per layer
    order = [r.layer for r in rank(res.sensitivity, res.all_int8)]
    assert [r.rank for r in res.layers] == sorted(order.index(r.layer) + 1
                                                  for r in res.layers)
    for r in res.layers:
        assert r.outcome in ("rescued", "int8", f"kept_{res.keep_as}")
        assert r.outcome != "rescued" or (r.layer not in res.kept
                                          and r.sqnr_after_db > r.sqnr_before_db)
        assert "bias_correction" in r.how  # every Conv/Gemm of the demo is corrected
    layers = [r.layer for r in res.layers]
    # before: the original model with the original scales, all INT8, against FP32
    before = _plain_layer_sqnr(model, quantize_model(model, scales, PrecisionConfig()).model,
                               layers, batches)
    # after: equalize, re-calibrate, correct biases with those scales; the reference is the
    # equalized FP32 model (equalization rescales the channels of the first layer of a pair)
    eq, _ = equalize(model)
    save_model(eq, tmp_path / "eq.onnx")
    eq_scales = calibrate(tmp_path / "eq.onnx", cal, method="entropy").scales
    fixed, _ = bias_correct(eq, cal, scales=eq_scales)
    after = _plain_layer_sqnr(eq, quantize_model(fixed, eq_scales, PrecisionConfig()).model,
                              layers, batches)
    for r in res.layers:
        assert r.sqnr_before_db == pytest.approx(before[r.layer], abs=1e-4), r.layer
        assert r.sqnr_after_db == pytest.approx(after[r.layer], abs=1e-4), r.layer
    pairs = {"/conv2/Conv", "/conv3/Conv", "/conv4/Conv", "/conv5/Conv", "/fc1/Gemm",
             "/fc2/Gemm"}
    assert all(("equalize" in r.how) == (r.layer in pairs) for r in res.layers)
    doc = json.loads(json.dumps(res.to_dict()))
    assert [d["layer"] for d in doc["layers"]] == layers
    assert doc["layers"][0]["sqnr_before_db"] == pytest.approx(res.layers[0].sqnr_before_db)
    text = res.to_yaml()
    assert "# per layer (all-INT8 output SQNR without -> with rescue):" in text
    for r in res.layers:
        assert f"#   {r.layer}: {r.outcome} (" in text

    # without rescue: before == after, nothing "rescued"
    plain = autotune(model, scales, ev, 0.3)
    assert plain.kept and sorted(r.layer for r in plain.layers
                                 if r.outcome.startswith("kept_")) == sorted(plain.kept)
    for r in plain.layers:
        assert r.outcome != "rescued" and r.how == ()
        assert r.sqnr_before_db == r.sqnr_after_db
        assert r.sqnr_before_db == pytest.approx(before.get(r.layer, r.sqnr_before_db),
                                                 abs=1e-4)


def test_cli_autotune_prints_the_per_layer_table(demo: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from quantkit.cli.main import main

    np.save(tmp_path / "x.npy", demo["cal"][:128])
    np.save(tmp_path / "e.npy", demo["eval"][:200])
    np.save(tmp_path / "l.npy", demo["labels"][:200])
    code = main(["autotune", str(demo["path"]), "--data", str(tmp_path / "x.npy"),
                 "--eval-data", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy"),
                 "--batch-size", "100", "--max-accuracy-drop", "0.3", "--method", "entropy",
                 "--rescue", "cle,bias-correction", "-o", str(tmp_path / "p.yaml")])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    assert "rescue: equalize (4 changed); bias_correction (7 changed)" in out
    assert "outcome" in out and "SQNR before -> after" in out
    kept = [o["name"] for o in yaml.safe_load((tmp_path / "p.yaml").read_text())["overrides"]]
    assert kept
    for layer in kept:
        assert any(layer in line and "kept_fp32" in line for line in out.splitlines())
    assert main(["autotune", str(demo["path"]), "--data", str(tmp_path / "x.npy"),
                 "--max-accuracy-drop", "1", "--rescue", "smoothquant:3",
                 "-o", str(tmp_path / "bad.yaml")]) == 2
    assert "alpha must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad.yaml").exists()
