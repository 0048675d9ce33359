"""all-MiniLM-L6-v2's measurements behind recipes/MODELS.md (not run by the tests).

``python -m recipes.minilm.measure [--sensitivity] [--cache DIR] [--prepare DIR]``: every plan
(FP16; INT8 with minmax, percentile, entropy and hybrid scales; the mixed and attention-only
plans of ``recipe.yaml``) quantized, scored against FP32, linted and built with TensorRT-RTX;
with ``--sensitivity`` the per-group scan that chose the mixed plan; with ``--prepare DIR``
the recipe's data (as ``python -m recipes prepare --only minilm``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from recipes.minilm import (
    ATTENTION_ONLY_PLAN,
    INT8_PLAN,
    LAYERS,
    MIXED_PLAN,
    SEQ_LEN,
    TRT_SHAPES,
    batches,
    cosine_to_reference,
    embed,
    export_onnx,
    hybrid_scales,
    nearest_neighbours,
    neighbour_margins,
    prepare,
    sentence_sets,
    tokenize,
)
from recipes.runtime import default_cache, ort_session


def measure(cache: Path) -> None:
    """Every plan: cosine, retrieval agreement, ORT latency, TensorRT-RTX build."""
    import collections
    import time

    import onnx

    from quantkit.backends import BuildOptions, get_backend
    from quantkit.capture import calibrate
    from quantkit.evaluate import measure
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    start = time.perf_counter()
    path = export_onnx(cache)
    print(f"export (or cached): {time.perf_counter() - start:.1f} s")
    model = onnx.load(str(path))
    cal, ev = sentence_sets()
    ct, et = tokenize(cal), tokenize(ev)
    ref = embed(ort_session(path), et)
    margin = neighbour_margins(ref)
    clear = margin >= 0.02
    print(f"calibration {len(cal)} sentences, evaluation {len(ev)}; {SEQ_LEN} tokens; FP32 "
          f"nearest-neighbour margin median {np.median(margin):.3f}, >= 0.02 for "
          f"{clear.mean():.0%}")
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        start = time.perf_counter()
        scales[method] = calibrate(path, batches(ct, 32), method=method).scales
        print(f"calibrate {method}: {time.perf_counter() - start:.1f} s")
    scales["hybrid"] = hybrid_scales(model, scales["minmax"], scales["percentile"])
    shapes = {k: v[1] for k, v in TRT_SHAPES.items()}
    opts = BuildOptions(shapes=shapes, min_shapes={k: v[0] for k, v in TRT_SHAPES.items()},
                        max_shapes={k: v[2] for k, v in TRT_SHAPES.items()})
    lat_batch = {k: v[:8] for k, v in et.items()}
    runs: list[tuple[str, Any, Any]] = [
        ("fp32", None, None), ("fp16", {"default": "fp16", "default_float": "fp16"}, None),
        ("int8 (minmax)", INT8_PLAN, "minmax"), ("int8 (percentile)", INT8_PLAN, "percentile"),
        ("int8 (entropy)", INT8_PLAN, "entropy"), ("int8 (hybrid)", INT8_PLAN, "hybrid"),
        ("mixed (minmax)", MIXED_PLAN, "minmax"),
        ("attention-only (minmax)", ATTENTION_ONLY_PLAN, "minmax")]
    for label, cfg, method in runs:
        row: dict[str, Any] = {"plan": label}
        if cfg is None:
            out = path
        else:
            start = time.perf_counter()
            res = quantize_model(model, scales.get(method), PrecisionConfig.from_mapping(cfg))
            row["quantize_s"] = round(time.perf_counter() - start, 2)
            slug = re.sub(r"[^a-z0-9]+", "-", label).strip("-")
            out = cache / f"minilm-{slug}.onnx"
            save_model(res.model, out)
            ops = collections.Counter(n.op_type for n in res.model.graph.node)
            row.update(Q=ops["QuantizeLinear"], DQ=ops["DequantizeLinear"],
                       int8_matmuls=sum(n.precision == "int8" and n.op_type == "MatMul"
                                        for n in res.plan.nodes.values()))
            lint = lint_model(res.model).summary()
            row["lint"] = {k: lint[k] for k in ("errors", "warnings", "info")}
        session = ort_session(out)
        got = embed(session, et)
        cos = cosine_to_reference(ref, got)
        same = nearest_neighbours(ref) == nearest_neighbours(got)
        row.update(cos_mean=round(float(cos.mean()), 4), cos_min=round(float(cos.min()), 4),
                   retrieval=round(float(same.mean()), 3),
                   retrieval_clear=round(float(same[clear].mean()), 3))
        lat = measure(lambda s=session: s.run(None, lat_batch), batch_size=8, warmup=3,
                      iterations=20)
        row["ort_ms_p50_b8"] = round(lat.p50_ms, 1)
        try:
            built = get_backend("tensorrt-rtx").build(out, cache / f"{out.stem}.engine", opts)
            sc = built.sidecar
            layers = sc.get("layers", [])
            kernels = sc.get("engine_layers") or []
            row.update(rtx_build_s=round(sc["build_time_s"], 1),
                       engine_mb=round(sc["engine_bytes"] / 2**20, 1),
                       rtx_int8_matmuls=sum(la["type"] == "MATRIX_MULTIPLY"
                                            and la["precision"] == "int8" for la in layers),
                       engine_int8_kernels=sum(k["precision"] == "int8" for k in kernels))
        except Exception as err:  # report, do not stop the table
            row["rtx"] = f"failed: {err}"
        print(json.dumps(row), flush=True)


def sensitivity(cache: Path) -> None:
    """Per-group scan: cosine to FP32 with only some MatMuls in INT8 (chose the mixed plan)."""
    import onnx

    from quantkit.capture import calibrate
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    path = export_onnx(cache)
    model = onnx.load(str(path))
    cal, ev = sentence_sets()
    ct, et = tokenize(cal), tokenize(ev[::2])
    ref = embed(ort_session(path), et)
    layer = r"^/encoder/layer\.{L}/"
    groups = {"query/key/value": layer + r"attention/self/(query|key|value)/MatMul$",
              "Q K^T": layer + r"attention/self/MatMul$",
              "softmax x V": layer + r"attention/self/MatMul_1$",
              "attention output": layer + r"attention/output/dense/MatMul$",
              "FFN in": layer + r"intermediate/dense/MatMul$",
              "FFN out": layer + r"output/dense/MatMul$"}
    print(f"only these MatMuls INT8 (rest FP32) -> cosine to FP32, mean / min, "
          f"{len(ev[::2])} sentences")
    for method in ("minmax", "percentile", "entropy"):
        scales = calibrate(path, batches(ct, 32), method=method).scales
        for label, template in groups.items():
            for which in ("all", *map(str, range(LAYERS))):
                sel = template.replace("{L}", r"\d+" if which == "all" else which)
                cfg = {"default": "fp32", "overrides": [{"regex": sel, "precision": "int8"}]}
                q = quantize_model(model, scales, PrecisionConfig.from_mapping(cfg)).model
                cos = cosine_to_reference(ref, embed(ort_session(q), et))
                print(f"  {method:10s} {label:17s} layer {which:4s} {cos.mean():.4f} "
                      f"{cos.min():.4f}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Measure all-MiniLM-L6-v2 FP16/INT8/mixed.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for exported/quantized models (default: pytest's cache)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="per-layer scan instead: cosine with only some MatMuls in INT8")
    parser.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                        help="write the ONNX model and .npz token arrays that "
                             "recipes/minilm/recipe.yaml reads into DIR (recipes/_data/minilm)")
    args = parser.parse_args()
    if args.prepare is not None:
        for key, value in prepare(args.prepare).items():
            print(f"{key}: {value}")
    else:
        (sensitivity if args.sensitivity else measure)(args.cache or default_cache())
