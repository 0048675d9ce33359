"""quantkit's TensorRT latency estimate vs published TensorRT measurements.

README
======

What it does
------------
For every point of ``published.yaml`` (a model, a GPU, a batch/sequence length, and the INT8
and FP16 latencies a source published for TensorRT engines of that model on that GPU):

1. builds the architecture in plain torch with random weights (``models.py``; latency does not
   depend on weight values) and exports it to ONNX, opset 17;
2. makes the INT8 model with quantkit itself: random calibration data (``.npz``), ``minmax``
   calibration (:func:`quantkit.capture.calibrate`), Q/DQ with the rest in FP16
   (:func:`quantkit.qdq.writer.quantize_model` with ``fp16=True``, i.e. ``quantkit quantize
   --method minmax --fp16``), and the FP16 model (precision ``default: fp16``); for BERT the
   packed Q/K/V output and the residual adds get Q/DQ as well, as demoBERT's INT8 engines run
   them in INT8 (``bert_int8.py``);
3. estimates both with :func:`quantkit.latency.estimate_model` on the published GPU at the
   published shape (TensorRT-RTX builds the engine on this CPU and logs its kernels);
4. compares: latency error ``est / published - 1`` of each precision and the error of the
   INT8/FP16 ratio ``(est_int8 / est_fp16) / (pub_int8 / pub_fp16) - 1``.

A side column gives the INT8 estimate "as built" (``EstimateOptions(fuse_epilogues=False,
fold_constant_kernels=False)``): TensorRT-RTX compiles each INT8 conv/GEMM as a kernel writing
FP32 plus a separate epilogue kernel, and dequantizes some INT8 weights at run time, which the
estimator folds by default as TensorRT does both at build time; the column shows what that
folding changes against the published numbers.

Published figures are converted to milliseconds per batch: ``latency_ms`` as is,
``ms_per_image`` (a per-image time of a batch-``batch`` run) times ``batch``, ``throughput``
(images/s) as ``batch / throughput * 1000``.

The points are split in two halves before anything is estimated: in file order the 1st, 3rd,
5th ... point is half A, the 2nd, 4th ... half B. Any constant of the estimator may be fitted on
half A only; half B is the held-out check. The report gives both halves separately, with the
median and the worst case of each error, and (as a recommendation only, nothing is changed)
the single latency multiplier that would centre half A and what it does to half B.

Run
---
::

    python benchmarks/latency/validate.py                  # every point (~10 min on 2 cores)
    python benchmarks/latency/validate.py --points bert-base-l4-s128-b8,resnet50-l4-b1
    python benchmarks/latency/validate.py --list           # the points and their halves

Outputs: a Markdown report on stdout and in ``benchmarks/_work/latency/validation.md``, the raw
numbers (every estimate's per-precision split and method) in ``validation.json``. Exported,
calibrated and quantized models are cached in ``benchmarks/_work/latency/`` (git-ignored) under
names that carry a fingerprint of the model definition and of quantkit's Q/DQ writer, so a
second run only re-estimates.

Every latency in the report is labelled: ``published`` (the source's TensorRT measurement on
the named GPU) or ``estimated`` (quantkit's latency model for that GPU). Nothing here runs on a
GPU and no CPU timing is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_CACHE = ROOT / "benchmarks" / "_work" / "latency"
PUBLISHED = HERE / "published.yaml"
#: calibration: random samples per model (scales do not change the engine's kernels)
CALIB_SAMPLES = 4
CALIB_SEQ = 128

logger = logging.getLogger("validate")


@dataclass(frozen=True)
class Point:
    """One published INT8/FP16 pair (see the header of published.yaml)."""

    id: str
    source: str
    where: str
    model: str
    gpu: str
    gpu_published: str
    batch: int
    metric: str
    int8: float
    fp16: float
    seq: int | None = None
    note: str = ""
    half: str = ""

    def published_ms(self, precision: str) -> float:
        """The published figure as milliseconds per batch."""
        value = float(getattr(self, precision))
        if self.metric == "latency_ms":
            return value
        if self.metric == "ms_per_image":
            return value * self.batch
        if self.metric == "throughput":
            return self.batch / value * 1000.0
        raise ValueError(f"point {self.id}: unknown metric {self.metric!r}")


def load_points(path: Path = PUBLISHED) -> tuple[list[Point], dict[str, Any]]:
    """The points of ``published.yaml`` with their half (A/B by position) and the sources."""
    doc = yaml.safe_load(path.read_text())
    points = [Point(**{**p, "half": "A" if i % 2 == 0 else "B"})
              for i, p in enumerate(doc["points"])]
    return points, doc["sources"]


@dataclass
class Result:
    """Estimated vs published for one point."""

    point: Point
    est_ms: dict[str, float] = field(default_factory=dict)
    by_precision: dict[str, dict[str, float]] = field(default_factory=dict)
    method: str = ""
    error: str = ""
    #: INT8 estimated from the kernel list exactly as built, without the estimator's folding
    #: of INT8 epilogue and weight kernels (``EstimateOptions(fuse_epilogues=False,
    #: fold_constant_kernels=False)``; None: not computed)
    asbuilt_int8_ms: float | None = None

    @property
    def ok(self) -> bool:
        return not self.error and set(self.est_ms) == {"int8", "fp16"}

    def latency_error(self, precision: str) -> float:
        return self.est_ms[precision] / self.point.published_ms(precision) - 1.0

    @property
    def pub_ratio(self) -> float:
        return self.point.published_ms("int8") / self.point.published_ms("fp16")

    @property
    def est_ratio(self) -> float:
        return self.est_ms["int8"] / self.est_ms["fp16"]

    @property
    def ratio_error(self) -> float:
        return self.est_ratio / self.pub_ratio - 1.0

    @property
    def asbuilt_ratio_error(self) -> float | None:
        """Ratio error with the as-built INT8 estimate (FP16 unchanged: nothing to fold)."""
        if self.asbuilt_int8_ms is None or not self.ok:
            return None
        return (self.asbuilt_int8_ms / self.est_ms["fp16"]) / self.pub_ratio - 1.0

    @property
    def asbuilt_latency_error(self) -> float | None:
        if self.asbuilt_int8_ms is None:
            return None
        return self.asbuilt_int8_ms / self.point.published_ms("int8") - 1.0


# --------------------------------------------------------------------------- models


def _writer_fingerprint(name: str = "") -> str:
    """Hash of quantkit's Q/DQ writer sources (and, for BERT, ``bert_int8.py``)."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "quantkit" / "qdq").glob("*.py")):
        h.update(path.read_bytes())
    if name.startswith("bert"):
        h.update((HERE / "bert_int8.py").read_bytes())
    return h.hexdigest()[:8]


def calibration_npz(name: str, spec: Any, cache: Path) -> Path:
    """Random calibration samples for ``name`` (ints in each integer input's range)."""
    path = cache / f"{name}-calib.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    arrays = {}
    for inp, (key, shape) in zip(spec.inputs, spec.shapes(CALIB_SAMPLES, CALIB_SEQ).items(),
                                 strict=True):
        arrays[key] = (rng.integers(0, inp.high, shape) if inp.high
                       else rng.standard_normal(shape).astype(np.float32))
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def prepare_model(name: str, cache: Path) -> dict[str, Path]:
    """FP32 export, INT8 (Q/DQ + FP16 rest) and FP16 versions of model ``name``."""
    import models

    from quantkit.capture import calibrate
    from quantkit.model import load_model, save_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model

    fp32, spec = models.export(name, cache)
    stem = f"{fp32.stem}-q{_writer_fingerprint(name)}"
    out = {"fp32": fp32, "int8": cache / f"{stem}-int8.onnx",
           "fp16": cache / f"{stem}-fp16.onnx"}
    keep = {path.name for path in out.values()}
    for old in cache.glob(f"{name}-*.onnx*"):  # exports of older definitions / writers
        if old.name not in keep and old.name.removesuffix(".data") not in keep:
            old.unlink()
    if out["int8"].exists() and out["fp16"].exists():
        return out
    start = time.perf_counter()
    npz = calibration_npz(name, spec, cache)
    scales = calibrate(str(fp32), str(npz), method="minmax", batch_size=2).scales
    onnx_model = load_model(fp32)
    int8 = quantize_model(onnx_model, scales, PrecisionConfig(), fp16=True,
                          source=str(fp32)).model
    if name.startswith("bert"):  # as demoBERT's INT8 engines: packed QKV, residuals in INT8
        from bert_int8 import quantize_packed_qkv, quantize_residual_adds

        logger.info("%s: Q/DQ on %d packed QKV outputs and %d residual adds", name,
                    quantize_packed_qkv(int8, scales), quantize_residual_adds(int8, scales))
    save_model(int8, out["int8"])
    save_model(quantize_model(onnx_model, None,
                              PrecisionConfig(default="fp16", default_float="fp16"),
                              source=str(fp32)).model, out["fp16"])
    logger.info("%s: calibrated and quantized in %.1f s", name, time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- estimates

def estimate_point(point: Point, files: dict[str, Path], as_built: bool = True) -> Result:
    """Estimate the INT8 and FP16 engines of ``point`` at its GPU and shape."""
    import models

    from quantkit.latency import estimate_model

    _, spec = models.build(point.model)
    shapes = spec.shapes(point.batch, point.seq)
    res = Result(point)
    for precision in ("int8", "fp16"):
        start = time.perf_counter()
        try:
            est = estimate_model(files[precision], point.gpu, shapes=shapes)
        except Exception as err:  # one failing build must not lose the other points
            res.error = f"{precision}: {type(err).__name__}: {err}"
            logger.warning("%s %s: %s", point.id, precision, res.error)
            return res
        res.est_ms[precision] = est.latency_ms
        res.by_precision[precision] = dict(est.by_precision)
        res.method = est.method
        logger.info("%s %s: estimated %.3f ms (%s) in %.1f s", point.id, precision,
                    est.latency_ms, est.label, time.perf_counter() - start)
    if as_built:  # how much the estimator's INT8 epilogue folding changes the estimate
        from quantkit.latency import EstimateOptions, estimate_model

        try:
            res.asbuilt_int8_ms = estimate_model(
                files["int8"], point.gpu, shapes=shapes,
                options=EstimateOptions(fuse_epilogues=False,
                                        fold_constant_kernels=False)).latency_ms
        except Exception as err:  # a side figure: the main estimate stands without it
            logger.warning("%s: as-built INT8 estimate failed: %s", point.id, err)
    return res


# --------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{x * 100:+.0f}%"


def summary(results: list[Result], *, as_built: bool = False) -> dict[str, Any]:
    """Median / worst absolute latency and ratio errors of ``results`` (the ok ones).

    ``as_built``: use the as-built INT8 estimate (points without one are left out).
    """
    ok = [r for r in results if r.ok and (not as_built or r.asbuilt_int8_ms is not None)]
    if not ok:
        return {"points": 0}
    if as_built:
        lat = [(abs(e), f"{r.point.id} {p}") for r in ok for p, e in
               (("int8", r.asbuilt_latency_error), ("fp16", r.latency_error("fp16")))
               if e is not None]
        ratio = [(abs(r.asbuilt_ratio_error or 0.0), r.point.id) for r in ok]
        signed = [e for r in ok for e in (r.asbuilt_latency_error, r.latency_error("fp16"))
                  if e is not None]
        return {"points": len(ok),
                "median_abs_latency_error": statistics.median(e for e, _ in lat),
                "worst_abs_latency_error": max(lat),
                "median_abs_ratio_error": statistics.median(e for e, _ in ratio),
                "worst_abs_ratio_error": max(ratio),
                "median_signed_latency_error": statistics.median(signed)}
    lat = [(abs(r.latency_error(p)), f"{r.point.id} {p}") for r in ok for p in ("int8", "fp16")]
    ratio = [(abs(r.ratio_error), r.point.id) for r in ok]
    return {
        "points": len(ok),
        "median_abs_latency_error": statistics.median(e for e, _ in lat),
        "worst_abs_latency_error": max(lat),
        "median_abs_ratio_error": statistics.median(e for e, _ in ratio),
        "worst_abs_ratio_error": max(ratio),
        "median_signed_latency_error": statistics.median(
            r.latency_error(p) for r in ok for p in ("int8", "fp16")),
    }


def scale_fit(results: list[Result]) -> dict[str, Any]:
    """The one latency multiplier that centres half A (median log ratio) and its effect on B.

    A recommendation for whoever owns the estimator's constants; the estimator is unchanged.
    """
    a = [r for r in results if r.ok and r.point.half == "A"]
    if not a:
        return {}
    k = float(np.exp(statistics.median(
        np.log(r.point.published_ms(p) / r.est_ms[p]) for r in a for p in ("int8", "fp16"))))

    def med(half: str, factor: float) -> float | None:
        errs = [abs(r.est_ms[p] * factor / r.point.published_ms(p) - 1)
                for r in results if r.ok and r.point.half == half for p in ("int8", "fp16")]
        return statistics.median(errs) if errs else None

    return {"multiplier": k, "A_before": med("A", 1.0), "A_after": med("A", k),
            "B_before": med("B", 1.0), "B_after": med("B", k)}


def _summary_lines(title: str, s: dict[str, Any]) -> list[str]:
    if not s.get("points"):
        return [f"- **{title}**: no estimated points"]
    return [f"- **{title}** ({s['points']} points): median |latency error| "
            f"{s['median_abs_latency_error'] * 100:.0f}% (worst "
            f"{s['worst_abs_latency_error'][0] * 100:.0f}%, {s['worst_abs_latency_error'][1]}); "
            f"median |INT8/FP16 ratio error| {s['median_abs_ratio_error'] * 100:.0f}% (worst "
            f"{s['worst_abs_ratio_error'][0] * 100:.0f}%, {s['worst_abs_ratio_error'][1]}); "
            f"median signed latency error {_pct(s['median_signed_latency_error'])}"]


def environment() -> dict[str, str]:
    """Machine and package versions for the report."""
    from importlib import metadata

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": str(os.cpu_count())}
    for pkg in ("quantkit", "tensorrt-rtx-cu13-bindings", "onnx", "onnxruntime", "torch"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = "not installed"
    env["quantkit commit"] = _git_state()
    return env


def _git_state() -> str:
    """The checkout's commit, and whether the estimator's code differs from it."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "quantkit/latency", "quantkit/backends")
    return head + (" with uncommitted changes in quantkit/latency or quantkit/backends"
                   if dirty else "")


def render(results: list[Result], sources: dict[str, Any], command: str) -> str:
    """The Markdown report."""
    lines = ["| half | point | GPU | batch | seq | published INT8 / FP16 ms | estimated INT8 / "
             "FP16 ms | INT8 err | FP16 err | ratio pub / est | ratio err | INT8 as built ms "
             "(ratio err) | source |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r.point
        head = (f"| {p.half} | {p.id} | {p.gpu} | {p.batch} | {p.seq or ''} | "
                f"{p.published_ms('int8'):.3g} / {p.published_ms('fp16'):.3g} | ")
        if not r.ok:
            lines.append(head + f"failed: {r.error[:80]} | | | | | | {p.source} |")
            continue
        asbuilt = (f"{r.asbuilt_int8_ms:.3g} ({_pct(r.asbuilt_ratio_error or 0.0)})"
                   if r.asbuilt_int8_ms is not None else "n/a")
        lines.append(head + f"{r.est_ms['int8']:.3g} / {r.est_ms['fp16']:.3g} | "
                     f"{_pct(r.latency_error('int8'))} | {_pct(r.latency_error('fp16'))} | "
                     f"{r.pub_ratio:.2f} / {r.est_ratio:.2f} | {_pct(r.ratio_error)} | "
                     f"{asbuilt} | {p.source} |")
    out = ["## TensorRT latency estimate vs published", "",
           "Published: the source's TensorRT measurement on the named GPU (ms per batch). "
           "Estimated: quantkit's latency model for that GPU, from the TensorRT-RTX kernel list "
           "of quantkit's own INT8 (Q/DQ, rest FP16; BERT's packed QKV and residuals in INT8 too) "
           "and FP16 models of the same architecture. "
           "Errors are `estimated / published - 1`; the ratio is INT8 / FP16.", "", *lines, ""]
    for half in ("A", "B"):
        out += _summary_lines(f"half {half}" + (" (fit half)" if half == "A" else
                                                " (held out)"),
                              summary([r for r in results if r.point.half == half]))
    out += _summary_lines("all", summary(results))
    out += _summary_lines("BERT points (both halves)",
                          summary([r for r in results if r.point.model.startswith("bert")]))
    out += _summary_lines("CNN points (both halves)",
                          summary([r for r in results if not r.point.model.startswith("bert")]))
    out += ["", "INT8 as built (`EstimateOptions(fuse_epilogues=False, fold_constant_kernels="
            "False)`: TensorRT-RTX's separate INT8 epilogue kernels and run-time weight kernels "
            "timed as they are, instead of folded as TensorRT does); FP16 unchanged:", ""]
    for half in ("A", "B"):
        out += _summary_lines(f"as built, half {half}",
                              summary([r for r in results if r.point.half == half],
                                      as_built=True))
    fit = scale_fit(results)
    if fit:
        b = (f"{fit['B_before'] * 100:.0f}% -> {fit['B_after'] * 100:.0f}%"
             if fit["B_before"] is not None else "no half-B points")
        out += ["", f"Recommendation only (not applied): one latency multiplier fitted on half A "
                f"(median log published/estimated) is x{fit['multiplier']:.2f}; it moves half "
                f"A's median |latency error| {fit['A_before'] * 100:.0f}% -> "
                f"{fit['A_after'] * 100:.0f}% and half B's {b}. It leaves every INT8/FP16 "
                "ratio unchanged."]
    failed = [r for r in results if not r.ok]
    if failed:
        out += ["", f"{len(failed)} point(s) failed: "
                + "; ".join(f"{r.point.id}: {r.error}" for r in failed)]
    out += ["", "Sources:", ""]
    out += [f"- `{key}`: {src['title']}, TensorRT {src['tensorrt']}. {src['url']}"
            for key, src in sources.items()]
    env = environment()
    out += ["", f"Command: `{command}`. Machine: {env.pop('cpus')} CPU cores, "
            f"{env.pop('platform')}, no GPU. Versions: "
            + ", ".join(f"{k} {v}" for k, v in env.items()) + "."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", help="comma-separated point ids (default: all)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="folder for models and the report (git-ignored by default)")
    parser.add_argument("--list", action="store_true", help="list the points and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sys.path.insert(0, str(HERE))
    points, sources = load_points()
    if args.points:
        wanted = set(args.points.split(","))
        unknown = wanted - {p.id for p in points}
        if unknown:
            parser.error(f"unknown point(s) {', '.join(sorted(unknown))}; see --list")
        points = [p for p in points if p.id in wanted]
    if args.list:
        for p in points:
            print(f"{p.half} {p.id:32} {p.model:11} {p.gpu:17} batch {p.batch} seq {p.seq}")
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    results = []
    prepared: dict[str, dict[str, Path]] = {}
    for p in points:
        if p.model not in prepared:
            prepared[p.model] = prepare_model(p.model, args.cache)
        results.append(estimate_point(p, prepared[p.model]))
    command = "python benchmarks/latency/validate.py" + (f" --points {args.points}"
                                                          if args.points else "")
    report = render(results, sources, command)
    from quantkit._io import write_text_atomic

    write_text_atomic(args.cache / "validation.md", report)
    raw = {"environment": environment(), "halves_rule": "file order: 1st, 3rd, ... -> A",
           "summary": {h: summary([r for r in results if r.point.half == h]) for h in "AB"},
           "summary_int8_as_built": {h: summary([r for r in results if r.point.half == h],
                                                as_built=True) for h in "AB"},
           "scale_fit": scale_fit(results),
           "results": [{"point": asdict(r.point), "published_ms": {
               q: r.point.published_ms(q) for q in ("int8", "fp16")}, "estimated_ms": r.est_ms,
               "by_precision": r.by_precision, "method": r.method, "error": r.error,
               "int8_as_built_ms": r.asbuilt_int8_ms}
               for r in results]}
    write_text_atomic(args.cache / "validation.json", json.dumps(raw, indent=2, default=str))
    print(report)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
