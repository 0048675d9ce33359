"""The Q/DQ writer: placement, weight quantisation, numerics, FP16, TensorRT-RTX parse/build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from quantkit.calibrators import ScaleTable
from quantkit.capture import ActivationCapture, calibrate
from quantkit.errors import InputError
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig, PrecisionPlan
from quantkit.qdq.writer import PLAN_METADATA_KEY, quantize_model, quantize_weight
from tests.builders.cnn import matmul_model, small_cnn

X = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)


@pytest.fixture()
def cnn(tmp_path: Path) -> tuple[Path, ScaleTable]:
    path = small_cnn(tmp_path / "m.onnx")
    return path, calibrate(path, [{"x": X}], method="minmax").scales


def _nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_placement_follows_tensorrt_rules(cnn: tuple[Path, ScaleTable]) -> None:
    path, scales = cnn
    res = quantize_model(onnx.load(str(path)), scales)
    nodes, inits = _nodes(res.model), _inits(res.model)
    assert res.activation_qdq == ["flat", "r1", "x"]
    assert res.weight_qdq == ["w1", "w2", "wf"]
    conv1, conv2, add = nodes["/conv1/Conv"], nodes["/conv2/Conv"], nodes["/add/Add"]
    assert conv1.input[0] == "x_dequantized" and conv1.input[1] == "w1_dequantized"
    assert conv1.input[2] == "b1"  # bias stays FP32, no DQ
    assert conv2.input[0] == "r1_dequantized"
    # residual Add: only the branch not fused into conv2 is quantized (shared r1 Q/DQ)
    assert list(add.input) == ["c2", "r1_dequantized"]
    assert nodes["/relu1/Relu"].input[0] == "c1"  # non-int8 consumers keep the raw tensor
    for w in ("w1", "w2", "wf"):
        dq = nodes[f"{w}_DequantizeLinear"]
        assert dq.input[0] == f"{w}_int8" and inits[f"{w}_int8"].dtype == np.int8
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
        assert not inits[f"{w}_zero_point"].any()
    for t in ("x", "r1", "flat"):
        assert inits[f"{t}_scale"] == np.float32(scales.scales[t])
        assert inits[f"{t}_zero_point"].dtype == np.int8 and inits[f"{t}_zero_point"] == 0
    assert not [n for n in res.model.graph.node if n.op_type.startswith("QLinear")]
    assert {"w1", "w2", "wf"}.isdisjoint(inits)  # FP32 weights replaced, not kept twice
    original = {n.name for n in onnx.load(str(path)).graph.node}
    assert original <= set(nodes)  # node names are stable
    plan = PrecisionPlan.from_dict(__import__("json").loads(
        {p.key: p.value for p in res.model.metadata_props}[PLAN_METADATA_KEY]))
    assert plan.counts() == {"int8": 3, "fp16": 0, "fp32": 6}
    assert plan.nodes["/add/Add"].quantize_residual


def test_weight_quantisation_matches_independent_math() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0
    q, s = quantize_weight(w, 0)
    for c in range(6):
        amax = float(np.max(np.abs(w[c])))
        scale = amax / 127 if amax else 1.0
        assert s[c] == pytest.approx(scale, rel=1e-7)
        expect = np.clip(np.rint(w[c] / np.float32(scale)), -127, 127)
        assert np.array_equal(q[c], expect.astype(np.int8))
    assert np.abs(q).max() == 127 and q.dtype == np.int8
    q1, s1 = quantize_weight(w.transpose(1, 0, 2, 3), 1)  # ConvTranspose layout
    assert np.array_equal(q1, q.transpose(1, 0, 2, 3)) and np.array_equal(s1, s)


def test_fake_quant_numerics_in_onnxruntime(cnn: tuple[Path, ScaleTable], tmp_path: Path) -> None:
    path, scales = cnn
    save_model(quantize_model(onnx.load(str(path)), scales).model, tmp_path / "q.onnx")
    got = ActivationCapture(tmp_path / "q.onnx").run_batch({"x": X})
    s = np.float32(scales.scales["x"])
    expect = np.clip(np.rint(X / s), -128, 127) * s  # ONNX Q saturates to [-128, 127]
    np.testing.assert_allclose(got["x_dequantized"], expect, rtol=0, atol=1e-6)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    sqnr = 10 * np.log10(np.sum(ref[0] ** 2) / np.sum((got["probs"] - ref[0]) ** 2))
    assert sqnr > 25, sqnr


def test_weights_stored_as_constant_nodes_are_quantized(tmp_path: Path) -> None:
    path = small_cnn(tmp_path / "c.onnx", weights_as_constant=True)
    scales = calibrate(path, [{"x": X}], method="minmax").scales
    res = quantize_model(onnx.load(str(path)), scales)
    assert "w1c" in res.weight_qdq
    assert _nodes(res.model)["/conv1/Conv"].input[1] == "w1c_dequantized"
    assert not [n for n in res.model.graph.node if n.op_type == "Constant"]


def test_matmul_convtranspose_axes_and_activation_matmul(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "mm.onnx", convtranspose=True)
    x = np.random.default_rng(1).standard_normal((4, 4, 6, 6)).astype(np.float32)
    scales = calibrate(path, [{"x": x}], method="minmax").scales
    res = quantize_model(onnx.load(str(path)), scales)
    nodes = _nodes(res.model)
    axis = {w: [a.i for a in nodes[f"{w}_DequantizeLinear"].attribute] for w in ("wt", "wm")}
    assert axis == {"wt": [1], "wm": [1]}  # ConvTranspose axis 1; MatMul weight's last axis
    gram = nodes["/gram/MatMul"]
    assert list(gram.input) == ["h_dequantized", "ht_dequantized"]  # both activations


def test_old_opset_is_upgraded(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "o11.onnx", opset=11)
    x = np.random.default_rng(1).standard_normal((4, 4, 6, 6)).astype(np.float32)
    scales = calibrate(path, [{"x": x}], method="minmax").scales
    res = quantize_model(onnx.load(str(path)), scales)
    assert res.model.opset_import[0].version == 13


def test_missing_scale_names_the_tensor(cnn: tuple[Path, ScaleTable]) -> None:
    path, scales = cnn
    partial = ScaleTable(scales={k: v for k, v in scales.scales.items() if k != "r1"})
    with pytest.raises(InputError, match="no scale for tensor 'r1'"):
        quantize_model(onnx.load(str(path)), partial)


def test_fp16_rest_keeps_io_fp32_and_runs(cnn: tuple[Path, ScaleTable], tmp_path: Path) -> None:
    path, scales = cnn
    res = quantize_model(onnx.load(str(path)), scales, fp16=True)
    m = res.model
    assert m.opset_import[0].version >= 19  # FP16 scales on Q/DQ
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inits = _inits(m)
    assert inits["x_scale_fp16"].dtype == np.float16 and inits["b1_fp16"].dtype == np.float16
    save_model(m, tmp_path / "q16.onnx")
    out = ort.InferenceSession(str(tmp_path / "q16.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    assert out.dtype == np.float32 and np.abs(out - ref[0]).max() < 0.02


def test_external_data_models_round_trip(cnn: tuple[Path, ScaleTable], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path, scales = cnn
    model = onnx.load(str(path))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    location="ext.weights", size_threshold=0)
    from quantkit import model as model_mod

    monkeypatch.setattr(model_mod, "EXTERNAL_DATA_THRESHOLD", 0)
    res = quantize_model(model_mod.load_model(tmp_path / "ext.onnx"), scales)
    (tmp_path / "out").mkdir()
    save_model(res.model, tmp_path / "out" / "q.onnx")
    assert (tmp_path / "out" / "q.onnx.data").exists()
    out = ort.InferenceSession(str(tmp_path / "out" / "q.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    assert out.shape == (32, 10)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["q.onnx", "q.onnx.data"]


def test_fp16_keeps_nodes_with_out_of_range_constants_in_fp32(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 4])
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("s", [1.0, 2.0]), ("b", [0.0, 0.5]), ("m", [0.0, 1e3]), ("v", [1.0, 9.8e7]))]
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], name="bn")
    relu = helper.make_node("Relu", ["bn"], ["y"], name="relu")
    model = helper.make_model(helper.make_graph([bn, relu], "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    res = quantize_model(model, None, PrecisionConfig(default="fp16", default_float="fp16"))
    save_model(res.model, tmp_path / "q.onnx")
    data = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32) * 1e3
    got = ort.InferenceSession(str(tmp_path / "q.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
    onnx.save(model, str(tmp_path / "m.onnx"))
    ref = ort.InferenceSession(str(tmp_path / "m.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-3)
    assert {t.name for t in res.model.graph.initializer} >= {"v"}  # kept FP32, not clipped
