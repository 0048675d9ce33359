"""High-bias absorption: the paper's update checked by hand, BN-statistics and data forms,
FP32 outputs kept on the data, skip reasons and warnings, refusal of a broken absorption,
and the quantized result lints, parses and builds with TensorRT-RTX."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cle_outliers import _layer

from quantkit.errors import InputError, PipelineError
from quantkit.transforms import absorb_high_bias, applied_transforms
from tests.transforms.ortrun import run


def _w(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _graph(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], shape: list[Any],
           out: str = "y") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape[1:]])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N"] + [None] * (len(shape)
                                                                               - 1))],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_pair(rng: np.random.Generator, join: str = "Relu", k2: int = 1, pad2: int = 0,
               ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv(3->6, 3x3, pad 1) -> join -> Conv(6->4, k2 x k2, pad2); channels 0, 2, 5 of the
    first conv have a large positive bias (always above 0 on the inputs used here)."""
    p = {"w1": rng.standard_normal((6, 3, 3, 3)) * 0.3,
         "b1": np.array([4.0, -0.5, 6.0, 0.2, 0.0, 3.0]),
         "w2": rng.standard_normal((4, 6, k2, k2)), "b2": rng.standard_normal(4)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", pads=[1] * 4)]
    extra: dict[str, np.ndarray] = {}
    if join == "Clip":
        extra = {"lo": np.array(0.0), "hi": np.array(6.0)}
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act"))
    else:
        nodes.append(helper.make_node(join, ["h"], ["a"], name="act"))
    nodes.append(helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2",
                                  pads=[pad2] * 4))
    return _graph(nodes, {**p, **extra}, ["N", 3, 8, 8]), p


def _x(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    return rng.uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32)


# ------------------------------------------------------------------------ the update itself


def test_conv_pair_matches_hand_computed_update() -> None:
    """b1 -= c, b2 += sum over taps of W2 c, with c = max(0, min h) computed here in numpy."""
    rng = np.random.default_rng(0)
    model, p = _conv_pair(rng, k2=3, pad2=0)
    x = _x(rng)
    out, report = absorb_high_bias(model, x)
    h = _layer("Conv", x, p["w1"].astype(np.float32), p["b1"].astype(np.float32))
    c = np.maximum(h.min(axis=(0, 2, 3)), 0.0)
    assert (c[[0, 2, 5]] > 0).all() and c[1] == 0  # the test's premise
    w2 = p["w2"].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(_w(out, "b1"), p["b1"] - c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_w(out, "b2"), p["b2"] + w2.sum(axis=(2, 3)) @ c,
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_w(out, "w1"), _w(model, "w1"))  # weights untouched
    [entry] = report.changed
    assert (entry["first"], entry["second"], entry["source"]) == ("conv1", "conv2", "data")
    assert entry["absorbed_channels"] == int((c > 0).sum())
    assert entry["c_max"] == pytest.approx(c.max(), rel=1e-5)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)
    assert report.settings["verified"]["samples"] == 32
    assert applied_transforms(out)[-1] == report.to_dict()
    assert [n.name for n in out.graph.node] == [n.name for n in model.graph.node]


def test_gemm_pair_with_alpha_beta_and_no_biases() -> None:
    """Gemm(transB) -> Relu -> Gemm(alpha, beta, no C): a bias is added to both layers."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((5, 4))
    w2 = rng.standard_normal((5, 3))  # [K, N]: transB = 0
    b1 = np.array([3.0, 0.0, 5.0, -1.0, 4.0])
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1,
                              beta=2.0),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "w2"], ["y"], name="fc2", alpha=0.5)]
    model = _graph(nodes, {"w1": w1, "b1": b1, "w2": w2}, ["N", 4])
    x = rng.uniform(-0.3, 0.3, (64, 4)).astype(np.float32)
    out, report = absorb_high_bias(model, x)
    h = x.astype(np.float64) @ w1.astype(np.float32).T + 2.0 * b1
    c = np.maximum(h.min(0), 0.0)
    assert (c > 0).sum() == 3
    np.testing.assert_allclose(2.0 * _w(out, "b1"), 2.0 * b1 - c, rtol=1e-5, atol=1e-5)
    fc2 = next(n for n in out.graph.node if n.name == "fc2")
    # fc2 had no C: one was added, beta defaults to 1, alpha multiplies W2 c
    np.testing.assert_allclose(_w(out, fc2.input[2]), 0.5 * c @ w2.astype(np.float32),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-5)
    assert report.changed[0]["relu"] is True


def test_batchnorm_statistics_without_data() -> None:
    """The paper's form: c = max(0, beta - 3 |gamma|) of the BN folded into the first layer."""
    rng = np.random.default_rng(2)
    w1, b1 = rng.standard_normal((4, 3, 1, 1)), rng.standard_normal(4)
    w2, b2 = rng.standard_normal((2, 4, 1, 1)), rng.standard_normal(2)
    gamma, beta = np.array([1.0, 1.0, -0.5, 2.0]), np.array([5.0, 0.1, 4.0, -1.0])
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h0"], name="conv1"),
             helper.make_node("BatchNormalization", ["h0", "g", "be", "m", "v"], ["h"],
                              name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2")]
    model = _graph(nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "g": gamma, "be": beta,
                           "m": mean, "v": var}, ["N", 3, 5, 5])
    out, report = absorb_high_bias(model)
    f32 = [a.astype(np.float32).astype(np.float64) for a in (b1, gamma, beta, mean, var)]
    k = f32[1] / np.sqrt(f32[4] + 1e-3)
    folded_b1 = (f32[0] - f32[3]) * k + f32[2]
    c = np.maximum(f32[2] - 3 * np.abs(f32[1]), 0.0)
    np.testing.assert_allclose(c, [2.0, 0.0, 2.5, 0.0])
    conv1 = next(n for n in out.graph.node if n.name == "conv1")
    np.testing.assert_allclose(_w(out, conv1.input[2]), folded_b1 - c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_w(out, "b2"), b2 + w2[:, :, 0, 0].astype(np.float32) @ c,
                               rtol=1e-5, atol=1e-5)
    assert report.changed[0]["source"] == "batchnorm" and "verified" not in report.settings
    assert [t["transform"] for t in applied_transforms(out)] == ["fold_batchnorm",
                                                                 "high_bias"]


def test_data_driven_chain_keeps_fp32_outputs() -> None:
    """conv1 -> Relu -> conv2(1x1) -> Relu -> MaxPool -> GAP -> Flatten -> fc: both pairs."""
    rng = np.random.default_rng(3)
    p = {"w1": rng.standard_normal((6, 3, 3, 3)) * 0.3, "b1": rng.uniform(0, 4, 6),
         "w2": np.abs(rng.standard_normal((5, 6, 1, 1))), "b2": rng.uniform(0, 2, 5),
         "w3": rng.standard_normal((7, 5)), "b3": rng.standard_normal(7)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name="conv2"),
             helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
             helper.make_node("MaxPool", ["a2"], ["p2"], name="pool", kernel_shape=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["p2"], ["g2"], name="gap"),
             helper.make_node("Flatten", ["g2"], ["f2"], name="flat"),
             helper.make_node("Gemm", ["f2", "w3", "b3"], ["y"], name="fc", transB=1)]
    model = _graph(nodes, p, ["N", 3, 8, 8])
    x = _x(rng, 48)
    out, report = absorb_high_bias(model, [{"x": x[i: i + 16]} for i in range(0, 48, 16)],
                                   batch_size=16)
    assert [(c["first"], c["second"]) for c in report.changed] == [("conv1", "conv2"),
                                                                   ("conv2", "fc")]
    assert report.changed[1]["via"] == ["Relu", "MaxPool", "GlobalAveragePool", "Flatten"]
    want, got = run(model, {"x": x})[0], run(out, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the activations between the layers lost their offset: channel min is now 0
    exposed = onnx.ModelProto()
    exposed.CopyFrom(out)
    exposed.graph.output.extend(onnx.ValueInfoProto(name=t) for t in ("a1", "a2"))
    mid = run(exposed, {"x": x}, ["a1", "a2"])
    for a, first in zip(mid, ("conv1", "conv2"), strict=True):
        entry = next(c for c in report.changed if c["first"] == first)
        assert entry["absorbed_channels"] > 0
        assert np.abs(a.min(axis=(0, 2, 3))).max() < 1e-4
    assert report.settings["num_samples"] == 48


# ------------------------------------------------------------------------ skipped, refused


@pytest.mark.parametrize(("join", "pad2", "reason"), [
    ("Clip", 0, "Clip (ReLU6)"),
    ("LeakyRelu", 0, "only Relu joins"),
    ("Relu", 1, "pads its input with zeros"),
])
def test_inexact_pairs_are_skipped_with_a_warning(join: str, pad2: int, reason: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(4)
    model, _ = _conv_pair(rng, join=join, k2=3, pad2=pad2)
    with caplog.at_level(logging.WARNING, "quantkit.transforms"):
        out, report = absorb_high_bias(model, _x(rng))
    assert not report.changed
    [entry] = [s for s in report.skipped if not s.get("terminal")]
    assert reason in str(entry["reason"]) and entry["second"] == "conv2"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("did not apply" in m and "conv1 -> conv2" in m and reason in m
               for m in warned), warned
    for a, b in zip(out.graph.initializer, model.graph.initializer, strict=True):
        assert a == b


def test_nothing_to_absorb_is_reported() -> None:
    rng = np.random.default_rng(5)
    model, _ = _conv_pair(rng)
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.full(6, -20, np.float32),
                                                                "b1"))
    _, report = absorb_high_bias(model, _x(rng))
    [entry] = [s for s in report.skipped if not s.get("terminal")]
    assert not report.changed and "nothing to absorb" in str(entry["reason"])


def test_bad_input() -> None:
    rng = np.random.default_rng(6)
    model, _ = _conv_pair(rng)
    with pytest.raises(InputError, match="no data and no BatchNormalization"):
        absorb_high_bias(model)
    with pytest.raises(InputError, match="no node named"):
        absorb_high_bias(model, _x(rng), layers=["nope"])
    _, report = absorb_high_bias(model, _x(rng), layers=["conv2"])
    assert len(report.changed) == 1


def test_broken_absorption_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong c (twice the measured minimum) changes the outputs: refused with the figures."""
    mod = sys.modules["quantkit.transforms.high_bias"]
    real = mod.absorb
    monkeypatch.setattr(mod, "absorb", lambda m, i, p, c, u: real(m, i, p, 2 * c, u))
    rng = np.random.default_rng(7)
    model, _ = _conv_pair(rng)
    with pytest.raises(PipelineError, match=r"refused.*output 'y'.*max abs [0-9.e+-]+ "):
        absorb_high_bias(model, _x(rng))


# ------------------------------------------------------------------------ quantize + RTX


def test_quantized_absorbed_model_lints_parses_and_builds(tmp_path: Path) -> None:
    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.writer import quantize_model

    rng = np.random.default_rng(8)
    model, _ = _conv_pair(rng, k2=1)
    x = _x(rng, 64)
    out, report = absorb_high_bias(model, x)
    assert report.changed
    src = tmp_path / "hb.onnx"
    save_model(out, src)
    scales = calibrate(src, {"x": x}, method="minmax").scales
    res = quantize_model(out, scales)
    assert applied_transforms(res.model)[-1]["transform"] == "high_bias"
    errors = [f for f in lint_model(res.model).findings if f.severity == "error"]
    assert not errors, errors
    rtx = pytest.importorskip("_rtx")
    path = tmp_path / "hb.int8.onnx"
    save_model(res.model, path)
    layers = rtx.parse_layers(path)
    int8 = [n for n, e in res.plan.nodes.items() if e.precision == "int8"]
    assert sorted(int8) == ["conv1", "conv2"]
    assert all(rtx.layer_precision(layers[n]) == "int8" for n in int8)
    assert rtx.build(path, {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}) > 0
