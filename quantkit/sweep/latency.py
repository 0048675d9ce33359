"""Latency of a sweep config, from every source available, and the primary one for the report.

Three sources, best first (:data:`quantkit.evaluate.latency.SOURCES`):

* ``measured``: the built TensorRT / TensorRT-RTX engine timed on a GPU with CUDA events
  (only where a GPU and the backend are present; :func:`quantkit.backends.runner.measure_engine`);
* ``estimated``: the latency model of :mod:`quantkit.latency` for a named GPU, from the
  kernels TensorRT-RTX compiles for the config (recipe ``latency.estimate_gpus``);
* ``cpu-fake-quant`` / ``cpu``: ONNX Runtime on this machine's CPU. A Q/DQ model runs there as
  fake quantisation in float: right for accuracy, meaningless as a TensorRT speed.

Every config is timed on the CPU (columns ``cpu_latency_ms_*``); the columns ``latency_ms_p50``,
``latency_ms_p99`` and ``throughput`` hold the best source available, named by
``latency_source`` and ``latency_target``. All sources time the same feed: the first
evaluation batch cut to ``latency.batch_size`` samples (``latency_batch``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantkit._io import write_text_atomic
from quantkit.data import InputSpec, static_batch_chunks
from quantkit.errors import InputError, QuantkitError

logger = logging.getLogger(__name__)

#: latency columns of results.csv, besides the contract's (in this order, after them)
LATENCY_COLUMNS = ["latency_batch", "latency_repeats", "latency_ms_p50_min",
                   "latency_ms_p50_max", "cpu_latency_ms_p50_min", "cpu_latency_ms_p50_max"]


def estimate_column(gpu: str) -> str:
    """results.csv column of the estimated latency on ``gpu``: ``est_ms_H100-SXM``."""
    return "est_ms_" + re.sub(r"[^A-Za-z0-9._-]+", "-", gpu)


def check_gpus(names: Sequence[str], where: str = "latency.estimate_gpus") -> list[str]:
    """Validate GPU names against the latency model's table; return their canonical names.

    Raises:
        InputError: a name the table does not know (the message names ``where`` and lists the
            known GPUs), or :mod:`quantkit.latency` is not available.
    """
    try:
        from quantkit.latency import get_gpu
    except ImportError as err:  # pragma: no cover - the latency model ships with quantkit
        raise InputError(f"{where}: the latency model (quantkit.latency) is not available in "
                         f"this installation ({err}); remove the key.") from err
    out = []
    for name in names:
        try:
            gpu = get_gpu(name)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        out.append(str(getattr(gpu, "name", name)))
    return out


def feed_of(batches: Sequence[Mapping[str, np.ndarray]], batch_size: int | None,
            specs: Sequence[InputSpec] | None = None) -> dict[str, np.ndarray]:
    """The timing feed: the first evaluation batch, cut to ``batch_size`` samples.

    With the model's input ``specs`` it is the first chunk as the model takes it
    (:func:`quantkit.data.static_batch_chunks`: a model with a fixed batch size is timed at
    that size).
    """
    batch = dict(batches[0])
    if batch_size:
        batch = {k: v[:batch_size] for k, v in batch.items()}
    return dict(next(static_batch_chunks(batch, specs))) if specs else batch


def cpu_latency(model_file: Path, feed: Mapping[str, np.ndarray], *, samples: int,
                warmup: int, iterations: int, repeats: int, has_qdq: bool) -> dict[str, Any]:
    """ONNX Runtime CPU timing of ``model_file``: ``cpu_*`` columns plus the source name.

    ``samples`` is the number of samples in ``feed`` (:func:`quantkit.data.batch_samples`).
    """
    from quantkit.backends.onnxruntime import OrtRunner
    from quantkit.evaluate.latency import cpu_source, measure

    runner = OrtRunner(model_file)
    desc = runner.describe()
    lat = measure(lambda: runner.infer(feed), batch_size=samples, warmup=warmup,
                  iterations=iterations, repeats=repeats)
    return {"cpu_latency_ms_p50": lat.p50_ms, "cpu_latency_ms_p90": lat.p90_ms,
            "cpu_latency_ms_p99": lat.p99_ms, "cpu_throughput": lat.throughput,
            "cpu_latency_ms_p50_min": lat.p50_min_ms, "cpu_latency_ms_p50_max": lat.p50_max_ms,
            "cpu_source": cpu_source(has_qdq), "cpu_target": str(desc["device"]),
            "latency_batch": lat.batch_size, "latency_repeats": lat.repeats}


def estimate(model_file: Path, gpus: Sequence[str], feed: Mapping[str, np.ndarray],
             folder: Path, samples: int) -> dict[str, Any]:
    """Estimated engine latency of ``model_file`` on each GPU (``est_ms_<gpu>`` columns).

    Writes ``folder/estimate.json`` (one entry per GPU: latency, time by precision, kernels) for
    the report. A GPU whose estimate fails gets an empty column and an ``estimate_error``.
    """
    if not gpus:
        return {}
    from quantkit.backends import get_backend
    from quantkit.latency import estimate_model

    if not get_backend("tensorrt-rtx").available():
        logger.info("no latency estimate: TensorRT-RTX is not installed (quantkit[rtx])")
        return {**{estimate_column(g): None for g in gpus},
                "estimate_error": "TensorRT-RTX is not installed (pip install 'quantkit[rtx]')"}

    shapes = {name: [int(d) for d in arr.shape] for name, arr in feed.items()}
    out: dict[str, Any] = {}
    docs: list[dict[str, Any]] = []
    errors = []
    for gpu in gpus:
        try:
            est = estimate_model(str(model_file), gpu, shapes=shapes)
        except QuantkitError as err:
            errors.append(f"{gpu}: {err}")
            out[estimate_column(gpu)] = None
            continue
        out[estimate_column(gpu)] = float(est.latency_ms)
        doc = dict(est.to_json())
        doc.setdefault("gpu", gpu)
        doc["batch"] = samples
        docs.append(doc)
    if docs:
        write_text_atomic(folder / "estimate.json",
                          json.dumps({"format": "quantkit-estimates/1", "estimates": docs},
                                     indent=1, default=float) + "\n")
    if errors:
        out["estimate_error"] = "; ".join(errors)
        logger.warning("latency estimate failed for %s", "; ".join(errors))
    return out


def measured(engine: Path, feed: Mapping[str, np.ndarray], *, warmup: int, iterations: int,
             repeats: int) -> dict[str, Any]:
    """The engine timed on this machine's GPU (``measured_*`` keys), or ``{}`` without a GPU."""
    from quantkit.backends.runner import measure_engine

    if not engine.exists():
        return {}
    try:
        res = measure_engine(engine, feed, warmup=warmup, iterations=iterations,
                             repeats=repeats)
    except QuantkitError as err:
        logger.warning("%s: could not time the engine on the GPU: %s", engine, err)
        return {"measure_error": str(err)}
    if res is None:
        return {}
    s = res.stats
    return {"measured_ms_p50": s.p50_ms, "measured_ms_p90": s.p90_ms, "measured_ms_p99": s.p99_ms,
            "measured_throughput": s.throughput, "measured_ms_p50_min": s.p50_min_ms,
            "measured_ms_p50_max": s.p50_max_ms, "measured_gpu": res.gpu}


def set_primary(row: dict[str, Any], gpus: Sequence[str]) -> None:
    """Fill the primary latency columns from the best source the row has.

    measured (on the GPU present) > estimated (the first GPU of ``latency.estimate_gpus``) >
    ONNX Runtime on the CPU (``cpu`` or ``cpu-fake-quant``).
    """
    batch = row.get("latency_batch")
    if row.get("measured_ms_p50") is not None:
        row.update({"latency_source": "measured", "latency_target": row["measured_gpu"],
                    "latency_ms_p50": row["measured_ms_p50"],
                    "latency_ms_p90": row["measured_ms_p90"],
                    "latency_ms_p99": row["measured_ms_p99"],
                    "throughput": row["measured_throughput"],
                    "latency_ms_p50_min": row["measured_ms_p50_min"],
                    "latency_ms_p50_max": row["measured_ms_p50_max"]})
        return
    est = row.get(estimate_column(gpus[0])) if gpus else None
    if est is not None:
        # an estimate is one number: no percentiles, no run-to-run spread
        row.update({"latency_source": "estimated", "latency_target": gpus[0],
                    "latency_ms_p50": est, "latency_ms_p90": None, "latency_ms_p99": None,
                    "throughput": (batch or 1) * 1e3 / est if est > 0 else None,
                    "latency_ms_p50_min": est, "latency_ms_p50_max": est})
        return
    if row.get("cpu_latency_ms_p50") is not None:
        row.update({"latency_source": row["cpu_source"], "latency_target": row["cpu_target"],
                    "latency_ms_p50": row["cpu_latency_ms_p50"],
                    "latency_ms_p90": row["cpu_latency_ms_p90"],
                    "latency_ms_p99": row["cpu_latency_ms_p99"],
                    "throughput": row["cpu_throughput"],
                    "latency_ms_p50_min": row["cpu_latency_ms_p50_min"],
                    "latency_ms_p50_max": row["cpu_latency_ms_p50_max"]})


__all__ = ["LATENCY_COLUMNS", "check_gpus", "cpu_latency", "estimate",
           "estimate_column", "feed_of", "measured", "set_primary"]
