"""Models, data, configurations and the one evaluation path of ``qdq/run.py`` (dev venv only).

Models and data come from ``recipes`` (nothing is downloaded):

* EfficientNet-Lite0: calibration = ``images.calibration_set()`` (66 views of 11 photos),
  evaluation = ``images.evaluation_set(views)`` (7 other photos); metrics: top-1 agreement with
  FP32, top-1 against ImageNet labels (:data:`EFFNET_LABELS`, several acceptable classes per
  photo), logit SQNR.
* PP-OCRv4 rec: calibration / evaluation = ``ppocr.rec_sets()`` (48 / 128 rendered lines, no
  string in both); metrics: CER with CTC greedy decoding, line agreement with FP32's decoding.
* PP-OCRv4 det: ``ppocr.det_sets()`` (16 / 16 pages 320x320); metrics: IoU of the probability
  maps binarised at 0.3 against FP32's, mean absolute difference.

Every output model of every tool is evaluated by :func:`evaluate` with
``recipes.runtime.ort_session`` (ONNX Runtime CPU, ``session.disable_quant_qdq = 1``: each Q/DQ
runs as written, as TensorRT computes it; see recipes/runtime.py for why the default
session gives wrong accuracies for Q/DQ models on this CPU).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: ImageNet-1k class indices accepted as correct for each evaluation photo of
#: ``recipes.images.EVALUATION_PHOTOS`` (the photos have no official label; these are
#: the classes a person would accept). chelsea: 281 tabby, 282 tiger cat, 283 Persian cat,
#: 284 Siamese cat, 285 Egyptian cat; coffee: 967 espresso, 968 cup, 504 coffee mug; rocket:
#: 657 missile, 744 projectile, 812 space shuttle; flower: 985 daisy; camera (a cameraman
#: behind a camera on a tripod): 872 tripod, 759 reflex camera; motorcycle_left/right: 665
#: moped, 670 motor scooter.
EFFNET_LABELS: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 283, 284, 285),
    "coffee": (967, 968, 504),
    "rocket": (657, 744, 812),
    "flower": (985,),
    "camera": (872, 759),
    "motorcycle_left": (665, 670),
    "motorcycle_right": (665, 670),
}


@dataclass
class Bench:
    """One model of the benchmark: files, data, build shapes, quantkit configurations."""

    key: str
    title: str
    fp32: Path
    input: str
    cal: Path  # calibration .npy, identical for every tool
    n_batches: int
    eval_x: np.ndarray
    eval_batch: int
    shapes: dict[str, Any]
    metric_names: tuple[str, ...]
    #: label -> (method or None, precision mapping, note)
    quantkit: dict[str, tuple[str | None, dict[str, Any], str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    reference: Any = None  # FP32 outputs
    info: dict[str, Any] = field(default_factory=dict)


def _save(work: Path, name: str, arr: np.ndarray) -> Path:
    from recipes.images import save_npy

    return save_npy(arr.astype(np.float32), work / "data" / f"{name}.npy")


def effnet(work: Path, views: int) -> Bench:
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    path = eff.export_onnx(work / "models")
    cal = images.calibration_set()
    ev = images.evaluation_set(views_per_photo=views)
    labels = np.repeat(np.arange(len(images.EVALUATION_PHOTOS)), views)
    accept = [EFFNET_LABELS[n] for n in images.EVALUATION_PHOTOS]
    int8_fp16 = eff.INT8_PLAN  # {"default": "int8", "default_float": "fp16"}
    b = Bench(
        key="effnet", title="EfficientNet-Lite0", fp32=path, input=eff.INPUT_NAME,
        cal=_save(work, "effnet_cal", cal), n_batches=len(cal) // 16, eval_x=ev, eval_batch=32,
        shapes=eff.TRT_SHAPES, metric_names=("agreement", "top1", "sqnr_db"),
        extra={"photo": labels, "accept": accept},
        info={"calibration": f"{len(cal)} views of {len(images.CALIBRATION_PHOTOS)} photos "
                             f"(images.calibration_set())",
              "evaluation": f"{len(ev)} views of {len(images.EVALUATION_PHOTOS)} other photos "
                            f"(images.evaluation_set({views}))",
              "batches": f"{len(cal) // 16} calibration batches (np.array_split)"})
    b.quantkit = {
        "fp16": (None, {"default": "fp16", "default_float": "fp16"}, "FP16 everywhere, no INT8"),
        "int8 entropy": ("entropy", int8_fp16, "every Conv/Gemm INT8, rest FP16"),
        "int8 minmax": ("minmax", int8_fp16, "every Conv/Gemm INT8, rest FP16"),
        "int8 percentile": ("percentile", int8_fp16,
                            "recipe's method (99.99), every Conv/Gemm INT8, rest FP16"),
        "mixed percentile": ("percentile", eff.MIXED_PLAN,
                             "recipe's plan MIXED_PLAN: 10 sensitive layers FP16"),
    }
    return b


def rec(work: Path) -> Bench:
    from recipes import ppocr

    _, path = ppocr.model_paths()
    cal_lines, ev_lines = ppocr.rec_sets()
    cal, ev = ppocr.rec_batch(cal_lines), ppocr.rec_batch(ev_lines)
    truth = [line.text for line in ev_lines]
    int8_fp16 = {**ppocr.REC_INT8_PLAN, "default_float": "fp16"}
    b = Bench(
        key="rec", title="PP-OCRv4 rec", fp32=path, input=ppocr.REC_INPUT,
        cal=_save(work, "rec_cal", cal), n_batches=len(cal) // 8, eval_x=ev, eval_batch=32,
        shapes=ppocr.REC_TRT_SHAPES, metric_names=("cer", "agreement"),
        extra={"truth": truth, "chars": ppocr.character_list(path)},
        info={"calibration": f"{len(cal)} rendered lines (ppocr.rec_sets())",
              "evaluation": f"{len(ev)} other lines, {sum(map(len, truth))} characters",
              "batches": f"{len(cal) // 8} calibration batches"})
    b.quantkit = {
        "fp16": (None, {"default": "fp16", "default_float": "fp16"}, "FP16 everywhere, no INT8"),
        "int8 entropy": ("entropy", int8_fp16, "every Conv/MatMul INT8, rest FP16"),
        "int8 minmax": ("minmax", int8_fp16, "every Conv/MatMul INT8, rest FP16"),
        "int8 percentile": ("percentile", int8_fp16, "recipe's method, every Conv/MatMul INT8, "
                                                     "rest FP16"),
        "mixed percentile": ("percentile", ppocr.REC_MIXED_PLAN,
                             "recipe's plan REC_MIXED_PLAN: stem + first dw conv FP16"),
    }
    return b


def det(work: Path) -> Bench:
    from recipes import ppocr

    path, _ = ppocr.model_paths()
    cal, ev = ppocr.det_sets()
    bn = {"op_type": "BatchNormalization", "precision": "fp32"}
    int8_fp16 = {**ppocr.DET_INT8_PLAN, "default_float": "fp16", "overrides": [bn]}
    b = Bench(
        key="det", title="PP-OCRv4 det", fp32=path, input=ppocr.DET_INPUT,
        cal=_save(work, "det_cal", cal), n_batches=len(cal) // 4, eval_x=ev, eval_batch=4,
        shapes=ppocr.DET_TRT_SHAPES, metric_names=("iou", "mean_abs_diff"),
        info={"calibration": f"{len(cal)} pages 320x320 (ppocr.det_sets())",
              "evaluation": f"{len(ev)} other pages", "batches": f"{len(cal) // 4} batches"})
    b.quantkit = {
        "int8 entropy": ("entropy", int8_fp16, "every Conv/ConvTranspose INT8, rest FP16, BN FP32"),
        "int8 minmax": ("minmax", int8_fp16, "every Conv/ConvTranspose INT8, rest FP16, BN FP32"),
        "int8 percentile": ("percentile", int8_fp16, "recipe's method; rest FP16, BN FP32"),
        "mixed percentile": ("percentile", ppocr.DET_MIXED_PLAN, "recipe's plan DET_MIXED_PLAN"),
    }
    return b


BUILDERS = {"effnet": effnet, "rec": rec, "det": det}

#: ModelOpt configurations: label -> calibration_method (everything else default: int8,
#: high_precision_dtype fp16, calibration_eps cpu).
MODELOPT = {"entropy": "entropy", "max": "max"}

#: ONNX Runtime ``quantize_static`` configurations (QDQ format in all).
#: ``default``: the defaults of ORT 1.32 (activations QInt8 asymmetric, weights QInt8 symmetric
#: per tensor, MinMax, int32 bias). ``trt``: what ``quantize_static``'s docstring recommends
#: "when targeting GPU/TRT" (symmetric QInt8 activations and weights), per-channel weights, and
#: the ``quant_pre_process`` step its docs recommend before quantizing. ``trt, no bias``: the
#: same with ``QuantizeBias: False`` (the usual workaround for TensorRT's rejection of int32
#: bias, onnxruntime#14229).
ORT = {
    "default": {},
    "trt": {"preprocess": True, "activation_type": "QInt8", "weight_type": "QInt8",
            "per_channel": True,
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}},
    "trt, no bias": {"preprocess": True, "activation_type": "QInt8", "weight_type": "QInt8",
                     "per_channel": True,
                     "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False}},
}


def run(bench: Bench, path: str | Path) -> np.ndarray:
    from recipes.runtime import ort_session, run_batched

    return run_batched(ort_session(path), bench.eval_x, bench.eval_batch)


def evaluate(bench: Bench, path: str | Path) -> dict[str, float]:
    """The one evaluation path: ONNX Runtime CPU in TensorRT-like numerics, same data."""
    from recipes.runtime import sqnr_db

    out = run(bench, path)
    ref = bench.reference
    if bench.key == "effnet":
        top = out.argmax(1)
        ok = [t in bench.extra["accept"][p] for t, p in zip(top, bench.extra["photo"],
                                                           strict=True)]
        return {"agreement": float(np.mean(top == ref.argmax(1))), "top1": float(np.mean(ok)),
                "sqnr_db": sqnr_db(ref, out)}
    if bench.key == "rec":
        from recipes import ppocr

        chars, truth = bench.extra["chars"], bench.extra["truth"]
        text = [s.strip() for s in ppocr.ctc_greedy_decode(out, chars)]
        ref_text = bench.extra.setdefault(
            "ref_text", [s.strip() for s in ppocr.ctc_greedy_decode(ref, chars)])
        return {"cer": ppocr.character_error_rate(text, truth),
                "agreement": float(np.mean([a == b for a, b in zip(text, ref_text,
                                                                   strict=True)]))}
    from recipes import ppocr

    d = ppocr.det_agreement(ref, out)
    return {"iou": d["iou"], "mean_abs_diff": d["mean_abs_diff"]}


def describe(path: str | Path) -> dict[str, Any]:
    """Q/DQ counts, op types fed by DequantizeLinear, lint summary and findings by code."""
    import onnx

    from quantkit.qdq.lint import lint_model

    model = onnx.load(str(path))
    ops = Counter(n.op_type for n in model.graph.node)
    rep = lint_model(model, source=Path(path).name, base_dir=str(Path(path).parent))
    s = rep.summary()
    codes = Counter(f"{f.severity[0].upper()}:{f.code}" for f in rep.findings)
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed = Counter(n.op_type for n in model.graph.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                  and any(i in dq_out for i in n.input))
    casts = ops.get("Cast", 0)
    first = [f"{f.code} {f.message}"[:300] for f in rep.findings if f.severity == "error"][:3]
    return {"Q": ops.get("QuantizeLinear", 0), "DQ": ops.get("DequantizeLinear", 0),
            "cast": casts, "nodes": len(model.graph.node),
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          None),
            "lint": {k: s[k] for k in ("errors", "warnings", "info")},
            "lint_codes": dict(codes), "lint_first_errors": first,
            "compute_precision": s["compute_precision"], "dq_fed_ops": dict(fed)}
