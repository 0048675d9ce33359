"""``quantkit demo``: the calibration pipeline on a model and data made by the package.

The model is a small residual CNN built in code with fixed weights (no download), and the
calibration data are smooth synthetic images. The demo calibrates it with every built-in
method and writes the TensorRT caches and scales JSON side by side. (The trained demo model,
quantization, evaluation and the HTML report arrive with the later pipeline stages.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantkit._io import atomic_write, write_text_atomic

METHODS = ("entropy", "minmax", "percentile", "mse")


def build_demo_model(path: Path, seed: int = 0) -> Path:
    """Write the demo CNN (Conv-Relu-Conv + residual Add, pool, Gemm, Softmax) to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int, scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    inits = [init("conv1.w", 16, 1, 3, 3, scale=0.4), init("conv1.b", 16, scale=0.1),
             init("conv2.w", 16, 16, 3, 3, scale=0.12), init("conv2.b", 16, scale=0.1),
             init("conv3.w", 32, 16, 3, 3, scale=0.12), init("conv3.b", 32, scale=0.1),
             init("fc.w", 10, 32, scale=0.3), init("fc.b", 10, scale=0.1)]
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], name="/conv1/Conv", pads=[1] * 4),
        n("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        n("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="/conv2/Conv", pads=[1] * 4),
        n("Add", ["c2", "r1"], ["res"], name="/res/Add"),
        n("Relu", ["res"], ["r2"], name="/relu2/Relu"),
        n("MaxPool", ["r2"], ["p"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p", "conv3.w", "conv3.b"], ["c3"], name="/conv3/Conv", pads=[1] * 4),
        n("Relu", ["c3"], ["r3"], name="/relu3/Relu"),
        n("GlobalAveragePool", ["r3"], ["gap"], name="/gap/GlobalAveragePool"),
        n("Flatten", ["gap"], ["flat"], name="/flatten/Flatten"),
        n("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="/fc/Gemm", transB=1),
        n("Softmax", ["logits"], ["probs"], name="/softmax/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "quantkit_demo",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with atomic_write(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return path


def demo_data(num: int = 256, seed: int = 0) -> np.ndarray:
    """Smooth synthetic 28x28 images in [0, 1] (blurred noise with bright strokes)."""
    rng = np.random.default_rng(seed)
    x = rng.random((num, 1, 28, 28))
    for _ in range(3):  # cheap blur
        x = (x + np.roll(x, 1, 2) + np.roll(x, 1, 3) + np.roll(x, -1, 2)) / 4
    out: np.ndarray = np.clip((x - 0.45) * 4, 0, 1).astype(np.float32)
    return out


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and the amax of each method."""

    out_dir: Path
    amax: dict[str, dict[str, float]]


def run_demo(out_dir: str | Path, *, samples: int = 256, batch_size: int = 32) -> DemoResult:
    """Build the demo model and data in ``out_dir`` and calibrate with every method."""
    from quantkit.capture import calibrate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_demo_model(out / "demo_cnn.onnx")
    with atomic_write(out / "calib.npy", "wb") as fh:
        np.save(fh, demo_data(samples))
    amax: dict[str, dict[str, float]] = {}
    for method in METHODS:
        res = calibrate(model, str(out / "calib.npy"), method=method, batch_size=batch_size)
        res.scales.write(out / f"{method}.cache", "cache")
        res.scales.write(out / f"{method}.json", "json")
        amax[method] = res.scales.amaxes
    lines = ["tensor," + ",".join(METHODS)]
    for name in amax["entropy"]:
        lines.append(name + "," + ",".join(f"{amax[m][name]:.6g}" for m in METHODS))
    write_text_atomic(out / "amax_by_method.csv", "\n".join(lines) + "\n")
    return DemoResult(out, amax)
