"""Make ``reports/examples/demo/``: a real, small sweep run with quantkit, and its report.

Runs quantkit end to end on the demo CNN shipped in the package (``quantkit/assets``: a small
MNIST digit classifier, 256 calibration and 500 labelled evaluation digits):

1. calibrates it (entropy, minmax, percentile 99.99) with :func:`quantkit.calibrate`;
2. writes each precision configuration with :func:`quantkit.qdq.writer.quantize_model` (FP32,
   FP16, three INT8 methods, a mixed INT8/FP16 config, a config whose precision override names
   no node and fails the way ``quantkit quantize`` does, and an autotuned config);
3. evaluates each on ONNX Runtime with :func:`quantkit.evaluate.run.evaluate_model` (top-1 on
   the labels, agreement/SQNR against the FP32 model) and times batch-1 latency;
4. measures per-layer sensitivity (only this layer INT8 / only this layer FP16) and runs a
   greedy accuracy-target search over it;
5. writes the sweep directory in the ``quantkit sweep -o DIR`` layout and renders it with
   :func:`quantkit.report.write_report`, then screenshots the page with headless Chromium when
   ``/usr/bin/chromium`` exists.

The demo model ends in a Softmax that saturates to exactly 0 and 1 in float32 on these digits,
which hides every INT8 error from SQNR and cosine; the example therefore drops the Softmax and
compares logits (top-1 is unchanged). No TensorRT engine is built here; the lead's
``quantkit sweep`` regenerates this example with engine builds where ``quantkit[rtx]`` is
installed.

Usage::

    python reports/examples/make_example.py                 # -> reports/examples/demo/
    python reports/examples/make_example.py --keep-sweep /tmp/demo-sweep
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit import InputError, calibrate
from quantkit.backends.onnxruntime import OrtRunner
from quantkit.calibrators.cache import ScaleTable
from quantkit.demo import asset
from quantkit.evaluate.run import evaluate_model
from quantkit.qdq.plan import PrecisionConfig
from quantkit.qdq.writer import quantize_model
from quantkit.report import write_report

HERE = Path(__file__).resolve().parent
COLUMNS = ["config", "method", "accuracy", "agreement", "sqnr_db", "latency_ms_p50",
           "latency_ms_p99", "throughput", "model_bytes", "backend", "device", "status", "error",
           "metric", "higher_is_better", "latency_ms_p90", "cosine", "int8_layers",
           "fp16_layers", "fp32_layers", "engine_backend", "engine_bytes", "engine_build_s"]
TARGET_DROP = 0.5
RECIPE = """\
# The configurations make_example.py runs (the same as the `quantkit demo` recipe, plus one
# config with a misspelt override to show how a failed config is reported).
name: demo-cnn (MNIST digits), logits
model: demo_cnn_logits.onnx
metric: top1
calibration: {method: entropy}
configs:
  - {name: fp32, precision: fp32}
  - {name: fp16, precision: fp16}
  - {name: int8-entropy, precision: int8, method: entropy}
  - {name: int8-minmax, precision: int8, method: minmax}
  - {name: int8-percentile, precision: int8, method: percentile, percentile: 99.99}
  - name: mixed-fp16
    precision:
      default: int8
      default_float: fp16
      overrides:
        - {name: /conv1/Conv, precision: fp16}
  - name: int8-typo
    precision:
      overrides:
        - {name: /backbone/conv1/Conv, precision: fp32}
  - {name: auto, method: entropy, autotune: {max_accuracy_drop: 0.5}}
latency: {iterations: 200, warmup: 20, batch_size: 1}
"""


def prepare(work: Path) -> tuple[Path, Path, Path, np.ndarray]:
    """Write the logits model and the calibration / evaluation arrays into ``work``."""
    model = onnx.load(str(asset("demo_cnn.onnx")))
    graph = model.graph
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if softmax:
        node = softmax[-1]
        out = graph.output[0]
        logits = node.input[0]
        graph.node.remove(node)
        out.name = logits
    path = work / "demo_cnn_logits.onnx"
    onnx.save(model, str(path))
    with np.load(asset("demo_data.npz"), allow_pickle=False) as data:
        cal = data["calibration"].astype(np.float32)[:, None] / 255.0
        ev = data["evaluation"].astype(np.float32)[:, None] / 255.0
        labels = data["evaluation_labels"].astype(np.int64)
    np.save(work / "calibration.npy", cal)
    np.save(work / "evaluation.npy", ev)
    return path, work / "calibration.npy", work / "evaluation.npy", labels


class Runner:
    """Quantize, evaluate and record configs into a sweep directory."""

    def __init__(self, sweep: Path, model: Path, evaluation: Path, labels: np.ndarray,
                 latency_iterations: int) -> None:
        self.sweep = sweep
        self.model_path = model
        self.model = onnx.load(str(model))
        self.evaluation = evaluation
        self.labels = labels
        self.iterations = latency_iterations
        self.sample = {"input": np.load(evaluation)[:1]}
        self.rows: list[dict[str, Any]] = []

    def score(self, path: Path, latency: bool = True) -> dict[str, Any]:
        """Accuracy and agreement on the evaluation set; batch-1 latency."""
        res = evaluate_model(path, str(self.evaluation), labels=self.labels,
                             reference=self.model_path, batch_size=100, latency_iterations=0)
        row = res.as_row()
        if latency and self.iterations:
            lat = OrtRunner(path, threads=1).latency(self.sample, warmup=20,
                                                     iterations=self.iterations)
            row.update({"latency_ms_p50": lat.p50_ms, "latency_ms_p90": lat.p90_ms,
                        "latency_ms_p99": lat.p99_ms, "throughput": lat.throughput})
        return row

    def quantized(self, path: Path, scales: ScaleTable | None,
                  config: PrecisionConfig) -> dict[str, int]:
        """Write the Q/DQ model and its plan; return the plan's precision counts."""
        result = quantize_model(self.model, scales, config, source=str(self.model_path))
        onnx.save(result.model, str(path))
        (path.parent / "plan.json").write_text(json.dumps(result.plan.to_dict(), indent=1)
                                               + "\n", encoding="utf-8")
        return result.plan.counts()

    def run(self, name: str, method: str, scales: ScaleTable | None,
            config: PrecisionConfig | None) -> dict[str, Any]:
        """One config: quantize (unless FP32), evaluate, write result.json, keep the row."""
        folder = self.sweep / "configs" / name
        folder.mkdir(parents=True, exist_ok=True)
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update({"config": name, "method": method, "metric": "top1",
                    "higher_is_better": True, "engine_backend": "tensorrt-rtx not installed"})
        try:
            if config is None:
                shutil.copyfile(self.model_path, folder / "model.onnx")
                counts = {"int8": 0, "fp16": 0, "fp32": len(self.model.graph.node)}
            else:
                counts = self.quantized(folder / "model.onnx", scales, config)
            scored = self.score(folder / "model.onnx")
        except InputError as err:  # recorded like quantkit sweep does, the others go on
            row.update({"status": "failed", "error": str(err)})
            print(f"{name}: failed: {err}", file=sys.stderr)
        else:
            row.update({k: v for k, v in scored.items() if k in COLUMNS and k != "metric"})
            row.update({"status": "ok", "error": "", "int8_layers": counts["int8"],
                        "fp16_layers": counts["fp16"], "fp32_layers": counts["fp32"]})
            print(f"{name}: top1 {row['accuracy']:.2f}, agreement {row['agreement']:.2f}, "
                  f"p50 {row['latency_ms_p50']:.3f} ms", file=sys.stderr)
        doc = dict(row)
        if scales is not None:
            doc["calibration"] = {"method": scales.method, "num_samples": scales.num_samples,
                                  "settings": scales.settings}
        (folder / "result.json").write_text(json.dumps(doc, indent=1, default=float) + "\n",
                                            encoding="utf-8")
        self.rows.append(row)
        return row


def sensitivity(runner: Runner, scales: ScaleTable, work: Path) -> list[dict[str, Any]]:
    """Per quantizable layer: SQNR/top-1 with only it INT8, and with only it left FP16."""
    probe = quantize_model(runner.model, scales, PrecisionConfig(), source="probe")
    layers = [(n.name, n.op_type) for n in probe.plan.nodes.values() if n.precision == "int8"]
    rows = []
    for name, op in layers:
        only_int8 = PrecisionConfig.from_mapping(
            {"default": "fp32", "overrides": [{"name": name, "precision": "int8"}]})
        only_fp16 = PrecisionConfig.from_mapping(
            {"default": "int8", "overrides": [{"name": name, "precision": "fp16"}]})
        scored = []
        for tag, cfg in (("int8", only_int8), ("fp16", only_fp16)):
            path = work / f"sens_{tag}.onnx"
            onnx.save(quantize_model(runner.model, scales, cfg, source="sens").model, str(path))
            scored.append(runner.score(path, latency=False))
        rows.append({"layer": name, "op_type": op, "sqnr_int8_only": scored[0]["sqnr_db"],
                     "metric_int8_only": scored[0]["accuracy"],
                     "sqnr_fp16_only": scored[1]["sqnr_db"],
                     "metric_fp16_only": scored[1]["accuracy"]})
        print(f"sensitivity {name}: sqnr {scored[0]['sqnr_db']:.1f} dB", file=sys.stderr)
    # most sensitive first: largest top-1 loss, then lowest SQNR
    rows.sort(key=lambda r: (r["metric_int8_only"], r["sqnr_int8_only"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def autotune(runner: Runner, scales: ScaleTable, ranked: list[dict[str, Any]],
             fp32_accuracy: float, work: Path) -> tuple[PrecisionConfig, dict[str, Any]]:
    """Keep the most sensitive layers FP16, in rank order, until the drop is within target."""
    kept: list[str] = []
    steps: list[dict[str, Any]] = []
    config = PrecisionConfig()
    accuracy = agreement = float("nan")
    for layer in [None] + [r["layer"] for r in ranked]:
        if layer is not None:
            kept.append(layer)
        config = PrecisionConfig.from_mapping(
            {"default": "int8", "overrides": [{"name": n, "precision": "fp16"} for n in kept]})
        path = work / "autotune.onnx"
        onnx.save(quantize_model(runner.model, scales, config, source="autotune").model,
                  str(path))
        scored = runner.score(path, latency=False)
        accuracy, agreement = scored["accuracy"], scored["agreement"]
        steps.append({"kept_fp16": layer or "(none: all INT8)", "accuracy": accuracy,
                      "agreement": agreement, "sqnr_db": scored["sqnr_db"]})
        if fp32_accuracy - accuracy <= TARGET_DROP:
            break
    doc = {"target_drop": TARGET_DROP, "reached": fp32_accuracy - accuracy <= TARGET_DROP,
           "fp32_accuracy": fp32_accuracy, "int8_accuracy": steps[0]["accuracy"],
           "final_accuracy": accuracy, "final_agreement": agreement, "kept_fp16": kept,
           "default_float": "fp32", "evaluations": len(steps), "steps": steps}
    return config, doc


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """CSV with empty cells for None."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def make_sweep(sweep: Path, work: Path, latency_iterations: int) -> None:
    """Run every config into ``sweep`` (the ``quantkit sweep -o DIR`` layout)."""
    import onnxruntime

    import quantkit

    model, cal_data, ev_data, labels = prepare(work)
    runner = Runner(sweep, model, ev_data, labels, latency_iterations)
    scales = {m: calibrate(model, str(cal_data), method=m, batch_size=64,
                           method_options={"percentile": 99.99} if m == "percentile" else None
                           ).scales
              for m in ("entropy", "minmax", "percentile")}
    fp32 = runner.run("fp32", "", None, None)
    runner.run("fp16", "", None, PrecisionConfig(default="fp16", default_float="fp16"))
    for method in ("entropy", "minmax", "percentile"):
        runner.run(f"int8-{method}", method, scales[method], PrecisionConfig())
    runner.run("mixed-fp16", "entropy", scales["entropy"], PrecisionConfig.from_mapping(
        {"default": "int8", "default_float": "fp16",
         "overrides": [{"name": "/conv1/Conv", "precision": "fp16"}]}))
    runner.run("int8-typo", "entropy", scales["entropy"], PrecisionConfig.from_mapping(
        {"overrides": [{"name": "/backbone/conv1/Conv", "precision": "fp32"}]}))
    ranked = sensitivity(runner, scales["entropy"], work)
    write_csv(sweep / "sensitivity.csv", ranked, list(ranked[0]))
    tuned, doc = autotune(runner, scales["entropy"], ranked, fp32["accuracy"], work)
    (sweep / "autotune.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    runner.run("auto", "entropy", scales["entropy"], tuned)
    write_csv(sweep / "results.csv", runner.rows, COLUMNS)
    env = OrtRunner(model).describe()
    env.update({"quantkit": quantkit.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                "python": platform.python_version(), "os": platform.platform(),
                "tensorrt_rtx": None, "recipe": "recipe.yaml", "model": model.name,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    (sweep / "environment.json").write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    (sweep / "recipe.yaml").write_text(RECIPE, encoding="utf-8")


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 4200) -> bool:
    """Screenshot ``html`` with headless Chromium (no network) into a small palette PNG."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: no screenshot", file=sys.stderr)
        return False
    from PIL import Image

    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={raw}", f"--window-size={width},{height}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        image = Image.open(raw).convert("RGB")
        # drop the blank space below the page
        bbox = Image.eval(image, lambda v: 255 - v).getbbox()
        if bbox is not None:
            image = image.crop((0, 0, width, min(height, bbox[3] + 24)))
        image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "demo",
                        help="where report.html, summary.md, results.csv and report.png go")
    parser.add_argument("--keep-sweep", type=Path, default=None,
                        help="write the sweep directory here (default: a temporary folder)")
    parser.add_argument("--latency-iterations", type=int, default=200)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.keep_sweep or Path(tmp) / "demo-sweep"
        if sweep.exists() and any(sweep.iterdir()):
            parser.error(f"--keep-sweep {sweep}: exists and is not empty; give a new folder")
        sweep.mkdir(parents=True, exist_ok=True)
        work = Path(tmp) / "work"
        work.mkdir()
        make_sweep(sweep, work, args.latency_iterations)
        html = write_report(sweep, args.output / "report.html", args.output / "summary.md")
        shutil.copyfile(sweep / "results.csv", args.output / "results.csv")
    screenshot(html, args.output / "report.png")
    total = sum(p.stat().st_size for p in args.output.iterdir() if p.is_file())
    print(f"wrote {args.output} ({total / 1024:.0f} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
