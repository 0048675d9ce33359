"""benchmarks/latency/bert_int8.py: INT8 BERT as demoBERT's INT8 engines run it, on a real
export, real calibration and a real TensorRT-RTX build of a small BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from _bench import load
from _require import require

require("torch")
require("tensorrt_rtx_bindings")

from quantkit.capture import calibrate  # noqa: E402
from quantkit.latency import estimate_model  # noqa: E402
from quantkit.qdq.plan import PrecisionConfig  # noqa: E402
from quantkit.qdq.writer import quantize_model  # noqa: E402

N, S, HIDDEN, HEADS, LAYERS = 2, 32, 64, 2, 2


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    models, validate, bert_int8 = load("models"), load("validate"), load("bert_int8")
    d = tmp_path_factory.mktemp("bert")
    _, spec = models.bert_base()
    fp32 = d / "bert.onnx"
    models.export_module(models.Bert(LAYERS, HIDDEN, HEADS, vocab=100).eval(), spec, fp32)
    npz = validate.calibration_npz("bert", spec, d)
    with np.load(npz) as data:  # ids of the tiny vocabulary
        np.savez(npz, **{k: v % 100 for k, v in data.items()})
    scales = calibrate(str(fp32), str(npz), method="minmax", batch_size=2).scales
    plain = quantize_model(onnx.load(str(fp32)), scales, PrecisionConfig(), fp16=True,
                           source=str(fp32)).model
    edited = onnx.ModelProto()
    edited.CopyFrom(plain)
    packed = bert_int8.quantize_packed_qkv(edited, scales)
    residual = bert_int8.quantize_residual_adds(edited, scales)
    onnx.save(plain, str(d / "plain.onnx"))
    onnx.save(edited, str(d / "demobert.onnx"))
    return {"dir": d, "scales": scales, "packed": packed, "residual": residual,
            "model": edited, "shapes": spec.shapes(N, S)}


def test_graph_quantizes_packed_qkv_and_residuals(bert: dict) -> None:
    model: onnx.ModelProto = bert["model"]
    onnx.checker.check_model(model)
    # one packed Q/K/V per layer; two residual adds per layer plus the embedding sum
    assert bert["packed"] == LAYERS and bert["residual"] == 2 * LAYERS + 1
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for add in (n for n in model.graph.node if n.op_type == "Add"
                and any(r.op_type == "LayerNormalization" for r in readers.get(n.output[0], []))
                and all(i in producer for i in n.input)):
        assert [producer[i].op_type for i in add.input] == ["DequantizeLinear"] * 2, add.name
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for layer in range(LAYERS):
        packed = f"/layers.{layer}/qkv/Add_output_0"
        (q,) = [r for r in readers[packed] if r.op_type == "QuantizeLinear"]
        want = np.float16(bert["scales"].scales[packed])
        assert inits[q.input[1]] == want
        # q, k and v use the packed output's scale (one range, as demoBERT's QKV output)
        slices = [n for n in model.graph.node if n.op_type == "QuantizeLinear"
                  and n.name.startswith(f"/layers.{layer}/") and n.input[0] != packed
                  and producer[n.input[0]].op_type in ("Gather", "Squeeze", "Transpose")]
        assert len(slices) == 3 and all(inits[s.input[1]] == want for s in slices)


def test_tensorrt_rtx_runs_it_like_demobert(bert: dict) -> None:
    d: Path = bert["dir"]
    plain = estimate_model(d / "plain.onnx", "L4", shapes=bert["shapes"])
    edited = estimate_model(d / "demobert.onnx", "L4", shapes=bert["shapes"])
    per_layer = [k for k in edited.kernels if "/layers.0/" in " ".join(k.onnx_layers)]
    # INT8 QKV GEMM on the INT8 weight (no run-time weight kernel), INT8 fused attention,
    # and every add + LayerNorm reading and writing INT8 only
    assert not any(k.name.startswith("__myl_CastMulCastResh") for k in edited.kernels)
    assert any("_gemm_mha_v2" in k.name and k.precision == "int8" for k in per_layer)
    norms = [k for k in per_layer if "LayerNormalization" in " ".join(k.onnx_layers)
             and k.matrix_flops == 0]
    assert norms and all(k.precision == "int8" for k in norms)
    assert len(edited.kernels) < len(plain.kernels)
    assert edited.latency_ms < plain.latency_ms
