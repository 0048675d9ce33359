"""``quantkit demo``: the whole pipeline on the model and data shipped in the package.

The package ships a small CNN trained on MNIST digits (``assets/demo_cnn.onnx``: 7 quantizable
layers, a residual Add, a Softmax; trained by ``recipes/demo/train_demo_cnn.py``) and 256
calibration + 500 labelled evaluation digits (``assets/demo_data.npz``). The demo writes them
and a recipe into the output folder, then runs the sweep: calibration (entropy, minmax,
percentile), FP32 / FP16 / INT8 / mixed / autotuned configurations, evaluation on ONNX Runtime
(accuracy, agreement, CPU latency), TensorRT-RTX engine builds and estimated TensorRT latency on
two GPUs when ``quantkit[rtx]`` is installed, ``results.csv`` and ``report.html``. No download.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from quantkit._io import OutputLock, atomic_write, write_text_atomic

RECIPE = """\
# quantkit demo recipe (written by `quantkit demo`; edit and re-run with `quantkit sweep`)
name: demo-cnn (MNIST digits)
model: demo_cnn.onnx
metric: top1
data:
  calibration: {source: data/calibration.npy, batch_size: 64}
  evaluation: {source: data/evaluation.npy, labels: data/evaluation_labels.npy, batch_size: 100}
calibration: {method: entropy}
configs:
  - {name: fp32, precision: fp32}
  - {name: fp16, precision: fp16}
  - {name: int8-entropy, precision: int8, method: entropy}
  - {name: int8-minmax, precision: int8, method: minmax}
  - {name: int8-percentile, precision: int8, method: percentile, percentile: 99.99}
  - name: mixed-fp16
    method: percentile
    percentile: 99.99
    precision:
      default: int8
      default_float: fp16
      overrides:
        - {name: /conv1/Conv, precision: fp16}
        - {op_type: Softmax, precision: fp32}
  - {name: auto, method: entropy, autotune: {max_accuracy_drop: 0.5}}
build: {backend: tensorrt-rtx, shapes: "input:100x1x28x28"}
# latency of a batch of 100 digits: estimated TensorRT latency on a data-centre GPU (the
# report's latency) and an edge GPU, measured where TensorRT and a GPU are present, and
# ONNX Runtime on this CPU (INT8 there is fake quantisation: not a TensorRT speed)
latency: {iterations: 10, warmup: 3, repeats: 3, batch_size: 100,
          estimate_gpus: [H100-SXM, Jetson-Orin-Nano]}
report: {tolerance: 0.5}            # headline: fastest INT8 config within 0.5 top-1 points
"""


def asset(name: str) -> Path:
    """Path of a file shipped in ``quantkit/assets``."""
    return Path(str(resources.files("quantkit") / "assets" / name))


def prepare_demo(out_dir: str | Path) -> Path:
    """Write the demo model, data and recipe into ``out_dir``; return the recipe path."""
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "demo_cnn.onnx", "wb") as fh, \
            open(asset("demo_cnn.onnx"), "rb") as src:
        shutil.copyfileobj(src, fh)
    with np.load(asset("demo_data.npz"), allow_pickle=False) as data:
        arrays = {
            "calibration": data["calibration"].astype(np.float32)[:, None] / 255.0,
            "evaluation": data["evaluation"].astype(np.float32)[:, None] / 255.0,
            "evaluation_labels": data["evaluation_labels"].astype(np.int64),
        }
    for name, arr in arrays.items():
        with atomic_write(out / "data" / f"{name}.npy", "wb") as fh:
            np.save(fh, arr)
    write_text_atomic(out / "recipe.yaml", RECIPE)
    return out / "recipe.yaml"


def run_demo(out_dir: str | Path) -> tuple[Path, object]:
    """Prepare the demo and run its sweep into ``out_dir/results``.

    Returns:
        ``(results folder, SweepResult)``.
    """
    from quantkit.sweep import run_sweep

    with OutputLock(out_dir, "demo output folder"):  # two demos into one folder: refused
        recipe = prepare_demo(out_dir)
        results = Path(out_dir) / "results"
        return results, run_sweep(recipe, results, force=True)
