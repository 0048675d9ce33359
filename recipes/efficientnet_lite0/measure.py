"""EfficientNet-Lite0's measurements behind recipes/MODELS.md (not run by the tests).

``python -m recipes.efficientnet_lite0.measure [--sensitivity] [--cache DIR]``: every plan
(FP16, INT8 per calibration method, the mixed and expand-only plans of the recipe and
``plans.yaml``) quantized, scored against FP32 on the evaluation and out-of-distribution
photos, linted, parsed and built with TensorRT-RTX; or, with ``--sensitivity``, the per-layer
scan that chose the mixed plan.
"""

from __future__ import annotations

from pathlib import Path

from recipes.efficientnet_lite0 import (
    CALIBRATION_METHOD,
    EXPAND_ONLY_PLAN,
    INPUT_NAME,
    INT8_PLAN,
    MIXED_PLAN,
    TRT_SHAPES,
    export_onnx,
    top1_agreement,
)
from recipes.runtime import default_cache


def sensitivity(cache: Path) -> None:
    """Per-layer scan: logit SQNR with only that layer in INT8 (chose the mixed plan)."""
    import onnx

    from quantkit.capture import calibrate
    from recipes import images
    from recipes.runtime import layer_sensitivity

    path = export_onnx(cache)
    cal, ev = images.calibration_set(), images.evaluation_set()[::4]
    scales = calibrate(path, [{INPUT_NAME: cal[i: i + 16]} for i in range(0, len(cal), 16)],
                       method=CALIBRATION_METHOD).scales
    result = layer_sensitivity(onnx.load(str(path)), scales, ev)
    print(f"only this layer INT8 -> logits SQNR vs FP32 ({len(ev)} evaluation images):")
    for name, db in result.items():
        print(f"  {db:6.1f} dB  {name}")


def measure(cache: Path) -> None:
    """Every plan: agreement, SQNR, Q/DQ counts, lint, TensorRT-RTX parse and build."""
    import json
    import time

    import onnx

    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes import images
    from recipes.runtime import ort_session, rtx_build, rtx_parse, run_batched, sqnr_db

    path = export_onnx(cache)
    cal, ev = images.calibration_set(), images.evaluation_set()
    ood = images.out_of_distribution_set()
    ref = run_batched(ort_session(path), ev)
    ref_ood = run_batched(ort_session(path), ood)
    model = onnx.load(str(path))
    print(f"EfficientNet-Lite0: calibration {len(cal)} images, evaluation {len(ev)}, "
          f"out-of-distribution {len(ood)}")
    plans = {"fp16": {"default": "fp16", "default_float": "fp16"}}
    for method in ("percentile", "entropy", "minmax", "mse"):
        start = time.perf_counter()
        scales = calibrate(path, [{INPUT_NAME: cal[i: i + 16]} for i in range(0, len(cal), 16)],
                           method=method).scales
        print(f"calibrate {method}: {time.perf_counter() - start:.1f} s")
        plans[f"int8 ({method})"] = (INT8_PLAN, scales)
        if method == CALIBRATION_METHOD:
            plans[f"mixed ({method})"] = (MIXED_PLAN, scales)
            plans[f"expand-only ({method})"] = (EXPAND_ONLY_PLAN, scales)
    for label, spec in plans.items():
        cfg, scales = spec if isinstance(spec, tuple) else (spec, None)
        start = time.perf_counter()
        res = quantize_model(model, scales, PrecisionConfig.from_mapping(cfg))
        q_s = time.perf_counter() - start
        out = cache / f"effnet-{label.replace(' ', '_').replace('(', '').replace(')', '')}.onnx"
        save_model(res.model, out)
        ops = [n.op_type for n in res.model.graph.node]
        lint = lint_model(res.model).summary()
        o, o2 = run_batched(ort_session(out), ev), run_batched(ort_session(out), ood)
        prec, parse_s = rtx_parse(out)
        nbytes, build_s = rtx_build(out, TRT_SHAPES)
        print(json.dumps({
            "plan": label, "agreement": round(top1_agreement(ref, o), 4),
            "agreement_ood": round(top1_agreement(ref_ood, o2), 4),
            "sqnr_db": round(sqnr_db(ref, o), 1), "quantize_s": round(q_s, 2),
            "Q": ops.count("QuantizeLinear"), "DQ": ops.count("DequantizeLinear"),
            "lint": {k: lint[k] for k in ("errors", "warnings", "info")},
            "rtx_int8_layers": sum(v == "int8" for v in prec.values()),
            "rtx_parse_s": round(parse_s, 2), "rtx_build_s": round(build_s, 1),
            "engine_mb": round(nbytes / 2**20, 1)}))


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Measure EfficientNet-Lite0 FP16/INT8/mixed.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for exported/quantized models (default: pytest's cache)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="per-layer scan instead: SQNR with only one layer in INT8")

    args = parser.parse_args()
    (sensitivity if args.sensitivity else measure)(args.cache or default_cache())
