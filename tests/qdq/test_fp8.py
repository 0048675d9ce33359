"""FP8 (E4M3) in precision files and the Q/DQ writer: placement, numerics, opset, lint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit._ort import session
from quantkit.calibrators import ScaleTable
from quantkit.capture import ActivationCapture, calibrate
from quantkit.errors import InputError
from quantkit.model import save_model
from quantkit.qdq.lint import lint_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from tests.builders.cnn import matmul_model, small_cnn

E4M3 = TensorProto.FLOAT8E4M3FN
X = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)


def e4m3_reference(v: np.ndarray) -> np.ndarray:
    """Round to E4M3FN by hand: 3 mantissa bits, min normal 2^-6, subnormal step 2^-9, max 448,
    ties to even, saturating."""
    v = np.clip(v.astype(np.float64), -448, 448)
    mag = np.abs(v)
    exp = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
    step = np.where(mag < 2.0 ** -6, 2.0 ** -9, 2.0 ** (np.maximum(exp, -6) - 3))
    return np.round(v / step) * step  # np.round: half to even


@pytest.fixture()
def cnn(tmp_path: Path) -> tuple[Path, ScaleTable]:
    path = small_cnn(tmp_path / "m.onnx")
    return path, calibrate(path, [{"x": X}], method="minmax").scales


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def test_reference_rounding_is_e4m3() -> None:
    # hand-checked points: 1.0625 is a tie between 1 and 1.125 (even: 1); 17 -> 16 (step 2 at
    # 16..32, tie to even mantissa 16); 460 saturates; 2^-9 is the smallest subnormal
    got = e4m3_reference(np.array([1.0625, 1.1875, 17.0, 19.0, 460.0, 2.0 ** -9, 0.75 * 2 ** -9]))
    assert got.tolist() == [1.0, 1.25, 16.0, 20.0, 448.0, 2.0 ** -9, 2.0 ** -9]


def test_default_fp8_writes_e4m3_qdq(cnn: tuple[Path, ScaleTable]) -> None:
    path, scales = cnn
    res = quantize_model(onnx.load(str(path)), scales, PrecisionConfig(default="fp8"))
    m = res.model
    assert m.opset_import[0].version >= 19
    assert res.plan.counts() == {"int8": 0, "fp16": 0, "fp32": 6, "fp8": 3}
    inits = _inits(m)
    for t in ("x", "r1", "flat"):
        s = numpy_helper.to_array(inits[f"{t}_scale"])
        assert s.shape == () and s == pytest.approx(scales.amaxes[t] / 448, rel=1e-6)
        zp = inits[f"{t}_zero_point"]
        assert zp.data_type == E4M3 and numpy_helper.to_array(zp).astype(np.float32) == 0
    ref = onnx.load(str(path))
    for w in ("w1", "w2", "wf"):  # per output channel: axis 0 (Conv, Gemm with transB=1)
        wf = numpy_helper.to_array(next(t for t in ref.graph.initializer if t.name == w))
        q = inits[f"{w}_fp8"]
        assert q.data_type == E4M3
        s = numpy_helper.to_array(inits[f"{w}_scale"])
        amax = np.abs(wf).reshape(len(wf), -1).max(axis=1)
        np.testing.assert_allclose(s, amax / 448, rtol=1e-6)
        shape = (-1,) + (1,) * (wf.ndim - 1)
        expect = e4m3_reference(wf.astype(np.float32) / s.reshape(shape))
        np.testing.assert_array_equal(numpy_helper.to_array(q).astype(np.float64), expect)
        zp = inits[f"{w}_zero_point"]
        assert zp.data_type == E4M3 and list(zp.dims) == [len(wf)]
        dq = next(n for n in m.graph.node if n.input and n.input[0] == f"{w}_fp8")
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
    # the residual branch of the Add takes the conv's FP8 type
    assert res.plan.nodes["/add/Add"].quantize_residual
    assert res.plan.nodes["/add/Add"].residual_type == "fp8"
    assert lint_model(m).findings == []
    assert {n.name: n.precision for n in lint_model(m).nodes if n.op_type in ("Conv", "Gemm")
            } == {"/conv1/Conv": "fp8", "/conv2/Conv": "fp8", "/fc/Gemm": "fp8"}


def test_fp8_fake_quant_numerics_in_onnxruntime(cnn: tuple[Path, ScaleTable],
                                                tmp_path: Path) -> None:
    path, scales = cnn
    save_model(quantize_model(onnx.load(str(path)), scales, PrecisionConfig(default="fp8")).model,
               tmp_path / "q.onnx")
    got = ActivationCapture(tmp_path / "q.onnx").run_batch({"x": X})
    s = np.float32(scales.amaxes["x"] / 448)
    expect = e4m3_reference(X / s) * s
    np.testing.assert_allclose(got["x_dequantized"], expect, rtol=1e-6, atol=1e-7)
    ref = session(str(path)).run(None, {"x": X})[0]
    out = session(str(tmp_path / "q.onnx")).run(None, {"x": X})[0]
    sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((out - ref) ** 2))
    assert sqnr > 20, sqnr


def test_mixed_int8_fp8_fp16_plan(cnn: tuple[Path, ScaleTable], tmp_path: Path) -> None:
    path, scales = cnn
    cfg = PrecisionConfig.from_mapping({
        "default": "int8", "default_float": "fp16",
        "overrides": [{"name": "/conv1/Conv", "precision": "fp8"},
                      {"op_type": "Gemm", "precision": "fp16"}]})
    res = quantize_model(onnx.load(str(path)), scales, cfg)
    prec = {n.name: n.precision for n in res.plan.nodes.values()}
    assert prec["/conv1/Conv"] == "fp8" and prec["/conv2/Conv"] == "int8"
    assert prec["/fc/Gemm"] == "fp16"
    inits = _inits(res.model)
    assert inits["w1_fp8"].data_type == E4M3 and inits["w2_int8"].data_type == TensorProto.INT8
    # r1 feeds the int8 conv2 and the int8 residual branch: one INT8 pair, no FP8 one
    assert inits["r1_zero_point"].data_type == TensorProto.INT8
    report = lint_model(res.model)
    assert [f for f in report.findings if f.severity == "error"] == []
    lp = {n.name: n.precision for n in report.nodes}
    assert lp["/conv1/Conv"] == "fp8" and lp["/conv2/Conv"] == "int8"
    save_model(res.model, tmp_path / "q.onnx")
    out = session(str(tmp_path / "q.onnx")).run(None, {"x": X})[0]
    ref = session(str(path)).run(None, {"x": X})[0]
    assert np.abs(out - ref).max() < 0.05


def test_fp8_not_applicable_ops_keep_default_float(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "m.onnx", convtranspose=True)
    model = onnx.load(str(path))
    x = np.random.default_rng(1).standard_normal((4, 4, 6, 6)).astype(np.float32)
    scales = calibrate(path, [{"x": x}], method="minmax").scales
    res = quantize_model(model, scales, PrecisionConfig(default="fp8"))
    ops = {n.op_type: n for n in res.plan.nodes.values()}
    assert ops["ConvTranspose"].precision == "fp32"
    assert "FP32 kernel" in ops["ConvTranspose"].reason
    assert ops["MatMul"].precision == "fp8"
    cfg = PrecisionConfig.from_mapping({"overrides": [{"op_type": "ConvTranspose",
                                                       "precision": "fp8"}]})
    res = quantize_model(model, scales, cfg)
    assert any("asks fp8 for ConvTranspose" in w for w in res.warnings)
    assert [f for f in lint_model(res.model).findings if f.severity == "error"] == []


def _unconvertible(path: Path) -> Path:
    """Opset 7 Conv + BatchNormalization(spatial=0): onnx's converter cannot take it past 8."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(np.ones((4, 6, 6), np.float32), n)
              for n in ("g", "b", "mu", "var")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["y"],
                              name="bn", spatial=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)]), str(path))
    return path


def test_fp8_upgrades_opset_or_refuses(cnn: tuple[Path, ScaleTable], tmp_path: Path) -> None:
    path, scales = cnn
    old = onnx.load(str(path))
    old.opset_import[0].version = 13  # its ops have the same schemas at 13
    res = quantize_model(old, scales, PrecisionConfig(default="fp8"))
    assert res.model.opset_import[0].version == 19
    bad = onnx.load(str(_unconvertible(tmp_path / "old.onnx")))
    with pytest.raises(InputError, match=r"FP8 Q/DQ needs opset 19.*re-export"):
        quantize_model(bad, ScaleTable(scales={"x": 0.1}), PrecisionConfig(default="fp8"),
                       source="old.onnx")


def test_cli_fp8_opset_refusal_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    from quantkit.cli.main import main

    model = _unconvertible(tmp_path / "old.onnx")
    scales = tmp_path / "s.json"
    ScaleTable(scales={"x": 0.1, "c": 0.1}).write(scales)
    (tmp_path / "p.yaml").write_text("default: fp8\n")
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(model), "--scales", str(scales), "--precision",
                 str(tmp_path / "p.yaml"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "opset 19" in err and "Traceback" not in err and not out.exists()


def test_fp8_weight_min_scale_raises_tiny_channels() -> None:
    from quantkit.qdq.fp8 import quantize_weight_fp8

    w = np.array([[448.0, -224.0], [1e-3, 2e-3]], dtype=np.float32)  # channel 1 is tiny
    q, scale = quantize_weight_fp8(w, "w", axis=0, min_scale=1e-4)
    # by hand: channel 0 scale 448/448 = 1; channel 1 max(2e-3/448 = 4.46e-6, 1e-4) = 1e-4
    np.testing.assert_allclose(scale, [1.0, 1e-4], rtol=1e-6)
    got = numpy_helper.to_array(q).astype(np.float64)
    # 1e-3 / 1e-4 = 10 -> E4M3 10; 2e-3 / 1e-4 = 20 -> 20 (both exact in E4M3)
    np.testing.assert_array_equal(got, [[448.0, -224.0], [10.0, 20.0]])
    _, plain = quantize_weight_fp8(w, "w", axis=0)
    np.testing.assert_allclose(plain, [1.0, 2e-3 / 448], rtol=1e-6)


def test_per_tensor_fp8_weights_are_a_qk105_warning() -> None:
    from tests.builders.fp8 import fp8_cnn

    report = lint_model(fp8_cnn())  # hand-made: FP8 weights with one scale per tensor
    found = {(f.code, f.node) for f in report.findings}
    assert {("QK105", "conv1"), ("QK105", "conv2"), ("QK105", "fc")} <= found
    assert all(f.severity == "warning" for f in report.findings if f.code == "QK105")
    assert {n.name: n.precision for n in report.nodes if n.op_type in ("Conv", "Gemm")} == {
        "conv1": "fp8", "conv2": "fp8", "fc": "fp8"}  # still FP8 kernels
