"""Models that used to crash or pass silently: integer inputs, already-quantized models,
control flow, plans without INT8 nodes (issue 18)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quantkit.capture import calibrate
from quantkit.cli.main import main
from quantkit.errors import InputError
from quantkit.model import find_quantized_ops, subgraph_nodes
from tests.builders.robust import OPSET, ids_model, if_model, integer_quantized_model


def run(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def ids(tmp_path: Path) -> Path:
    ids_model(tmp_path / "ids.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "ids.npz", ids=rng.integers(0, 50, (24, 6)).astype(np.int64))
    return tmp_path


def test_integer_first_input_every_rescue(ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """int64 ids feed a Gather: the ids are never an activation, every rescue pass runs."""
    res = calibrate(ids / "ids.onnx", str(ids / "ids.npz"), method="minmax")
    assert "ids" not in res.scales.scales and "e" in res.scales.scales
    code, out, err = run(["quantize", ids / "ids.onnx", "--data", ids / "ids.npz", "--rescue",
                          "cle,smoothquant,bias-correction", "-o", ids / "q.onnx"], capsys)
    assert code == 0, err
    assert "rescue bias_correction: 1 changed (fc1)" in out, out
    q = onnx.load(str(ids / "q.onnx"))
    onnx.checker.check_model(q, full_check=True)
    sess = ort.InferenceSession(str(ids / "q.onnx"), providers=["CPUExecutionProvider"])
    with np.load(ids / "ids.npz") as d:
        y = sess.run(None, {"ids": d["ids"][:4]})[0]
    assert y.shape == (4, 4) and np.isfinite(y).all()


def test_bias_correction_weights_batches_by_samples_without_float_input(ids: Path) -> None:
    """The batch mean shift is weighted by each chunk's samples (uneven last batch)."""
    from quantkit.transforms import bias_correct

    model = onnx.load(str(ids / "ids.onnx"))
    with np.load(ids / "ids.npz") as d:
        data = d["ids"]
    _, report = bias_correct(model, {"ids": data[:10]}, batch_size=4)
    assert report.settings["num_samples"] == 10
    assert [c["layer"] for c in report.changed] == ["fc1"]


def test_already_quantized_refused_everywhere(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = integer_quantized_model(tmp_path / "dyn.onnx")
    found = find_quantized_ops(onnx.load(str(path)))
    assert found is not None and found.counts == {"DynamicQuantizeLinear": 1,
                                                  "MatMulInteger": 1}
    assert found.first == "dq_x"
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match=r"already quantized \(2 node\(s\).*'dq_x'.*inspect"):
        calibrate(path, str(tmp_path / "x.npy"))
    for args in (["calibrate", path, "--data", tmp_path / "x.npy", "--cache", tmp_path / "c"],
                 ["quantize", path, "--data", tmp_path / "x.npy", "-o", tmp_path / "q.onnx"],
                 ["calibrate", path, "--data", tmp_path / "x.npy", "--shards", "2"]):
        code, out, err = run(args, capsys)
        assert code == 2, (args, out, err)
        assert "MatMulInteger" in err and "Traceback" not in err
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "c").exists()


def test_qdq_model_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Q/DQ model written by quantkit itself is refused as a starting point."""
    d = tmp_path
    ids_model(d / "m.onnx")
    np.savez(d / "ids.npz", ids=np.random.default_rng(0).integers(0, 50, (8, 6)))
    assert run(["quantize", d / "m.onnx", "--data", d / "ids.npz", "-o", d / "q.onnx"],
               capsys)[0] == 0
    code, _, err = run(["quantize", d / "q.onnx", "--data", d / "ids.npz", "-o", d / "q2.onnx"],
                       capsys)
    assert code == 2 and "QuantizeLinear" in err and "DequantizeLinear" in err


def test_plan_without_int8_needs_no_data(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path
    ids_model(d / "m.onnx")
    (d / "p.yaml").write_text("default: fp16\n")
    code, out, err = run(["quantize", d / "m.onnx", "--precision", d / "p.yaml",
                          "-o", d / "q.onnx"], capsys)
    assert code == 0, err
    assert "0 int8" in out
    onnx.checker.check_model(onnx.load(str(d / "q.onnx")), full_check=True)
    # the default plan has INT8 nodes: scales are required, and the message says which
    code, out, err = run(["quantize", d / "m.onnx", "-o", d / "q2.onnx"], capsys)
    assert code == 2 and "--data" in err and "--scales" in err
    assert not (d / "q2.onnx").exists()


def test_if_bodies_warned_not_silent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = if_model(tmp_path / "if.onnx")
    assert subgraph_nodes(onnx.load(str(path))) == {"If 'branchy'": 4}
    data = {"x": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)}
    with caplog.at_level(logging.WARNING):
        res = calibrate(path, data, method="minmax", data_options={"constants": {"flag": True}})
    assert "4 node(s) inside If/Loop/Scan bodies are not calibrated: If 'branchy'" \
        in caplog.text
    # what the main graph sees is calibrated: the If's input h and output y
    assert {"x", "h", "y"} <= set(res.scales.scales)
    assert OPSET  # the fixtures use opset 17


def test_duplicate_node_names_calibrate_like_quantize(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # quantize renames duplicate node names; calibrate used to stop at ONNX Runtime's refusal
    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["a"], name="n"),
         onnx.helper.make_node("Relu", ["a"], ["y"], name="n")], "dup",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])], [w])
    model = onnx.helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "dup.onnx"))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = run(["calibrate", tmp_path / "dup.onnx", "--data", tmp_path / "x.npy",
                        "--method", "minmax", "--scales", tmp_path / "s.json"], capsys)
    assert code == 0, err
    import json

    amax = {k: v["amax"] for k, v in json.loads((tmp_path / "s.json").read_text())["tensors"]
            .items()}
    # the MatMul's input (its output ``a`` feeds only the Relu: skipped, see --all-tensors)
    assert amax["x"] == pytest.approx(float(np.abs(x).max()), rel=1e-6) and "a" not in amax
    code, _, err = run(["quantize", tmp_path / "dup.onnx", "--scales", tmp_path / "s.json",
                        "-o", tmp_path / "q.onnx"], capsys)
    assert code == 0, err
