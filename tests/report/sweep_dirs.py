"""Realistic sweep directories written to disk (the `quantkit sweep -o DIR` contract)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

COLUMNS = ["config", "method", "accuracy", "agreement", "sqnr_db", "latency_ms_p50",
           "latency_ms_p99", "throughput", "model_bytes", "backend", "device", "latency_source",
           "latency_target", "cpu_latency_ms_p50", "cpu_latency_ms_p99", "status", "error",
           "metric", "higher_is_better", "latency_ms_p90", "cosine", "int8_layers",
           "fp16_layers", "fp32_layers", "engine_backend", "engine_bytes", "engine_build_s",
           "latency_batch", "latency_repeats", "latency_ms_p50_min", "latency_ms_p50_max",
           "cpu_latency_ms_p50_min", "cpu_latency_ms_p50_max", "sqnr_tensor",
           "calibration_warnings", "est_ms_L4", "est_ms_T4"]
CPU = "CPU: Test CPU (2 cores)"
CLIP_WARNING = ("entropy calibration clipped 2 tensor(s) to under 25% of their range "
                "(/stem/act/Relu_output_0: amax 0.15 = 7% of its range, 29.14% of values "
                "clipped)")

#: (config, method, accuracy, agreement, sqnr, p50, bytes, precision of quantizable layers)
TOP1_ROWS: list[tuple[str, str, float, float | None, float, float, int, str]] = [
    ("fp32", "", 76.13, 100.0, float("inf"), 4.10, 25_500_000, "fp32"),
    ("fp16", "", 76.12, 99.9, 61.2, 2.30, 12_800_000, "fp16"),
    ("int8-entropy", "entropy", 75.61, 97.8, 31.4, 1.60, 6_600_000, "int8"),
    ("int8-minmax", "minmax", 74.20, 95.1, 24.9, 1.61, 6_600_000, "int8"),
    ("int8-percentile", "percentile", 75.90, None, 33.0, 1.62, 6_600_000, "int8"),
    ("mixed-fp16-head", "entropy", 76.00, 99.1, 40.2, 1.90, 7_100_000, "mixed"),
    ("auto", "entropy", 75.95, 98.9, 38.5, 1.75, 6_900_000, "mixed"),
]
FAILED_ERROR = ("calibration produced no finite range for tensor /stem/conv/Conv_output_0; see "
                "https://example.invalid/docs and pass --allow-nonfinite")


def layer_names(n: int) -> list[tuple[str, str]]:
    """n realistic node names (stage/block/conv), with a long one, ending in a classifier head."""
    out = [("/stem/conv/Conv", "Conv"), ("/stem/act/Relu", "Relu")]
    i = 0
    while len(out) < n - 3:
        stage, block = divmod(i, 4)
        base = f"/backbone/stage{stage + 1}/block{block}"
        out.append((f"{base}/conv_pw/Conv", "Conv"))
        out.append((f"{base}/act/Relu", "Relu"))
        i += 1
    out[len(out) // 2] = ("/backbone/stage2/block3/squeeze_excitation/reduce_expand/conv_reduce/"
                          "Conv", "Conv")
    out = out[: n - 3]
    out += [("/head/pool/GlobalAveragePool", "GlobalAveragePool"), ("/head/fc/Gemm", "Gemm"),
            ("/head/softmax/Softmax", "Softmax")]
    return out


def _plan(layers: list[tuple[str, str]], kind: str) -> dict[str, Any]:
    default_float = "fp16" if kind in ("fp16", "mixed") else "fp32"
    nodes = {}
    for name, op in layers:
        quantizable = op in ("Conv", "Gemm", "MatMul", "GlobalAveragePool")
        if not quantizable:
            prec, reason = default_float, "default_float (not quantizable)"
        elif kind == "mixed" and name.startswith("/head"):
            prec, reason = "fp16", "override 1: regex ^/head/"
        elif kind == "mixed" and name == "/stem/conv/Conv":
            prec, reason = "fp32", "override 2: name /stem/conv/Conv"
        else:
            prec, reason = ("int8" if kind in ("int8", "mixed") else kind), "default"
        nodes[name] = {"op_type": op, "precision": prec, "reason": reason}
    return {"format": "quantkit-plan/1", "default": "int8" if kind != "fp16" else "fp16",
            "default_float": default_float, "nodes": nodes}


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _cpu_p50(p50: float, kind: str) -> float:
    """A CPU timing unlike the GPU one: fake-quant INT8 is slower than FP32 there."""
    return round(p50 * (9.0 if kind in ("int8", "mixed") else 5.0), 3)


def make_sweep(root: Path, *, n_layers: int = 24, metric: str = "top1",
               optional: bool = True, failed: bool = True, source: str = "estimated") -> Path:
    """Write a sweep directory and return it.

    Configs: fp32, fp16, three INT8 methods (percentile has a NaN agreement), a mixed config,
    auto, plus (``failed``) one config that failed and one whose engine build failed.
    ``metric="cer"`` writes a lower-is-better metric (values mirrored: 100 - top1 / 4).
    ``optional`` adds engine.json, sensitivity.csv, autotune.json and estimate.json files.
    ``source="estimated"``: the primary latency is an estimate for an L4 (T4 in an extra
    column), the CPU columns hold other numbers; ``source="cpu"``: ONNX Runtime on the CPU is
    all there is (p50 as the table says, a spread of ±2 %).
    """
    root.mkdir(parents=True, exist_ok=True)
    layers = layer_names(n_layers)
    lower = metric == "cer"
    rows: list[dict[str, Any]] = []
    for config, method, acc, agree, sqnr, p50, nbytes, kind in TOP1_ROWS:
        plan = _plan(layers, kind) if config != "fp32" else None
        counts = {"int8": 0, "fp16": 0, "fp32": len(layers)}
        if plan is not None:
            counts = {p: sum(v["precision"] == p for v in plan["nodes"].values())
                      for p in ("int8", "fp16", "fp32")}
        row = {"config": config, "method": method,
               "accuracy": round((100 - acc) / 4, 3) if lower else acc,
               "agreement": agree, "sqnr_db": sqnr if sqnr != float("inf") else "inf",
               "latency_ms_p50": p50, "latency_ms_p90": round(p50 * 1.08, 3),
               "latency_ms_p99": round(p50 * 1.25, 3), "throughput": round(32_000 / p50, 1),
               "model_bytes": nbytes, "backend": "onnxruntime", "device": CPU,
               "latency_batch": 32, "latency_repeats": 5,
               "latency_ms_p50_min": round(p50 * 0.98, 4), "latency_ms_p50_max":
               round(p50 * 1.02, 4), "sqnr_tensor": "/head/fc/Gemm_output_0",
               "calibration_warnings": CLIP_WARNING if method == "entropy" else "",
               "status": "ok", "error": "", "metric": metric,
               "higher_is_better": "false" if lower else "true",
               "cosine": 1.0 if config == "fp32" else round(1 - (100 - (agree or 90)) / 900, 5),
               "int8_layers": counts["int8"], "fp16_layers": counts["fp16"],
               "fp32_layers": counts["fp32"], "engine_backend": "tensorrt-rtx not installed",
               "engine_bytes": None, "engine_build_s": None}
        cpu_kind = "cpu-fake-quant" if kind in ("int8", "mixed") else "cpu"
        if source == "estimated":
            cpu = _cpu_p50(p50, kind)
            row.update({"latency_source": "estimated", "latency_target": "L4",
                        "latency_ms_p90": None, "latency_ms_p99": None,
                        "latency_ms_p50_min": p50, "latency_ms_p50_max": p50,
                        "cpu_latency_ms_p50": cpu, "cpu_latency_ms_p99": round(cpu * 3, 3),
                        "cpu_latency_ms_p50_min": round(cpu * 0.95, 3),
                        "cpu_latency_ms_p50_max": round(cpu * 1.05, 3),
                        "est_ms_L4": p50, "est_ms_T4": round(p50 * 1.9, 3)})
        else:
            row.update({"latency_source": cpu_kind, "latency_target": CPU,
                        "cpu_latency_ms_p50": p50, "cpu_latency_ms_p99": row["latency_ms_p99"],
                        "cpu_latency_ms_p50_min": row["latency_ms_p50_min"],
                        "cpu_latency_ms_p50_max": row["latency_ms_p50_max"]})
        if optional and source == "estimated" and config in ("fp32", "int8-entropy"):
            _estimate_file(root / "configs" / config, p50, kind)
        if optional and config == "int8-entropy":
            row.update({"engine_backend": "tensorrt-rtx 1.7.0", "engine_bytes": 7_400_000,
                        "engine_build_s": 12.4})
        rows.append(row)
        folder = root / "configs" / config
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(b"not needed by the report")
        doc = dict(row)
        if plan is not None:
            (folder / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")
        if method:
            doc["calibration"] = {"method": method, "num_samples": 512,
                                  "warnings": [CLIP_WARNING] if method == "entropy" else [],
                                  "settings": {"percentile": 99.99} if method == "percentile"
                                  else {"num_bins": 2048} if method == "entropy" else {}}
        (folder / "result.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    if failed:
        for config, status, error in (("int8-mse", "failed", FAILED_ERROR),
                                      ("int8-rtx-opt5", "build_failed",
                                       "TensorRT-RTX parser: unsupported node /head/fc/Gemm "
                                       "(INT8 weights without DequantizeLinear)")):
            row = dict.fromkeys(COLUMNS)
            row.update({"config": config, "method": "mse", "status": status, "error": error,
                        "metric": metric, "higher_is_better": "false" if lower else "true"})
            rows.append(row)
            (root / "configs" / config).mkdir(parents=True, exist_ok=True)
    _write_csv(root / "results.csv", rows, COLUMNS)
    env = {"quantkit": "0.1.0", "onnx": "1.17.0", "onnxruntime": "1.20.1", "numpy": "2.1.3",
           "python": "3.11.2", "os": "Linux-6.1-x86_64", "device": "cpu",
           "backend": "onnxruntime", "tensorrt_rtx": "1.7.0" if optional else None,
           "recipe": "recipes/resnet_tiny.yaml", "model": "models/resnet_tiny.onnx",
           "created_utc": "2025-05-04T10:20:30+00:00"}
    (root / "environment.json").write_text(json.dumps(env, indent=2), encoding="utf-8")
    (root / "recipe.yaml").write_text(
        "model: models/resnet_tiny.onnx  # from https://example.invalid/model\n"
        "configs:\n  - name: fp32\n  - name: int8-entropy\n    method: entropy\n",
        encoding="utf-8")
    if optional:
        _optional(root, layers, lower)
    return root


def _optional(root: Path, layers: list[tuple[str, str]], lower: bool) -> None:
    engine = {"format": "quantkit-engine/1", "backend": "tensorrt-rtx", "backend_version": "1.7.0",
              "layers": [], "disagreements": []}
    for name, op in layers:
        ltype = {"Conv": "CONVOLUTION", "Gemm": "MATRIX_MULTIPLY", "Relu": "ACTIVATION",
                 "Softmax": "SOFTMAX", "GlobalAveragePool": "REDUCE"}[op]
        prec = "int8" if op in ("Conv", "Gemm") else "fp32"
        entry = {"name": name, "type": ltype, "precision": prec, "output_dtypes": ["fp32"],
                 "onnx_node": name, "plan_precision": prec}
        if op == "Conv":
            entry["engine_precision"] = "int8"
        engine["layers"].append(entry)
    engine["layers"][-2]["precision"] = "fp32"  # the Gemm did not get INT8
    engine["layers"][-1]["engine_precision"] = "fp16"
    engine["disagreements"] = [
        {"layer": "/head/fc/Gemm", "kind": "plan", "plan": "int8", "network": "fp32",
         "message": "/head/fc/Gemm: the precision plan says int8, the parsed network has fp32"},
        {"layer": "/head/softmax/Softmax", "kind": "engine", "network": "fp32",
         "engine": "fp16", "kernel": "softmax_half_0",
         "message": "/head/softmax/Softmax: fp32 in the parsed network, but the engine runs "
                    "it in fp16 (kernel softmax_half_0)"}]
    (root / "configs" / "int8-entropy" / "engine.json").write_text(json.dumps(engine, indent=1),
                                                                   encoding="utf-8")
    sens_rows = []
    quant = [(n, op) for n, op in layers if op in ("Conv", "Gemm")]
    for i, (name, op) in enumerate(quant):
        drop = 2.5 / (1 + i) + 0.01 * (i % 3)
        base = 76.13
        sens_rows.append({
            "layer": name, "op_type": op, "sqnr_int8_only": round(18 + 3 * i, 2),
            "metric_int8_only": round((100 - (base - drop)) / 4 if lower else base - drop, 3),
            "sqnr_fp16_only": round(30 + 0.5 * i, 2),
            "metric_fp16_only": round((100 - 75.6) / 4 if lower else 75.6 + drop / 5, 3),
            "rank": i + 1})
    sens_rows.reverse()  # the report sorts by rank
    _write_csv(root / "sensitivity.csv", sens_rows, list(sens_rows[0]))
    autotune = {"target_drop": 0.5, "reached": True, "fp32_accuracy": 76.13,
                "int8_accuracy": 75.61, "final_accuracy": 75.95, "final_agreement": 98.9,
                "kept": [quant[0][0], quant[1][0]], "kept_precision": "fp16",
                "evaluations": 4,
                "steps": [{"layer": quant[0][0], "accuracy": 75.8, "kept": True},
                          {"layer": quant[1][0], "accuracy": 75.95, "kept": True}]}
    (root / "autotune.json").write_text(json.dumps(autotune, indent=2), encoding="utf-8")


def _estimate_file(folder: Path, p50: float, kind: str) -> None:
    """estimate.json as the sweep writes it (Estimate.to_json() per GPU): 3 kernels."""
    folder.mkdir(parents=True, exist_ok=True)
    prec = "int8" if kind == "int8" else "fp32"
    kernels = [{"name": "/stem/conv/Conv_myl0_1", "type": "correlation", "precision": prec,
                "ms": round(p50 * 0.5, 4), "onnx_layers": ["/stem/conv/Conv"]},
               {"name": "__myl_CastMulAdd_myl0_2", "type": "kgen", "precision": "fp32",
                "ms": round(p50 * 0.3, 4), "onnx_layers": ["/stem/act/Relu"]},
               {"name": "/head/fc/Gemm_myl0_3", "type": "gemm", "precision": "fp16",
                "ms": round(p50 * 0.2, 4), "onnx_layers": ["/head/fc/Gemm"]}]
    by: dict[str, float] = {}
    for k in kernels:
        by[k["precision"]] = by.get(k["precision"], 0.0) + k["ms"]
    docs = [{"gpu": gpu, "latency_ms": round(p50 * f, 4), "by_precision": {
        k: v * f for k, v in by.items()}, "kernels": kernels, "batch_size": 32,
        "label": f"estimated, {gpu}, batch 32", "source": "estimated"}
        for gpu, f in (("L4", 1.0), ("T4", 1.9))]
    (folder / "estimate.json").write_text(json.dumps({"format": "quantkit-estimates/1",
                                                      "estimates": docs}), encoding="utf-8")
