"""BatchNormalization folding: same FP32 function, BN nodes gone, then equalization sees pairs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.transforms import applied_transforms, equalize
from quantkit.transforms.fold_bn import fold_batchnorm


def _bn(name: str, x: str, y: str, c: int, rng: np.random.Generator,
        inits: list[onnx.TensorProto]) -> onnx.NodeProto:
    params = {"scale": rng.uniform(0.2, 3.0, c), "B": rng.normal(0, 1, c),
              "mean": rng.normal(0, 1, c), "var": rng.uniform(0.05, 4.0, c)}
    for k, v in params.items():
        inits.append(numpy_helper.from_array(v.astype(np.float32), f"{name}.{k}"))
    return helper.make_node("BatchNormalization", [x, *(f"{name}.{k}" for k in params)], [y],
                            name=name, epsilon=1e-3)


def model_with_bns() -> onnx.ModelProto:
    """Conv(bias) -> BN -> Relu -> Conv(no bias) -> BN -> Relu -> ConvT -> BN -> GAP ->
    Flatten -> Gemm(transB) -> BN, plus a Conv whose output is also read elsewhere (kept)."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []

    def w(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", w("w1", 8, 3, 3, 3), w("b1", 8)], ["c1"], name="/c1",
                         pads=[1, 1, 1, 1]),
        _bn("/bn1", "c1", "n1", 8, rng, inits),
        helper.make_node("Relu", ["n1"], ["r1"], name="/r1"),
        helper.make_node("Conv", ["r1", w("w2", 6, 8, 3, 3)], ["c2"], name="/c2",
                         pads=[1, 1, 1, 1]),
        _bn("/bn2", "c2", "n2", 6, rng, inits),
        helper.make_node("Relu", ["n2"], ["r2"], name="/r2"),
        helper.make_node("ConvTranspose", ["r2", w("w3", 6, 4, 2, 2), w("b3", 4)], ["c3"],
                         name="/c3", strides=[2, 2]),
        _bn("/bn3", "c3", "n3", 4, rng, inits),
        helper.make_node("GlobalAveragePool", ["n3"], ["g"], name="/gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="/flat"),
        helper.make_node("Gemm", ["f", w("w4", 5, 4), w("b4", 5)], ["c4"], name="/fc",
                         transB=1),
        helper.make_node("Unsqueeze", ["c4", "axes"], ["u"], name="/unsq"),
        _bn("/bn4", "u", "n4", 5, rng, inits),
        helper.make_node("Conv", ["x", w("w5", 2, 3, 1, 1)], ["c5"], name="/c5"),
        _bn("/bn5", "c5", "n5", 2, rng, inits),
        helper.make_node("ReduceMean", ["c5"], ["m5"], name="/m5", keepdims=0),
    ]
    inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"))
    graph = helper.make_graph(
        nodes, "bns", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("n4", TensorProto.FLOAT, ["N", 5, 1]),
         helper.make_tensor_value_info("n5", TensorProto.FLOAT, ["N", 2, 8, 8]),
         helper.make_tensor_value_info("m5", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_fold_keeps_the_function_and_removes_the_bns() -> None:
    model = model_with_bns()
    x = np.random.default_rng(1).normal(0, 1, (4, 3, 8, 8)).astype(np.float32)
    folded, report = fold_batchnorm(model)
    onnx.checker.check_model(folded)
    assert [c["batchnorm"] for c in report.changed] == ["/bn1", "/bn2", "/bn3"]
    skipped = {s["node"]: s["reason"] for s in report.skipped}
    assert "does not come from" in skipped["/bn4"]  # behind an Unsqueeze
    assert "other readers" in skipped["/bn5"]  # c5 is also read by ReduceMean
    ops = [n.op_type for n in folded.graph.node]
    assert ops.count("BatchNormalization") == 2
    assert [n.name for n in folded.graph.node if n.op_type != "BatchNormalization"] == [
        n.name for n in model.graph.node if n.op_type != "BatchNormalization"]
    for a, b in zip(run(model, x), run(folded, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5)
    assert [r["transform"] for r in applied_transforms(folded)] == ["fold_batchnorm"]
    assert model.graph.node[1].op_type == "BatchNormalization"  # the input is untouched


def test_equalize_folds_first_and_then_finds_the_pair() -> None:
    model = model_with_bns()
    x = np.random.default_rng(2).normal(0, 1, (4, 3, 8, 8)).astype(np.float32)
    _, plain = equalize(model, fold_batchnorm=False)
    assert not plain.changed and any("BatchNormalization" in s["reason"] for s in plain.skipped)
    eq, report = equalize(model)
    assert [(c["first"], c["second"]) for c in report.changed] == [("/c1", "/c2")]
    for a, b in zip(run(model, x), run(eq, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert [r["transform"] for r in applied_transforms(eq)] == ["fold_batchnorm", "equalize"]


def test_fold_on_ppocr_det_keeps_the_probability_map() -> None:
    """The paddle2onnx det model keeps its BatchNormalizations unfolded."""
    pytest.importorskip("PIL")
    try:
        from recipes import ppocr
        det, _ = ppocr.model_paths()
    except Exception as err:  # noqa: BLE001 - the package is optional
        pytest.skip(f"PP-OCR models not available: {err}")
    model = onnx.load(str(det))
    n_bn = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    folded, report = fold_batchnorm(model)
    assert n_bn > 0 and len(report.changed) > 0
    assert sum(n.op_type == "BatchNormalization" for n in folded.graph.node) == \
        n_bn - len(report.changed)
    name = model.graph.input[0].name
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32)
    a = ort.InferenceSession(model.SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    b = ort.InferenceSession(folded.SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    np.testing.assert_allclose(b, a, atol=1e-4)
