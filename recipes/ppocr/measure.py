"""PP-OCRv4's measurements behind recipes/MODELS.md (not run by the tests).

``python -m recipes.ppocr.measure [--sensitivity] [--cache DIR]``: det and rec under each plan
(FP16, INT8, INT8 with an FP16 rest, mixed; rec plans from ``rec.yaml``, det plans from
``plans.yaml``) quantized, scored, linted, parsed and built with TensorRT-RTX; or, with
``--sensitivity``, the per-layer scans that chose the mixed plans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.ppocr import (
    CALIBRATION_METHOD,
    DET_INT8_PLAN,
    DET_MIXED_PLAN,
    DET_TRT_SHAPES,
    REC_INT8_PLAN,
    REC_MIXED_PLAN,
    REC_TRT_SHAPES,
    character_error_rate,
    character_list,
    det_agreement,
    det_sets,
    model_paths,
    rec_batch,
    rec_sets,
    recognise,
)
from recipes.runtime import default_cache


def sensitivity() -> None:
    """Per-layer scans of det and rec: output SQNR with only that layer in INT8."""
    import onnx

    from quantkit.capture import calibrate
    from recipes.runtime import layer_sensitivity

    det, rec = model_paths()
    det_cal, det_ev = det_sets()
    cal_lines, ev_lines = rec_sets()
    for label, path, cal, ev, batch in (("det", det, det_cal, det_ev, 4),
                                        ("rec", rec, rec_batch(cal_lines),
                                         rec_batch(ev_lines)[::4], 8)):
        scales = calibrate(path, [{"x": cal[i: i + batch]} for i in range(0, len(cal), batch)],
                           method=CALIBRATION_METHOD).scales
        result = layer_sensitivity(onnx.load(str(path)), scales, ev, batch_size=batch)
        print(f"{label}: only this layer INT8 -> output SQNR vs FP32 ({len(ev)} inputs), worst 10:")
        for name, db in list(result.items())[:10]:
            print(f"  {db:6.1f} dB  {name}")


def measure(cache: Path) -> None:
    """Det and rec under every plan: CER / map agreement, lint, TensorRT-RTX parse and build."""
    import json
    import time

    import onnx

    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes.runtime import ort_session, rtx_build, rtx_parse, run_batched

    cache.mkdir(parents=True, exist_ok=True)
    det, rec = model_paths()
    chars = character_list(rec)
    cal_lines, ev_lines = rec_sets()
    truth = [line.text for line in ev_lines]
    rec_cal, rec_ev = rec_batch(cal_lines), rec_batch(ev_lines)
    det_cal, det_ev = det_sets()
    det_ref = run_batched(ort_session(det), det_ev, 4)
    fp32_cer = character_error_rate(recognise(ort_session(rec), rec_ev, chars), truth)
    print(f"rec: {len(cal_lines)} calibration / {len(ev_lines)} evaluation lines, FP32 CER "
          f"{fp32_cer:.4f}; det: {len(det_cal)} / {len(det_ev)} pages")
    fp16_bn = {"op_type": "BatchNormalization", "precision": "fp32"}
    jobs = [
        ("det", det, det_cal, {"default": "fp16", "default_float": "fp16",
                               "overrides": [fp16_bn]}, "fp16 (BN fp32)", DET_TRT_SHAPES),
        ("det", det, det_cal, DET_INT8_PLAN, "int8", DET_TRT_SHAPES),
        ("det", det, det_cal, {**DET_INT8_PLAN, "default_float": "fp16", "overrides": [fp16_bn]},
         "int8, fp16 rest (BN fp32)", DET_TRT_SHAPES),
        ("det", det, det_cal, DET_MIXED_PLAN, "mixed", DET_TRT_SHAPES),
        ("rec", rec, rec_cal, {"default": "fp16", "default_float": "fp16"}, "fp16",
         REC_TRT_SHAPES),
        ("rec", rec, rec_cal, REC_INT8_PLAN, "int8", REC_TRT_SHAPES),
        ("rec", rec, rec_cal, {**REC_INT8_PLAN, "default_float": "fp16"}, "int8, fp16 rest",
         REC_TRT_SHAPES),
        ("rec", rec, rec_cal, REC_MIXED_PLAN, "mixed", REC_TRT_SHAPES),
    ]
    scales: dict[str, Any] = {}
    for kind, path, cal, cfg, label, shapes in jobs:
        if kind not in scales:
            start = time.perf_counter()
            batch = 4 if kind == "det" else 8
            scales[kind] = calibrate(path, [{"x": cal[i: i + batch]}
                                            for i in range(0, len(cal), batch)],
                                     method=CALIBRATION_METHOD).scales
            print(f"calibrate {kind}: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        res = quantize_model(onnx.load(str(path)), scales[kind], PrecisionConfig.from_mapping(cfg))
        q_s = time.perf_counter() - start
        out = cache / f"{kind}-{label.replace(' ', '_').replace(',', '').replace('(', '')}.onnx"
        out = out.with_name(out.name.replace(")", ""))
        save_model(res.model, out)
        ops = [n.op_type for n in res.model.graph.node]
        lint = lint_model(res.model).summary()
        sess = ort_session(out)
        if kind == "det":
            metric = det_agreement(det_ref, run_batched(sess, det_ev, 4))
        else:
            metric = {"cer": character_error_rate(recognise(sess, rec_ev, chars), truth)}
        prec, parse_s = rtx_parse(out)
        nbytes, build_s = rtx_build(out, shapes)
        print(json.dumps({
            "model": kind, "plan": label, **{k: round(v, 4) for k, v in metric.items()},
            "quantize_s": round(q_s, 2), "Q": ops.count("QuantizeLinear"),
            "DQ": ops.count("DequantizeLinear"),
            "lint": {k: lint[k] for k in ("errors", "warnings", "info")},
            "rtx_int8_layers": sum(v == "int8" for v in prec.values()),
            "rtx_parse_s": round(parse_s, 2), "rtx_build_s": round(build_s, 1),
            "engine_mb": round(nbytes / 2**20, 1)}))


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Measure PP-OCRv4 det/rec FP16/INT8/mixed.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for quantized models (default: pytest's cache)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="per-layer scan instead: SQNR with only one layer in INT8")

    args = parser.parse_args()
    if args.sensitivity:
        sensitivity()
    else:
        measure(args.cache or default_cache())
