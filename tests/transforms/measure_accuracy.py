"""Measure what equalization and bias correction do to INT8 accuracy (docs/transforms.md).

Run from the repository root (not collected by pytest)::

    .venv/bin/python tests/transforms/measure_accuracy.py demo
    .venv/bin/python tests/transforms/measure_accuracy.py effnet
    .venv/bin/python tests/transforms/measure_accuracy.py effnet-fp16

For each calibration method and each variant (baseline, CLE, bias correction, both) the
pipeline is: transform the FP32 model -> calibrate it on the calibration set -> (bias
correction, with those scales) -> quantize (all Conv/Gemm INT8, same scales) -> run the Q/DQ
model with ONNX Runtime in TensorRT-like numerics (Q/DQ as written) on the held-out set.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from quantkit._ort import session  # noqa: E402
from quantkit.capture import calibrate  # noqa: E402
from quantkit.model import save_model  # noqa: E402
from quantkit.qdq.plan import PrecisionConfig  # noqa: E402
from quantkit.qdq.writer import quantize_model  # noqa: E402
from quantkit.transforms import bias_correct, equalize  # noqa: E402

#: bc = independent bias correction (one pass); -seq = sequential (one pass per layer).
VARIANTS = ("baseline", "cle", "bc", "cle+bc", "bc-seq", "cle+bc-seq")


def run(model: onnx.ModelProto | str, x: np.ndarray, name: str, batch: int = 50) -> np.ndarray:
    payload = model if isinstance(model, str) else model.SerializeToString()
    sess = session(payload, providers=["CPUExecutionProvider"])
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {name: x[i: i + batch]})[0]
                           for i in range(0, len(x), batch)]).astype(np.float64)


def variant(model: onnx.ModelProto, cal: np.ndarray, name: str, method: str, which: str,
            config: PrecisionConfig, tmp: Path, **method_options: Any) -> onnx.ModelProto:
    m = model
    if "cle" in which:
        m, _ = equalize(m)
    path = tmp / f"{which}.onnx"
    save_model(m, path)
    batches = [{name: cal[i: i + 16]} for i in range(0, len(cal), 16)]
    scales = calibrate(path, batches, method=method, method_options=method_options).scales
    if "bc" in which:
        layers = [n.name for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        m, _ = bias_correct(m, batches, scales=scales, layers=layers,
                            sequential=which.endswith("-seq"), config=config)
    return quantize_model(m, scales, config).model


def table(model: onnx.ModelProto, cal: np.ndarray, ev: np.ndarray, labels: np.ndarray | None,
          name: str, variants: tuple[str, ...], methods: dict[str, dict[str, Any]],
          config: PrecisionConfig) -> None:
    ref = run(model, ev, name)
    print(f"FP32: top-1 {100 * (ref.argmax(1) == labels).mean():.1f}" if labels is not None
          else "FP32 reference")
    print("| method | variant | top-1 % | top-1 agreement % | logit SQNR dB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as t:
        for method, opts in methods.items():
            for which in variants:
                start = time.perf_counter()
                q = variant(model, cal, name, method.split(":")[0], which, config, Path(t),
                            **opts)
                out = run(q, ev, name)
                top1 = f"{100 * (out.argmax(1) == labels).mean():.1f}" if labels is not None \
                    else "-"
                agree = 100 * (out.argmax(1) == ref.argmax(1)).mean()
                sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - out) ** 2).sum())
                print(f"| {method} | {which} | {top1} | {agree:.1f} | {sqnr:.2f} |"
                      f"  <!-- {time.perf_counter() - start:.0f} s -->", flush=True)


def demo() -> None:
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
    table(logits, cal, ev, labels, "input", VARIANTS,
          {"entropy": {}, "minmax": {}, "percentile:99.99": {"percentile": 99.99}},
          PrecisionConfig())


def effnet(fp16_rest: bool = False) -> None:
    from recipes.models import efficientnet_lite0 as eff
    from recipes.models import images

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


if __name__ == "__main__":
    {"demo": demo, "effnet": effnet, "effnet-fp16": lambda: effnet(True)}[sys.argv[1]]()
