"""Calibration within a memory budget: staged capture gives the scales of one pass, bit for
bit; shapes whose one sample cannot fit are refused before anything is allocated."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantkit.capture import ActivationCapture, calibrate
from quantkit.capture.staged import parse_memory, plan_stages
from quantkit.cli.main import main
from quantkit.errors import InputError
from tests.builders.cnn import small_cnn
from tests.builders.robust import if_model, state_model


def test_parse_memory() -> None:
    assert parse_memory("4GiB") == 4 << 30
    assert parse_memory("512MB") == 512_000_000
    assert parse_memory("1.5k") == 1500
    assert parse_memory(" 2048 ") == 2048
    for bad in ("lots", "0", "-1GiB", "4 parsecs"):
        with pytest.raises(InputError, match="memory_budget"):
            parse_memory(bad)


def test_plan_stages_cuts_in_order_within_the_limit() -> None:
    outs = [["a"], ["b"], [], ["c"], ["d"]]
    sizes = {"a": 40, "b": 50, "c": 30, "d": 200}
    # a+b = 90 <= 100 (the node without activations joins them); c would make 120: cut;
    # d alone exceeds the limit: a stage of its own
    assert plan_stages(outs, sizes, 100) == [(0, 3), (3, 4), (4, 5)]
    assert plan_stages(outs, sizes, 10_000) == [(0, 5)]
    # an unknown size counts as the largest known one: x is 60, a + x > 100
    assert plan_stages([["a"], ["x"], ["b"]], {"a": 60, "b": 1}, 100) == [(0, 1), (1, 3)]


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax", "mse"])
def test_staged_scales_identical_to_one_pass(tmp_path: Path, method: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = small_cnn(tmp_path / "m.onnx", spatial=16)
    x = np.random.default_rng(3).standard_normal((40, 3, 16, 16)).astype(np.float32) * 2
    one = calibrate(path, {"x": x}, method=method, batch_size=16, memory_budget="1GiB")
    # 16 images x 8 x 16 x 16 floats = 128 KiB per conv output: 200 KB forces many stages
    with caplog.at_level(logging.INFO, logger="quantkit.capture.runner"):
        staged = calibrate(path, {"x": x}, method=method, batch_size=16, memory_budget=200_000)
    assert "capturing in" in caplog.text and "stages" in caplog.text
    assert staged.num_samples == one.num_samples == 40
    assert list(staged.scales.amaxes) == list(one.scales.amaxes)
    for name, amax in one.scales.amaxes.items():
        assert staged.scales.amaxes[name] == amax, name  # bit-identical, not approximately
    want_r1 = float(np.maximum(0, x).max())  # a sanity anchor independent of staging
    assert one.scales.amaxes["x"] <= float(np.abs(x).max()) and want_r1 > 0


def test_stages_pass_outer_reads_and_batch_axes(tmp_path: Path) -> None:
    """A stage boundary between a tensor and the If body that reads it, and a state whose
    batch is axis 1: the staged run feeds both right."""
    path = if_model(tmp_path / "if.onnx")
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    opts = {"constants": {"flag": False}}
    one = calibrate(path, {"x": x}, method="minmax", data_options=opts)
    staged = calibrate(path, {"x": x}, method="minmax", data_options=opts, memory_budget=64)
    assert staged.scales.amaxes == one.scales.amaxes
    # else-branch: y = sigmoid(relu(x) @ 2I)
    want = 1 / (1 + np.exp(-2 * np.maximum(x, 0).astype(np.float64)))
    assert one.scales.amaxes["y"] == pytest.approx(want.max(), rel=1e-6)
    path = state_model(tmp_path / "s.onnx")
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((6, 4)).astype(np.float32),
            "state": rng.standard_normal((6, 2, 4)).astype(np.float32)}
    one = calibrate(path, data, method="minmax")
    staged = calibrate(path, data, method="minmax", memory_budget=100)
    assert staged.scales.amaxes == one.scales.amaxes


def test_sink_gets_each_tensor_once_per_batch(tmp_path: Path) -> None:
    path = small_cnn(tmp_path / "m.onnx")
    cap = ActivationCapture(path, memory_budget=2_000)
    seen: list[list[str]] = []
    x = np.ones((4, 3, 8, 8), np.float32)
    cap.run([{"x": x}, {"x": x}], lambda acts: seen.append(list(acts)))
    names = [a.name for a in cap.activations]
    assert len(seen) > 2  # staged
    flat = [n for part in seen for n in part]
    assert flat == names + names  # every tensor once per batch, in graph order


def _relu_model(path: Path, dims: list[int | str]) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_absurd_dims_refused_before_allocation(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 2, 2), np.float32))
    # 2^32 elements per sample: refused when the model is loaded, whatever the command
    huge = _relu_model(tmp_path / "huge.onnx", ["N", 1, 65536, 65536])
    code = main(["calibrate", str(huge), "--data", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "4294967296 elements with its dynamic dims at 1" in err
    assert "Traceback" not in err
    # 1 GiB per sample: loads, but cannot fit a 512 MiB budget
    big = _relu_model(tmp_path / "big.onnx", ["N", 1, 16384, 16384])
    with pytest.raises(InputError, match=r"x: float32\[Nx1x16384x16384\]: one sample takes "
                                         r"at least 1 GiB, more than the memory budget"):
        calibrate(big, str(tmp_path / "x.npy"), memory_budget="512MiB")
    code = main(["calibrate", str(big), "--data", str(tmp_path / "x.npy"),
                 "--memory-budget", "256MiB"])
    err = capsys.readouterr().err
    assert code == 2 and "16384" in err and "Traceback" not in err
