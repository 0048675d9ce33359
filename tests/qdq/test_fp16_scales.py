"""FP16 rest with INT8 weights whose per-channel scales would be FP16 subnormals.

Weight scales ``max|w| / 127`` below 6.1e-5 (a near-dead channel; 2.98e-6 was seen on a real
OCR model) used to be written as FP32, with INT8 weights computed from them, and then rounded
to FP16 subnormals by the FP16 pass: a few significant bits left, so the dequantized weights
no longer matched the INT8 values they were computed for. With ``default_float: fp16`` every
Q/DQ scale is now at least the smallest FP16 normal number and weights are quantized with that
scale.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit._ort import session as quantkit_session
from quantkit.calibrators import ScaleTable
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model

TINY = float(np.finfo(np.float16).tiny)  # 6.1035e-05


def tiny_channel_model() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.2
    w[3] *= 2e-3  # max|w| ~ 4e-4: scale ~ 3e-6, an FP16 subnormal
    w[5] *= 5e-4
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1] * 4)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = (rng.standard_normal((4, 4, 8, 8)) * 0.05).astype(np.float32)
    return model, x, w


def plain(model: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None) -> list:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return [np.asarray(o, dtype=np.float32) for o in sess.run(names, {"x": x})]


def quantized(model: onnx.ModelProto, x: np.ndarray) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    relu = plain(probe, x, ["r"])[0]
    scales = ScaleTable.from_amax({"x": float(np.abs(x).max()), "r": float(relu.max())})
    return quantize_model(model, scales, PrecisionConfig(default_float="fp16")).model


def test_fp16_scales_are_normal_and_weights_are_quantized_with_them() -> None:
    model, x, w = tiny_channel_model()
    q = quantized(model, x)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    scale_names = {n.input[1] for n in q.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    for name in scale_names:
        assert inits[name].dtype == np.float16
        assert float(inits[name].min()) >= TINY, name
    # the weight DQ of conv: int8 values and scales as computed here by hand
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear"
              and n.input[0] in inits and inits[n.input[0]].shape == w.shape)
    want_scale = np.maximum(np.abs(w).max(axis=(1, 2, 3)) / 127, TINY)
    np.testing.assert_allclose(inits[dq.input[1]].astype(np.float64), want_scale, rtol=1e-3)
    want_q = np.clip(np.round(w / want_scale.astype(np.float32)[:, None, None, None]), -127, 127)
    np.testing.assert_array_equal(inits[dq.input[0]], want_q)
    # the near-dead channel 3: every dequantized weight within half a step of the FP32 weight
    deq = inits[dq.input[0]][3].astype(np.float64) * float(inits[dq.input[1]][3])
    assert np.abs(deq - w[3]).max() <= TINY / 2 * 1.001


def test_optimised_and_plain_sessions_agree() -> None:
    model, x, _ = tiny_channel_model()
    ref = plain(model, x)[0]
    q = quantized(model, x)
    off = plain(q, x)[0]
    # quantkit's evaluation session: ONNX Runtime's default graph optimisations
    on = np.asarray(quantkit_session(q.SerializeToString(), providers=["CPUExecutionProvider"])
                    .run(None, {"x": x})[0], dtype=np.float32)
    assert np.isfinite(on).all()
    np.testing.assert_allclose(on, off, atol=1e-3 * float(np.abs(off).max()))
    assert float(np.abs(off - ref).max()) < 0.05 * float(np.abs(ref).max())


@pytest.mark.parametrize("default_float", ["fp16", "fp32"])
def test_tiny_activation_scales(default_float: str) -> None:
    model, _, _ = tiny_channel_model()
    scales = ScaleTable.from_amax({"x": 1e-4, "r": 1.0})  # x scale 7.9e-7: FP16 subnormal
    q = quantize_model(model, scales, PrecisionConfig(default_float=default_float)).model
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    qx = next(n for n in q.graph.node if n.name == "x_QuantizeLinear")
    got = float(inits[qx.input[1]])
    if default_float == "fp16":
        assert inits[qx.input[1]].dtype == np.float16 and got == pytest.approx(TINY)
    else:
        assert got == pytest.approx(1e-4 / 127, rel=1e-6)  # FP32 scales are left as they are


def test_dead_weight_channels_get_a_normal_scale() -> None:
    # a real OCR model has a channel with max |w| = 3e-40: its scale was subnormal (QK122)
    from quantkit.qdq.fp8 import quantize_weight_fp8
    from quantkit.qdq.scales import F32_TINY
    from quantkit.qdq.writer import quantize_weight

    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0] = 0.5
    w[1] = 3e-40  # subnormal values, a dead channel
    q, scale = quantize_weight(w, 0)
    assert scale[0] == np.float32(0.5 / 127) and scale[2] == 1.0
    assert scale[1] == np.float32(F32_TINY) and np.all(q[1] == 0)
    _, scale8 = quantize_weight_fp8(w, "w", 0)
    assert scale8[1] == np.float32(F32_TINY)
