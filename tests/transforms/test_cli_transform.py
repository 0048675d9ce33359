"""``quantkit transform``: exit codes, no partial output, the reports in the model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from quantkit.cli.main import main
from quantkit.demo import prepare_demo
from quantkit.transforms import applied_transforms


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    prepare_demo(out)
    return out


def test_equalize_and_bias_correct(demo_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.onnx"
    code = main(["transform", str(demo_dir / "demo_cnn.onnx"), "--equalize", "--bias-correct",
                 "--data", str(demo_dir / "data" / "calibration.npy"), "--method", "minmax",
                 "--max-samples", "64", "-o", str(out), "--json"])
    assert code == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["transform"] for r in reports] == ["equalize", "bias_correction"]
    assert applied_transforms(onnx.load(str(out))) == reports
    assert reports[1]["settings"]["num_samples"] == 64


def test_smoothquant_keeps_the_function(demo_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from quantkit._ort import session

    out = tmp_path / "s.onnx"
    code = main(["transform", str(demo_dir / "demo_cnn.onnx"), "--smoothquant", "--alpha",
                 "0.8", "--data", str(demo_dir / "data" / "calibration.npy"),
                 "--max-samples", "64", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "smoothquant: 2 changed" in text  # the demo's two Gemms
    rep = applied_transforms(onnx.load(str(out)))[-1]
    assert rep["transform"] == "smoothquant" and rep["settings"]["alpha"] == 0.8
    x = np.load(demo_dir / "data" / "calibration.npy")[:32]
    a, b = (session(str(p), providers=["CPUExecutionProvider"]) for p in
            (demo_dir / "demo_cnn.onnx", out))
    feeds = {a.get_inputs()[0].name: x.astype(np.float32)}
    np.testing.assert_allclose(b.run(None, feeds)[0], a.run(None, feeds)[0], atol=1e-5)


def _pair_model(tmp_path: Path, bn: bool = False, clip: bool = False) -> tuple[Path, Path]:
    """Conv -> [BN] -> Relu/ReLU6 -> Conv(1x1) with channels always above 0, and its data."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((4, 3, 3, 3)) * 0.3,
             "b1": np.array([4.0, -1.0, 3.0, 0.5]), "w2": rng.standard_normal((2, 4, 1, 1)),
             "b2": np.zeros(2), "g": np.array([1.0, 1.0, 0.5, 1.0]),
             "be": np.array([5.0, 0.0, 4.0, 0.0]), "m": np.zeros(4), "v": np.ones(4),
             "lo": np.array(0.0), "hi": np.array(6.0)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h0"], name="conv1", pads=[1] * 4)]
    h = "h0"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["h0", "g", "be", "m", "v"],
                                      ["h"], name="bn"))
        h = "h"
    nodes.append(helper.make_node("Clip", [h, "lo", "hi"], ["a"], name="act") if clip
                 else helper.make_node("Relu", [h], ["a"], name="act"))
    nodes.append(helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    path, data = tmp_path / "pair.onnx", tmp_path / "x.npy"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.save(data, rng.uniform(-1, 1, (48, 3, 6, 6)).astype(np.float32))
    return path, data


def test_high_bias_with_data_after_equalize(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from quantkit._ort import session

    model, data = _pair_model(tmp_path)
    out = tmp_path / "t.onnx"
    code = main(["transform", str(model), "--equalize", "--high-bias", "--data", str(data),
                 "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "equalize: 1 changed" in text and "high_bias: 1 changed" in text
    assert "absorbed 2/4 channels" in text and "outputs checked on 32 samples" in text
    assert [r["transform"] for r in applied_transforms(onnx.load(str(out)))] == [
        "equalize", "high_bias"]
    x = np.load(data)
    a, b = (session(str(p), providers=["CPUExecutionProvider"]) for p in (model, out))
    np.testing.assert_allclose(b.run(None, {"x": x})[0], a.run(None, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)


def test_high_bias_from_batchnorm_without_data(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = _pair_model(tmp_path, bn=True)
    out = tmp_path / "t.onnx"
    assert main(["transform", str(model), "--equalize", "--high-bias", "-o", str(out),
                 "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    # absorbed before equalize's BN folding drops the statistics (the two commute)
    assert [r["transform"] for r in reports] == ["high_bias", "equalize"]
    assert reports[0]["changed"][0]["source"] == "batchnorm"
    assert reports[0]["changed"][0]["absorbed_channels"] == 2  # beta - 3 gamma > 0: ch 0, 2
    assert [r["transform"] for r in applied_transforms(onnx.load(str(out)))] == [
        "fold_batchnorm", "high_bias", "equalize"]


def test_relu6_to_relu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = _pair_model(tmp_path, clip=True)
    out = tmp_path / "t.onnx"
    assert main(["transform", str(model), "--equalize", "--relu6-to-relu", "--data", str(data),
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ReLU6 replaced by Relu (FP32 function changed): act" in text
    assert "equalize: 1 changed" in text
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == ["Conv", "Relu", "Conv"]


@pytest.mark.parametrize("args", [[], ["--bias-correct"], ["--smoothquant"], ["--high-bias"],
                                  ["--relu6-to-relu"]])
def test_bad_usage_exits_2_without_output(demo_dir: Path, tmp_path: Path, args: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.onnx"
    assert main(["transform", str(demo_dir / "demo_cnn.onnx"), *args, "-o", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
