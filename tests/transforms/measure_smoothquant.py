"""Measure what SmoothQuant-style migration does to MiniLM INT8 (docs/transforms.md).

Run from the repository root (not collected by pytest)::

    .venv/bin/python -m tests.transforms.measure_smoothquant [--alpha 0.5 ...] [--plan int8]

The recipe's data (recipes/minilm/: 128 calibration / 256 evaluation sentences of
the Python language reference, 64 tokens). Per calibration method and variant: (smoothquant
on the calibration set) -> calibrate the (transformed) model -> quantize with the plan ->
run the Q/DQ model with ONNX Runtime (Q/DQ as written) -> cosine of the embeddings to FP32,
rank-1 retrieval agreement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from quantkit.capture import calibrate
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.transforms import smoothquant
from recipes import minilm as ml
from recipes.runtime import default_cache, ort_session

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.5])
    parser.add_argument("--plan", choices=["int8", "mixed"], default="int8")
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile"])
    parser.add_argument("--scope", choices=["all", "layernorm"], nargs="+", default=["all"],
                        help="layernorm: only MatMuls reading a LayerNorm output (Q/K/V, "
                             "FFN in), SmoothQuant's own placement")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--evaluation", type=int, default=256)
    args = parser.parse_args()
    path = ml.export_onnx(default_cache())
    model = onnx.load(str(path))
    cal, ev = ml.sentence_sets(args.calibration, args.evaluation)
    cal_b = ml.batches(ml.tokenize(cal), 32)
    ev_t = ml.tokenize(ev)
    ref = ml.embed(ort_session(path), ev_t)
    plan = PrecisionConfig.from_mapping(ml.INT8_PLAN if args.plan == "int8" else ml.MIXED_PLAN)
    print("| method | variant | mean cosine | min cosine | retrieval agreement % |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        variants: list[tuple[str, onnx.ModelProto]] = \
            [] if args.no_baseline else [("baseline", model)]
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        ln_fed = [n.name for n in model.graph.node if n.op_type == "MatMul"
                  and producer.get(n.input[0]) == "LayerNormalization"]
        for scope in args.scope:
            for alpha in args.alpha:
                start = time.perf_counter()
                sm, rep = smoothquant(model, cal_b, alpha=alpha,
                                      layers=ln_fed if scope == "layernorm" else None)
                print(f"<!-- smoothquant alpha {alpha} {scope}: {rep.summary()}, "
                      f"{time.perf_counter() - start:.1f} s -->", flush=True)
                label = "" if scope == "all" else " (LayerNorm-fed MatMuls only)"
                variants.append((f"smoothquant alpha {alpha}{label}", sm))
        for method in args.methods:
            for name, m in variants:
                p = Path(tmp) / "m.onnx"
                save_model(m, p)
                scales = calibrate(p, cal_b, method=method).scales
                q = quantize_model(m, scales, plan).model
                qp = Path(tmp) / "q.onnx"
                save_model(q, qp)
                out = ml.embed(ort_session(qp), ev_t)
                cos = ml.cosine_to_reference(ref, out)
                print(f"| {method} | {name} | {cos.mean():.4f} | {cos.min():.3f} | "
                      f"{100 * ml.retrieval_agreement(ref, out):.1f} |", flush=True)


if __name__ == "__main__":
    main()
