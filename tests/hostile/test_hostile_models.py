"""Unusual but legal models and malformed data/sidecar files: handled, or refused with exit 2,
never an internal error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _hostile_common import cli, project, refused
from onnx import helper


def test_an_ir3_model_with_initializers_as_inputs_quantizes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    m = onnx.load(str(model))
    m.ir_version = 3
    for init in m.graph.initializer:
        m.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type,
                                                           list(init.dims)))
    onnx.save(m, str(model))
    out = tmp_path / "q.onnx"
    code, _, err = cli(["quantize", model, "--data", data, "-o", out], capsys)
    assert code == 0, err
    q = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = sess.run(["probs"], {"x": np.load(data)})
    assert y.shape == (8, 10) and np.allclose(y.sum(axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("command", ["calibrate", "quantize"])
def test_duplicate_node_names_get_one_verdict(tmp_path: Path, command: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    m = onnx.load(str(model))
    for node in m.graph.node:
        node.name = "same"
    onnx.save(m, str(model))
    out = ["--scales", tmp_path / "s.json"] if command == "calibrate" else ["-o",
                                                                           tmp_path / "q.onnx"]
    code, _, err = cli([command, model, "--data", data, *out], capsys)
    # one verdict: both take the model (node names do not matter to calibration, and the
    # writer renames duplicates), and what quantize writes loads in ONNX Runtime
    assert code == 0, err
    if command == "quantize":
        ort.InferenceSession(str(tmp_path / "q.onnx"))


def test_a_malformed_npz_member_header_is_exit_2(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = project(tmp_path)
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((8, 3, 8, 8), np.float32))
    raw = bytearray(buf.getvalue())
    at = raw.find(b"'descr'")
    raw[at:at + 7] = b"'descX'"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    code, _, err = cli(["calibrate", model, "--data", bad, "--scales", tmp_path / "s.json"],
                       capsys)
    refused(code, err, "bad.npz")


@pytest.mark.parametrize("sidecar", [{"format": 5, "model": 7}, [1, 2], "text",
                                     {"format": "quantkit-engine/1", "inputs": "x"}])
def test_an_engine_sidecar_with_wrong_types_is_exit_2(tmp_path: Path, sidecar: object,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"\0" * 64)
    (tmp_path / "e.engine.json").write_text(json.dumps(sidecar))
    code, _, err = cli(["inspect", engine], capsys)
    refused(code, err, "e.engine")


def test_absurd_dims_behind_a_dynamic_batch_axis_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    m = onnx.load(str(model))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param  # the batch axis stays dynamic
    dims[2].dim_value = dims[3].dim_value = 1 << 20
    onnx.save(m, str(model))
    code, _, err = cli(["calibrate", model, "--data", data, "--scales", tmp_path / "s.json"],
                       capsys)
    refused(code, err, "declares 3298534883328 elements")
