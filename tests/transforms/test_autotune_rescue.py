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
