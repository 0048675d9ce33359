"""quantkit.sweep.layer_sqnr against ONNX's reference evaluator and the SQNR formula.

The per-layer SQNR autotune ranks layers by is recomputed here independently: both models run
in ``onnx.reference.ReferenceEvaluator`` (not ONNX Runtime) with every layer output exposed,
and ``10 log10(sum ref^2 / sum (q - ref)^2)`` is taken in float64 over all batches at once.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from quantkit.capture import calibrate
from quantkit.errors import InputError
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.sweep.layer_sqnr import layer_outputs, layer_sqnr
from tests.builders.cnn import small_cnn

LAYERS = ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    path = small_cnn(tmp_path_factory.mktemp("sqnr") / "m.onnx")
    rng = np.random.default_rng(3)
    cal = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    scales = calibrate(path, [{"x": cal[i: i + 8]} for i in range(0, 32, 8)],
                       method="minmax").scales
    fp32 = onnx.load(str(path))
    return fp32, quantize_model(fp32, scales, PrecisionConfig()).model


def _reference_outputs(model: onnx.ModelProto, tensors: list[str],
                       x: np.ndarray) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    # the reference evaluator implements QuantizeLinear / DequantizeLinear from opset 19 on;
    # the ops of these models (per-tensor int8 Q/DQ, Conv, Relu, Add, Gemm...) mean the same
    for opset in m.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 19)
    m.ir_version = max(m.ir_version, 9)
    return ReferenceEvaluator(m).run(tensors, {"x": x})


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    noise = float(((got - ref) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((ref ** 2).sum()) / noise)


def test_matches_the_reference_evaluator(models: tuple[onnx.ModelProto, onnx.ModelProto]
                                         ) -> None:
    fp32, q = models
    x = np.random.default_rng(4).standard_normal((12, 3, 8, 8)).astype(np.float32)
    got = layer_sqnr(fp32, q, LAYERS, [{"x": x[:5]}, {"x": x[5:]}])
    ref_t = [layer_outputs(fp32, LAYERS)[n] for n in LAYERS]
    q_t = [layer_outputs(q, LAYERS)[n] for n in LAYERS]
    ref = _reference_outputs(fp32, ref_t, x)
    out = _reference_outputs(q, q_t, x)
    for name, r, o in zip(LAYERS, ref, out, strict=True):
        want = _sqnr_db(r, o)
        assert 10 < want < 80, (name, want)  # INT8 noise: finite, not absurd
        assert got[name] == pytest.approx(want, abs=0.05), name


def test_batches_accumulate_like_one_batch(models: tuple[onnx.ModelProto, onnx.ModelProto]
                                           ) -> None:
    fp32, q = models
    x = np.random.default_rng(5).standard_normal((10, 3, 8, 8)).astype(np.float32)
    whole = layer_sqnr(fp32, q, LAYERS, [{"x": x}])
    split = layer_sqnr(fp32, q, LAYERS, [{"x": x[i: i + 3]} for i in range(0, 10, 3)])
    for name in LAYERS:
        assert split[name] == pytest.approx(whole[name], rel=1e-9)


def test_identical_models_give_infinite_sqnr(models: tuple[onnx.ModelProto, onnx.ModelProto]
                                             ) -> None:
    fp32, _ = models
    x = np.ones((2, 3, 8, 8), np.float32)
    assert layer_sqnr(fp32, fp32, LAYERS, [{"x": x}]) == {n: float("inf") for n in LAYERS}
    assert layer_sqnr(fp32, fp32, [], [{"x": x}]) == {}


def test_unknown_layer_is_named(models: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    fp32, q = models
    with pytest.raises(InputError, match="'/nope/Conv'"):
        layer_sqnr(fp32, q, ["/conv1/Conv", "/nope/Conv"], [{"x": np.zeros((1, 3, 8, 8),
                                                                           np.float32)}])
