"""Read a sweep directory (``quantkit sweep -o DIR``) into typed objects and DataFrames.

Layout (docs/cli.md#sweep)::

    DIR/results.csv                  one row per config (required)
    DIR/configs/<config>/plan.json   quantkit-plan/1 precision plan
    DIR/configs/<config>/result.json the row as JSON, plus "calibration"
    DIR/configs/<config>/engine.json engine sidecar (optional)
    DIR/configs/<config>/estimate.json latency estimates per GPU (optional)
    DIR/sensitivity.csv              per-layer sensitivity (optional)
    DIR/autotune.json                accuracy-target search (optional)
    DIR/environment.json             versions, backend, device, recipe, model
    DIR/recipe.yaml                  the recipe

Only ``results.csv`` is required. A missing or malformed required file raises
:class:`~quantkit.errors.InputError` naming the file and the fix; a missing optional file is
``None``; an unreadable optional file is skipped with a note in :attr:`Sweep.warnings`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantkit.errors import InputError
from quantkit.qdq.plan import PrecisionPlan

#: columns every results.csv has (docs/cli.md#sweep)
REQUIRED_COLUMNS = ("config", "method", "accuracy", "agreement", "sqnr_db", "latency_ms_p50",
                    "latency_ms_p99", "throughput", "model_bytes", "backend", "device")
#: columns parsed as numbers (empty cell = NaN); ``est_ms_<gpu>`` columns too
NUMERIC_COLUMNS = ("accuracy", "agreement", "sqnr_db", "cosine", "latency_ms_p50",
                   "latency_ms_p90", "latency_ms_p99", "throughput", "model_bytes",
                   "int8_layers", "fp16_layers", "fp32_layers", "engine_bytes",
                   "engine_build_s", "cpu_latency_ms_p50", "cpu_latency_ms_p99",
                   "latency_batch", "latency_repeats", "latency_ms_p50_min",
                   "latency_ms_p50_max", "cpu_latency_ms_p50_min", "cpu_latency_ms_p50_max",
                   "fp8_layers")
#: text columns added (empty) when an older sweep lacks them
TEXT_COLUMNS = ("status", "error", "metric", "engine_backend", "latency_source",
                "latency_target", "sqnr_tensor", "calibration_warnings", "transforms")
SENSITIVITY_COLUMNS = ("layer", "op_type", "sqnr_int8_only", "metric_int8_only",
                       "sqnr_fp16_only", "metric_fp16_only", "rank")
#: metrics where a smaller value is better, for sweeps without a higher_is_better column
LOWER_IS_BETTER = frozenset({"cer", "wer", "error", "loss", "mse", "mae", "rmse"})
_FAILED = ("failed", "build_failed")
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


@dataclass
class EngineInfo:
    """An engine sidecar (``configs/<config>/engine.json``).

    Attributes:
        backend: ``tensorrt`` or ``tensorrt-rtx``.
        backend_version: version of the builder.
        layers: one row per layer of the parsed network (name, type, precision,
            plan_precision, engine_precision when known).
        disagreements: plan vs parsed network vs engine differences, as the sidecar lists them.
        raw: the whole document.
    """

    backend: str
    backend_version: str
    layers: pd.DataFrame
    disagreements: list[dict[str, Any]]
    raw: dict[str, Any]


@dataclass
class Sweep:
    """Everything a sweep directory holds.

    Attributes:
        directory: the sweep directory.
        results: results.csv, one row per config, with typed columns (numbers as float, ``status``
            "ok" / "failed" / "build_failed", ``higher_is_better`` as bool).
        plans: ``{config: PrecisionPlan}`` from ``configs/<config>/plan.json``.
        config_results: ``{config: result.json document}``.
        engines: ``{config: EngineInfo}`` for configs with an ``engine.json``.
        estimates: ``{config: [estimate per GPU]}`` from ``configs/<config>/estimate.json``
            (:meth:`quantkit.latency.Estimate.to_json` documents).
        sensitivity: sensitivity.csv sorted by rank, or ``None``.
        autotune: autotune.json, or ``None``.
        environment: environment.json (empty when missing).
        recipe: the text of recipe.yaml, or ``None``.
        warnings: notes about files that were missing or skipped.
    """

    directory: Path
    results: pd.DataFrame
    plans: dict[str, PrecisionPlan] = field(default_factory=dict)
    config_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    engines: dict[str, EngineInfo] = field(default_factory=dict)
    estimates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sensitivity: pd.DataFrame | None = None
    autotune: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The task metric's name (``top1``, ``cer``...), ``accuracy`` when unnamed."""
        names = [m for m in self.results["metric"] if isinstance(m, str) and m]
        return names[0] if names else "accuracy"

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric value is better (from the first row)."""
        return bool(self.results["higher_is_better"].iloc[0])

    @property
    def ok(self) -> pd.DataFrame:
        """The rows whose config ran (``status == "ok"``)."""
        return self.results[self.results["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        """The rows whose config failed (quantization, evaluation or engine build)."""
        return self.results[self.results["status"] != "ok"]

    @property
    def model_name(self) -> str:
        """The model's file name from environment.json (``model`` when unknown)."""
        model = self.environment.get("model")
        return Path(str(model)).name if model else "model"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the {what}: {err}. Re-run quantkit sweep to "
                         "write it again.") from err
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: the {what} is not valid JSON (line {err.lineno}, column "
                         f"{err.colno}: {err.msg}). Re-run quantkit sweep or fix the "
                         "file.") from err


def _as_bool(value: Any, path: Path, row: int) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if not text:
        return None
    raise InputError(f"{path}: row {row + 2}, column higher_is_better: {value!r} is not true or "
                     "false. Write true or false (or leave it empty).")


def _results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: no such file. A sweep directory holds results.csv, written by "
                         "'quantkit sweep RECIPE.yaml -o DIR'; point quantkit report at that "
                         "DIR (or run the sweep first).")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty. Re-run quantkit sweep to write it "
                         "again.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"{path}: not a readable CSV file ({' '.join(str(err).split())}). "
                         "Re-run quantkit sweep or fix the file.") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (the header has {', '.join(df.columns)}). "
                         "results.csv needs the columns " + ", ".join(REQUIRED_COLUMNS)
                         + "; re-run quantkit sweep to rewrite it.")
    if df.empty:
        raise InputError(f"{path}: has a header but no rows; the sweep ran no config. "
                         "Re-run quantkit sweep.")
    df["config"] = df["config"].str.strip()
    if (df["config"] == "").any():
        row = int(np.flatnonzero(df["config"] == "")[0])
        raise InputError(f"{path}: row {row + 2} has an empty config name; every row needs "
                         "one.")
    dupes = sorted(set(df["config"][df["config"].duplicated()]))
    if dupes:
        raise InputError(f"{path}: config {', '.join(dupes)} appears more than once; config "
                         "names must be unique.")
    for col in TEXT_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    df["status"] = df["status"].str.strip().str.lower().replace("", "ok")
    for col in (*NUMERIC_COLUMNS, *(c for c in df.columns if c.startswith("est_ms_"))):
        if col not in df.columns:
            df[col] = np.nan
            continue
        text = df[col].astype(str).str.strip()
        values = pd.to_numeric(text.replace({"": "nan", "None": "nan", "none": "nan"}),
                               errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["", "nan", "none", "null", "inf", "-inf"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{path}: row {row + 2}, column {col}: {text.iloc[row]!r} is not a "
                             "number. Write a number or leave the cell empty.")
        df[col] = values.astype(float)
    hib = [_as_bool(v, path, i) for i, v in enumerate(df.get("higher_is_better", [None] * len(df)))]
    df["higher_is_better"] = [
        h if h is not None else str(m).lower() not in LOWER_IS_BETTER
        for h, m in zip(hib, df["metric"], strict=True)]
    _older_latency(df)
    return df.reset_index(drop=True)


def _older_latency(df: pd.DataFrame) -> None:
    """Name the source of latencies a sweep wrote before results.csv named them.

    Such sweeps timed ONNX Runtime only: on its CPU provider that is ``cpu`` (or
    ``cpu-fake-quant`` for a config with INT8 layers), and the CPU columns hold the same numbers.
    """
    old = (df["latency_source"].str.strip() == "") & df["latency_ms_p50"].notna()
    cpu = df["backend"].astype(str).str.strip().str.lower().eq("onnxruntime") & \
        ~df["device"].astype(str).str.upper().str.contains("GPU|CUDA")
    for i in df.index[old & cpu]:
        int8 = config_kind(df.loc[i]) in QUANTIZED_KINDS
        df.loc[i, "latency_source"] = "cpu-fake-quant" if int8 else "cpu"
        df.loc[i, "latency_target"] = str(df.loc[i, "device"])
        for col in ("latency_ms_p50", "latency_ms_p99"):
            if pd.isna(df.loc[i, f"cpu_{col}"]):
                df.loc[i, f"cpu_{col}"] = df.loc[i, col]
    df.loc[old & ~cpu, "latency_source"] = "unknown"


def estimate_columns(df: pd.DataFrame) -> list[str]:
    """The ``est_ms_<gpu>`` columns of a results frame, in file order."""
    return [c for c in df.columns if str(c).startswith("est_ms_")]


def _sensitivity(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError,
            OSError) as err:
        raise InputError(f"{path}: not a readable CSV file ({' '.join(str(err).split())}). "
                         "Re-run quantkit sensitivity or delete the file.") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in SENSITIVITY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)}; sensitivity.csv needs "
                         + ", ".join(SENSITIVITY_COLUMNS)
                         + ". Re-run quantkit sensitivity or delete the file.")
    for col in SENSITIVITY_COLUMNS[2:]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["layer"] = df["layer"].astype(str)
    return df.sort_values(["rank", "layer"], na_position="last").reset_index(drop=True)


def _engine(path: Path) -> EngineInfo:
    doc = _read_json(path, "engine sidecar")
    if not isinstance(doc, dict) or not isinstance(doc.get("layers", []), list):
        raise InputError(f"{path}: not an engine sidecar (expected an object with 'backend' and "
                         "'layers'). Re-run quantkit build or delete the file.")
    layers = pd.DataFrame([x for x in doc.get("layers", []) if isinstance(x, dict)])
    for col in ("name", "type", "precision", "plan_precision", "engine_precision"):
        if col not in layers.columns:
            layers[col] = None
    dis = [d for d in doc.get("disagreements", []) if isinstance(d, dict)]
    return EngineInfo(str(doc.get("backend", "")), str(doc.get("backend_version", "")),
                      layers, dis, doc)


def _plan(path: Path) -> PrecisionPlan:
    doc = _read_json(path, "precision plan")
    try:
        if not isinstance(doc, dict):
            raise InputError("expected a JSON object")
        return PrecisionPlan.from_dict(doc)
    except (InputError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a quantkit precision plan ({err}); expected "
                         '{"format": "quantkit-plan/1", "nodes": {...}}. Re-run quantkit '
                         "sweep.") from err


def load_sweep(directory: str | os.PathLike[str]) -> Sweep:
    """Read a sweep directory.

    Args:
        directory: the ``-o DIR`` of ``quantkit sweep``.

    Returns:
        The results and everything else the directory holds.

    Raises:
        InputError: the directory or ``results.csv`` is missing, ``results.csv`` lacks required
            columns or holds a non-number in a numeric column, or a JSON/CSV file is malformed.
    """
    root = Path(directory)
    if not root.exists():
        raise InputError(f"{root}: no such directory. Give the output folder of "
                         "'quantkit sweep RECIPE.yaml -o DIR'.")
    if not root.is_dir():
        raise InputError(f"{root}: is a file, not a sweep directory. Give the folder that holds "
                         "results.csv (the -o DIR of quantkit sweep).")
    sweep = Sweep(root, _results(root / "results.csv"))
    for config in sweep.results["config"]:
        folder = root / "configs" / config
        if (folder / "plan.json").is_file():
            sweep.plans[config] = _plan(folder / "plan.json")
        if (folder / "result.json").is_file():
            doc = _read_json(folder / "result.json", "config result")
            if isinstance(doc, dict):
                sweep.config_results[config] = doc
        sidecar = next((p for p in (folder / "engine.json", folder / "model.engine.json")
                        if p.is_file()), None)
        if sidecar is not None:
            sweep.engines[config] = _engine(sidecar)
        if (folder / "estimate.json").is_file():
            doc = _read_json(folder / "estimate.json", "latency estimate")
            found = doc.get("estimates") if isinstance(doc, dict) else None
            if isinstance(found, list):
                sweep.estimates[config] = [e for e in found if isinstance(e, dict)]
    if (root / "sensitivity.csv").is_file():
        sweep.sensitivity = _sensitivity(root / "sensitivity.csv")
    if (root / "autotune.json").is_file():
        doc = _read_json(root / "autotune.json", "autotune summary")
        sweep.autotune = doc if isinstance(doc, dict) else None
    if (root / "environment.json").is_file():
        doc = _read_json(root / "environment.json", "environment")
        sweep.environment = doc if isinstance(doc, dict) else {}
    else:
        sweep.warnings.append(f"{root / 'environment.json'} is missing: versions, backend and "
                              "device are not recorded.")
    if (root / "recipe.yaml").is_file():
        try:
            sweep.recipe = (root / "recipe.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            sweep.warnings.append(f"{root / 'recipe.yaml'}: not readable ({err}).")
    return sweep


# ---------------------------------------------------------------------------------------------
# analysis: the FP32 baseline, INT8 configs, Pareto front, derived columns

_BASELINE_METHODS = frozenset({"fp32", "none", "float", "float32", "reference"})


def baseline_config(results: pd.DataFrame) -> str | None:
    """The FP32 reference config: named ``fp32``, else method fp32/none, else no INT8/FP16 layer.

    Only configs that ran (``status == "ok"``) count. Returns ``None`` when there is none.
    """
    ok = results[results["status"] == "ok"]
    for mask in (ok["config"].str.lower() == "fp32",
                 ok["method"].astype(str).str.strip().str.lower().isin(_BASELINE_METHODS),
                 (ok["int8_layers"] == 0) & (ok["fp16_layers"] == 0)
                 & ~(ok["fp8_layers"] > 0)):
        if mask.any():
            return str(ok["config"][mask].iloc[0])
    return None


#: config kinds with Q/DQ layers (their ONNX Runtime timing is ``cpu-fake-quant``).
QUANTIZED_KINDS = ("int8", "fp8")


def config_kind(row: pd.Series) -> str:
    """``int8``, ``fp8``, ``fp16`` or ``fp32`` for one results row (layer counts, else names).

    ``int8`` is any config with INT8 layers (mixed INT8/FP8 too), ``fp8`` one with FP8 layers
    and no INT8 layer.
    """
    if row.get("int8_layers", 0) > 0:
        return "int8"
    if row.get("fp8_layers", 0) > 0:
        return "fp8"
    if row.get("fp16_layers", 0) > 0 and not row.get("int8_layers", 0) > 0:
        return "fp16"
    if row.get("int8_layers") == 0:
        return "fp32"
    text = f"{row['config']} {row['method']}".lower()
    if "int8" in text or any(m in text for m in ("entropy", "minmax", "percentile", "mse")):
        return "int8"
    return "fp16" if "fp16" in text else "fp32"


def pareto_front(df: pd.DataFrame, x: str = "latency_ms_p50", y: str = "accuracy", *,
                 higher_is_better: bool = True) -> pd.Series:
    """Which rows are on the Pareto front of ``x`` (lower is better) against ``y``.

    A row is dominated when another row is at least as good in both and strictly better in one
    (lower ``x``; higher ``y``, or lower when ``higher_is_better`` is false). Rows with a NaN in
    either column, and rows whose ``status`` is not ``ok`` (when the column exists), are never on
    the front. Equal points are all kept.

    Args:
        df: the results (any index).
        x: the cost column (latency).
        y: the quality column (task metric or agreement).
        higher_is_better: direction of ``y``.

    Returns:
        A boolean Series with ``df``'s index.
    """
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    if not higher_is_better:
        ys = -ys
    valid = np.isfinite(xs) & np.isfinite(ys)
    if "status" in df.columns:
        valid &= (df["status"] == "ok").to_numpy()
    front = np.zeros(len(df), dtype=bool)
    idx = np.flatnonzero(valid)
    # Sweep by increasing x; points with the same x form a group. A point is dominated when a
    # point with a smaller x is at least as good, or one with the same x is strictly better.
    best_before = -np.inf
    order = idx[np.argsort(xs[idx], kind="stable")]
    start = 0
    while start < len(order):
        stop = start
        while stop < len(order) and xs[order[stop]] == xs[order[start]]:
            stop += 1
        group = order[start:stop]
        group_best = ys[group].max()
        for i in group:
            front[i] = ys[i] > best_before and ys[i] >= group_best
        best_before = max(best_before, group_best)
        start = stop
    return pd.Series(front, index=df.index, name="pareto")


def quality_column(results: pd.DataFrame) -> str:
    """``accuracy`` when any config has one, else ``agreement``, else ``sqnr_db``."""
    for col in ("accuracy", "agreement", "sqnr_db"):
        if np.isfinite(results[col].to_numpy(dtype=float)).any():
            return col
    return "accuracy"


def with_derived(sweep: Sweep) -> pd.DataFrame:
    """The results with derived columns for tables and plots.

    Adds ``kind`` (int8/fp16/fp32), ``delta`` (metric minus FP32; the metric is agreement when
    the sweep had no labels, see :func:`quality_column`), ``agreement_delta``, ``ranked``
    (the row's latency is of the sweep's ranking source,
    :func:`quantkit.report.sources.ranking_source`), ``speedup`` (FP32 p50 / p50, only between
    ranked rows of a TensorRT source: never for CPU timings), ``size_ratio`` (model bytes /
    FP32 model bytes) and ``pareto`` (on the metric-latency Pareto front of the ranked rows).
    Failed configs get NaN.
    """
    from quantkit.report.sources import comparable, ranking_source

    df = sweep.results.copy()
    df["kind"] = [config_kind(r) for _, r in df.iterrows()]
    src = ranking_source(df)
    df["ranked"] = comparable(df, src)
    base = baseline_config(df)
    if base is not None:
        ref = df[df["config"] == base].iloc[0]
        col = quality_column(df)
        df["delta"] = df[col] - ref[col]
        df["agreement_delta"] = df["agreement"] - ref["agreement"]
        with np.errstate(divide="ignore", invalid="ignore"):
            speed = ref["latency_ms_p50"] / df["latency_ms_p50"]
            df["speedup"] = speed.where(df["ranked"] & bool(ref["ranked"]) & (not src.is_cpu))
            df["size_ratio"] = df["model_bytes"] / ref["model_bytes"]
    else:
        for col in ("delta", "agreement_delta", "speedup", "size_ratio"):
            df[col] = np.nan
    df.loc[df["status"] != "ok", ["delta", "agreement_delta", "speedup", "size_ratio"]] = np.nan
    front = pareto_front(df[df["ranked"]], y=quality_column(df), higher_is_better=(
        sweep.higher_is_better if quality_column(df) == "accuracy" else True))
    df["pareto"] = front.reindex(df.index, fill_value=False).astype(bool)
    return df


__all__ = ["LOWER_IS_BETTER", "NUMERIC_COLUMNS", "REQUIRED_COLUMNS", "SENSITIVITY_COLUMNS",
           "EngineInfo", "Sweep", "baseline_config", "config_kind", "estimate_columns",
           "load_sweep", "pareto_front", "quality_column", "with_derived"]
