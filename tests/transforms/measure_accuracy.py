"""Measure what equalization and bias correction do to INT8 accuracy (docs/transforms.md).

Run from the repository root (not collected by pytest)::

    .venv/bin/python -m tests.transforms.measure_accuracy demo
    .venv/bin/python -m tests.transforms.measure_accuracy effnet
    .venv/bin/python -m tests.transforms.measure_accuracy effnet-fp16
    .venv/bin/python -m tests.transforms.measure_accuracy demo-hb
    .venv/bin/python -m tests.transforms.measure_accuracy effnet-relu

For each calibration method and each variant the pipeline is: transform the FP32 model ->
calibrate it on the calibration set -> (bias correction, with those scales) -> quantize (all
Conv/Gemm INT8, same scales) -> run the Q/DQ model with ONNX Runtime in TensorRT-like numerics
(Q/DQ as written) on the held-out set. A variant is a ``+``-joined list of steps: ``cle``
(equalize), ``cle-relu`` (equalize with ReLU6 -> ReLU), ``relu`` (ReLU6 -> ReLU only), ``hb``
(high-bias absorption on the calibration set), ``bc`` / ``bc-seq`` (bias correction); a
``fp32:`` prefix skips quantization (the FP32 cost of a function-changing step). Agreement and
SQNR are always against the *original* FP32 model.

``effnet-relu`` uses the prepared ``recipes/_data/efficientnet_lite0`` (66 calibration photos,
56 held-out views); ``effnet`` / ``effnet-fp16`` export and generate the 448-view set.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit._ort import session
from quantkit.capture import calibrate
from quantkit.model import save_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.transforms import absorb_high_bias, bias_correct, equalize
from quantkit.transforms._common import working_copy
from quantkit.transforms.equalize import relu6_to_relu_nodes

ROOT = Path(__file__).resolve().parents[2]

#: bc = independent bias correction (one pass); -seq = sequential (one pass per layer).
VARIANTS = ("baseline", "cle", "bc", "cle+bc", "bc-seq", "cle+bc-seq")


def run(model: onnx.ModelProto | str, x: np.ndarray, name: str, batch: int = 50) -> np.ndarray:
    payload = model if isinstance(model, str) else model.SerializeToString()
    sess = session(payload, providers=["CPUExecutionProvider"])
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {name: x[i: i + batch]})[0]
                           for i in range(0, len(x), batch)]).astype(np.float64)


def variant(model: onnx.ModelProto, cal: np.ndarray, name: str, method: str, which: str,
            config: PrecisionConfig, tmp: Path, **method_options: Any,
            ) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """``(transformed FP32 model, quantized model)`` of one variant."""
    m = model
    fp32 = which.startswith("fp32:")
    steps = which.removeprefix("fp32:").split("+")
    batches = [{name: cal[i: i + 16]} for i in range(0, len(cal), 16)]
    if "relu" in steps:
        m = working_copy(m)
        print(f"  <!-- relu: {len(relu6_to_relu_nodes(m))} ReLU6 replaced -->")
    if "cle" in steps or "cle-relu" in steps:
        m, rep = equalize(m, relu6_to_relu="cle-relu" in steps)
        print(f"  <!-- {rep.summary()} -->")
    if "hb" in steps:
        m, rep = absorb_high_bias(m, batches)
        print(f"  <!-- {rep.summary()}: "
              f"{sum(c['absorbed_channels'] for c in rep.changed)} channels -->")
    if fp32:
        return m, m
    transformed = m
    path = tmp / f"{which.replace(':', '_')}.onnx"
    save_model(m, path)
    scales = calibrate(path, batches, method=method, method_options=method_options).scales
    if "bc" in steps or "bc-seq" in steps:
        layers = [n.name for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        m, _ = bias_correct(m, batches, scales=scales, layers=layers,
                            sequential="bc-seq" in steps, config=config)
    return transformed, quantize_model(m, scales, config).model


def table(model: onnx.ModelProto, cal: np.ndarray, ev: np.ndarray, labels: np.ndarray | None,
          name: str, variants: tuple[str, ...], methods: dict[str, dict[str, Any]],
          config: PrecisionConfig, own: bool = False) -> None:
    """One row per (method, variant); ``own``: also against the transformed FP32 model."""
    ref = run(model, ev, name)
    print(f"FP32: top-1 {100 * (ref.argmax(1) == labels).mean():.1f}" if labels is not None
          else "FP32 reference")
    extra = " agreement vs own FP32 % | SQNR vs own FP32 dB |" if own else ""
    print(f"| method | variant | top-1 % | top-1 agreement % | logit SQNR dB |{extra}")
    print("|---|---|---|---|---|" + ("---|---|" if own else ""))
    with tempfile.TemporaryDirectory() as t:
        for method, opts in methods.items():
            for which in variants:
                start = time.perf_counter()
                fp, q = variant(model, cal, name, method.split(":")[0], which, config,
                                Path(t), **opts)
                out = run(q, ev, name)
                top1 = f"{100 * (out.argmax(1) == labels).mean():.1f}" if labels is not None \
                    else "-"
                agree = 100 * (out.argmax(1) == ref.argmax(1)).mean()
                sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - out) ** 2).sum())
                cols = ""
                if own and which.startswith("fp32:"):
                    cols = " - | - |"
                elif own:
                    mine = run(fp, ev, name)
                    own_sqnr = 10 * np.log10((mine ** 2).sum() / max(
                        float(((mine - out) ** 2).sum()), 1e-30))
                    cols = f" {100 * (out.argmax(1) == mine.argmax(1)).mean():.1f} |" \
                        f" {own_sqnr:.2f} |"
                print(f"| {method} | {which} | {top1} | {agree:.1f} | {sqnr:.2f} |{cols}"
                      f"  <!-- {time.perf_counter() - start:.0f} s -->", flush=True)


def demo(variants: tuple[str, ...] = VARIANTS) -> None:
    from quantkit.demo import asset

    model = onnx.load(str(asset("demo_cnn.onnx")))
    # compare logits (the Softmax input): probabilities saturate and hide the error
    model.graph.output[0].name = "probs"
    logits = onnx.ModelProto()
    logits.CopyFrom(model)
    soft = [n for n in logits.graph.node if n.op_type == "Softmax"][0]
    logits.graph.node.remove(soft)
    logits.graph.output[0].name = soft.input[0]
    with np.load(asset("demo_data.npz")) as d:
        cal = d["calibration"].astype(np.float32)[:, None] / 255.0
        ev = d["evaluation"].astype(np.float32)[:, None] / 255.0
        labels = d["evaluation_labels"]
    table(logits, cal, ev, labels, "input", variants,
          {"entropy": {}, "minmax": {}, "percentile:99.99": {"percentile": 99.99}},
          PrecisionConfig())


def effnet(fp16_rest: bool = False) -> None:
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    cache = ROOT / ".pytest_cache" / "d" / "quantkit-real-models"
    path = eff.export_onnx(cache)
    model = onnx.load(str(path))
    cal, ev = images.calibration_set(), images.evaluation_set()
    if fp16_rest:  # the recipe's INT8 plan: every Conv/Gemm INT8, the rest FP16
        table(model, cal, ev, None, eff.INPUT_NAME, ("baseline", "bc"),
              {"percentile:99.99": {"percentile": 99.99}},
              PrecisionConfig.from_mapping(eff.INT8_PLAN))
        return
    table(model, cal, ev, None, eff.INPUT_NAME, VARIANTS[:4],
          {"percentile:99.99": {"percentile": 99.99}},
          PrecisionConfig(default="int8", default_float="fp32"))


def effnet_relu() -> None:
    """ReLU6 -> ReLU and high-bias absorption on the prepared EfficientNet-Lite0 data."""
    folder = ROOT / "recipes" / "_data" / "efficientnet_lite0"
    model = onnx.load(str(folder / "model.onnx"))
    cal = np.load(folder / "calibration.npy")
    ev = np.load(folder / "evaluation.npy")
    table(model, cal, ev, None, "input",
          ("fp32:relu", "baseline", "cle", "hb", "relu", "cle-relu", "relu+hb", "cle-relu+hb"),
          {"percentile:99.99": {"percentile": 99.99}},
          PrecisionConfig(default="int8", default_float="fp32"), own=True)


if __name__ == "__main__":
    {"demo": demo, "effnet": effnet, "effnet-fp16": lambda: effnet(True),
     "demo-hb": lambda: demo(("baseline", "hb", "cle", "cle+hb")),
     "effnet-relu": effnet_relu}[sys.argv[1]]()
