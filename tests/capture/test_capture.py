"""Activation capture with ONNX Runtime and end-to-end calibrate()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quantkit.calibrators import EntropyCalibrator, MinMaxCalibrator
from quantkit.capture import ActivationCapture, calibrate
from quantkit.errors import InputError
from quantkit.model import activation_tensors
from tests.builders.cnn import small_cnn, two_input_model


def _data(n: int, spatial: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, spatial, spatial)).astype(np.float32)


def test_activation_list_excludes_weights_and_constants(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx", weights_as_constant=True)
    names = [a.name for a in activation_tensors(onnx.load(str(m)))]
    assert names == ["x", "c1", "r1", "c2", "s", "r2", "gap", "flat", "logits", "probs"]
    assert "w1c" not in names


def test_captured_values_equal_onnxruntime_outputs(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx")
    cap = ActivationCapture(m)
    x = _data(4)
    acts = cap.run_batch({"x": x})
    ref = ort.InferenceSession(str(m), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(acts["probs"], ref, rtol=1e-6)
    assert np.array_equal(acts["x"], x)
    np.testing.assert_array_equal(acts["r1"], np.maximum(acts["c1"], 0))


def test_minmax_calibration_equals_max_over_all_batches(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx")
    x = _data(40)
    np.save(tmp_path / "x.npy", x)
    res = calibrate(m, str(tmp_path / "x.npy"), method="minmax", batch_size=7)
    full = ActivationCapture(m).run_batch({"x": x})  # one pass over everything at once
    assert res.num_samples == 40
    for name, arr in full.items():
        assert res.scales.amaxes[name] == float(np.abs(arr).max()), name


def test_entropy_calibration_equals_feeding_the_calibrator_directly(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx")
    x = _data(64, seed=1)
    np.savez(tmp_path / "d.npz", x=x)
    res = calibrate(m, str(tmp_path / "d.npz"), batch_size=16, method="entropy")
    cap = ActivationCapture(m)
    cal = EntropyCalibrator()
    for lo in range(0, 64, 16):
        cal.update_many(cap.run_batch({"x": x[lo: lo + 16]}))
    assert res.scales.amaxes == cal.compute_amax()
    assert res.scales.method == "entropy" and res.scales.num_samples == 64


def test_dynamic_spatial_dims(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx", spatial="S")
    batches = [{"x": _data(3, spatial=s, seed=s)} for s in (8, 12, 5)]
    res = calibrate(m, batches, method="minmax")
    assert res.num_samples == 9 and len(res.scales.scales) == 10


def test_static_batch_axis_is_fed_in_chunks(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx", batch=2)
    np.save(tmp_path / "x.npy", _data(10))
    res = calibrate(m, str(tmp_path / "x.npy"), method="minmax", batch_size=4)
    assert res.num_samples == 10


def test_two_inputs_from_npz(tmp_path: Path) -> None:
    m = two_input_model(tmp_path / "two.onnx")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", a=rng.standard_normal((20, 4)).astype(np.float32),
             b=rng.standard_normal((20, 4)).astype(np.float32))
    res = calibrate(m, str(tmp_path / "d.npz"), method="minmax", batch_size=6)
    assert set(res.scales.scales) == {"a", "b", "ra", "y"}


def test_nan_in_data_names_the_input(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx")
    x = _data(8)
    x[5, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="input 'x' contains NaN.*--allow-nonfinite"):
        calibrate(m, [{"x": x}], method="minmax")
    res = calibrate(m, [{"x": x}], method="minmax", allow_nonfinite=True)
    assert np.isfinite(res.scales.amaxes["x"])


def test_empty_data_is_an_input_error(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="no samples"):
        calibrate(m, [], method="minmax")


def test_calibrator_instance_and_selected_tensors(tmp_path: Path) -> None:
    m = small_cnn(tmp_path / "m.onnx")
    cap = ActivationCapture(m, tensors=["r1", "logits"])
    cal = MinMaxCalibrator()
    cap.run([{"x": _data(4)}], cal.update_many)
    assert cal.tensor_names == ["r1", "logits"]
    with pytest.raises(InputError, match="no activation tensor named 'nope'"):
        ActivationCapture(m, tensors=["nope"])


def test_entropy_warns_when_it_clips_a_tensor_hard(caplog: pytest.LogCaptureFixture) -> None:
    """The demo CNN: TensorRT's KL threshold clips /relu_1 to a fraction of its range
    (the int8-entropy row of the demo sweep loses 1.8 points); minmax never warns."""
    import logging

    from quantkit.capture.runner import warn_heavy_clipping
    from quantkit.demo import asset

    with np.load(asset("demo_data.npz"), allow_pickle=False) as d:
        x = (d["calibration"].astype(np.float32) / 255.0)[:, None]
    with caplog.at_level(logging.WARNING, logger="quantkit.capture.runner"):
        res = calibrate(asset("demo_cnn.onnx"), x, batch_size=64, method="entropy")
    assert "entropy calibration clipped" in caplog.text
    named = warn_heavy_clipping(res.calibrator, res.scales.amaxes)
    assert "/relu_1/Relu_output_0" in named
    hist = res.calibrator.histogram("/relu_1/Relu_output_0")
    values_max = np.flatnonzero(hist.counts)[-1] * hist.width
    assert res.scales.amaxes["/relu_1/Relu_output_0"] < 0.25 * values_max  # independent check
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quantkit.capture.runner"):
        calibrate(asset("demo_cnn.onnx"), x, batch_size=64, method="minmax")
    assert "clipped" not in caplog.text
