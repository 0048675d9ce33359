"""load_sweep: typed results, plans, optional files, and clear errors for bad sweep folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_dirs import COLUMNS, make_sweep

from quantkit.errors import InputError
from quantkit.report import load_sweep, with_derived
from quantkit.report.load import REQUIRED_COLUMNS, baseline_config, config_kind
from quantkit.report.markdown import headline


def test_results_are_typed(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s"))
    df = sweep.results
    assert list(df["config"][:3]) == ["fp32", "fp16", "int8-entropy"]
    assert df["accuracy"].dtype == float and df["model_bytes"].dtype == float
    assert math.isinf(df.loc[0, "sqnr_db"])
    assert math.isnan(df.set_index("config").loc["int8-percentile", "agreement"])
    assert df["higher_is_better"].map(type).eq(bool).all() and df["higher_is_better"].all()
    assert set(df["status"]) == {"ok", "failed", "build_failed"}
    assert sweep.metric == "top1" and sweep.higher_is_better
    assert list(sweep.failed["config"]) == ["int8-mse", "int8-rtx-opt5"]
    assert sweep.model_name == "resnet_tiny.onnx"


def test_plans_engines_and_optional_files(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s", n_layers=30))
    assert "fp32" not in sweep.plans and len(sweep.plans) == 6
    plan = sweep.plans["mixed-fp16-head"]
    assert plan.nodes["/head/fc/Gemm"].precision == "fp16"
    assert plan.nodes["/stem/conv/Conv"].precision == "fp32"
    assert len(plan.nodes) == 30
    assert sweep.config_results["int8-percentile"]["calibration"]["settings"] == {
        "percentile": 99.99}
    engine = sweep.engines["int8-entropy"]
    assert engine.backend == "tensorrt-rtx" and engine.backend_version == "1.7.0"
    assert len(engine.disagreements) == 2 and len(engine.layers) == 30
    assert sweep.sensitivity is not None
    assert list(sweep.sensitivity["rank"]) == sorted(sweep.sensitivity["rank"])
    assert sweep.sensitivity.loc[0, "layer"] == "/stem/conv/Conv"
    assert sweep.autotune is not None and sweep.autotune["reached"] is True
    assert sweep.environment["onnxruntime"] == "1.20.1"
    assert sweep.recipe is not None and "configs:" in sweep.recipe


def test_sweep_without_optional_files(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s", optional=False, failed=False)
    (root / "environment.json").unlink()
    sweep = load_sweep(root)
    assert sweep.sensitivity is None and sweep.autotune is None and not sweep.engines
    assert sweep.environment == {}
    assert any("environment.json" in w for w in sweep.warnings)


def test_lead_engine_sidecar_name_is_read(tmp_path: Path) -> None:
    """quantkit sweep writes configs/<c>/model.engine.json next to model.engine."""
    root = make_sweep(tmp_path / "s")
    folder = root / "configs" / "int8-entropy"
    (folder / "engine.json").rename(folder / "model.engine.json")
    assert "int8-entropy" in load_sweep(root).engines


def test_minimal_csv_with_only_contract_columns(tmp_path: Path) -> None:
    """An older results.csv with only the contract columns (docs/cli.md#sweep) still loads."""
    root = tmp_path / "s"
    root.mkdir()
    (root / "results.csv").write_text(
        ",".join(REQUIRED_COLUMNS) + "\n"
        "fp32,,80.0,100,,2.0,2.5,500,1000,onnxruntime,cpu\n"
        "int8,entropy,79.5,98.5,30.1,1.0,1.2,1000,300,onnxruntime,cpu\n", encoding="utf-8")
    sweep = load_sweep(root)
    assert list(sweep.results["status"]) == ["ok", "ok"]
    assert sweep.results["higher_is_better"].all()
    df = with_derived(sweep)
    assert baseline_config(df) == "fp32"
    assert [config_kind(r) for _, r in df.iterrows()] == ["fp32", "int8"]
    # such a sweep timed ONNX Runtime on the CPU: its latencies are named for what they are,
    # and half the FP32 time on a CPU fake-quant run is not called a speed-up
    assert list(sweep.results["latency_source"]) == ["cpu", "cpu-fake-quant"]
    assert list(sweep.results["cpu_latency_ms_p50"]) == [2.0, 1.0]
    h = headline(sweep)
    assert h.best == "int8" and h.delta == pytest.approx(-0.5)
    assert np.isnan(h.speedup) and h.size_ratio == pytest.approx(0.3)
    assert h.note.startswith("All latency here is ONNX Runtime on this machine's CPU")
    assert h.engine == "not built: install quantkit[rtx]"


def test_higher_is_better_inferred_from_metric(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "results.csv").write_text(
        ",".join(REQUIRED_COLUMNS) + ",metric\n"
        "fp32,,3.1,100,,2.0,2.5,500,1000,onnxruntime,cpu,cer\n", encoding="utf-8")
    assert not load_sweep(root).higher_is_better


def _write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.csv").write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(("setup", "match"), [
    (lambda p: p / "missing", r"missing: no such directory"),
    (lambda p: (p / "f.csv").write_text("x") and p / "f.csv", r"is a file, not a sweep"),
    (lambda p: (p / "empty").mkdir() or p / "empty",
     r"results.csv: no such file.*quantkit sweep RECIPE.yaml -o DIR"),
    (lambda p: _write(p / "s", "config,method,accuracy\nfp32,,1\n"),
     r"results.csv: missing columns agreement, sqnr_db.*re-run quantkit sweep"),
    (lambda p: _write(p / "s", ""), r"results.csv: the file is empty"),
    (lambda p: _write(p / "s", ",".join(REQUIRED_COLUMNS) + "\n"), r"has a header but no rows"),
    (lambda p: _write(p / "s", ",".join(REQUIRED_COLUMNS) + "\n"
                      "fp32,,abc,,,,,,,onnxruntime,cpu\n"),
     r"row 2, column accuracy: 'abc' is not a number"),
    (lambda p: _write(p / "s", ",".join(REQUIRED_COLUMNS) + "\n"
                      "a,,1,,,,,,,x,cpu\na,,2,,,,,,,x,cpu\n"), r"config a appears more than once"),
    (lambda p: _write(p / "s", ",".join(REQUIRED_COLUMNS) + ",higher_is_better\n"
                      "a,,1,,,,,,,x,cpu,maybe\n"), r"higher_is_better: 'maybe' is not true"),
])
def test_bad_sweep_folders_raise_input_errors(tmp_path: Path, setup, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_sweep(setup(tmp_path))


def test_malformed_json_and_sensitivity_name_the_file(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s")
    plan = root / "configs" / "fp16" / "plan.json"
    plan.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"configs/fp16/plan.json: the precision plan is not "
                                         r"valid JSON \(line 1"):
        load_sweep(root)
    plan.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(InputError, match="not a quantkit precision plan"):
        load_sweep(root)
    plan.unlink()
    (root / "sensitivity.csv").write_text("layer,rank\na,1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"sensitivity.csv: missing columns op_type"):
        load_sweep(root)


def test_derived_columns(tmp_path: Path) -> None:
    df = with_derived(load_sweep(make_sweep(tmp_path / "s"))).set_index("config")
    assert df.loc["int8-entropy", "delta"] == pytest.approx(75.61 - 76.13)
    assert df.loc["int8-entropy", "speedup"] == pytest.approx(4.10 / 1.60)  # both estimated
    assert df.loc["int8-entropy", "est_ms_T4"] == pytest.approx(1.60 * 1.9)
    cpu = with_derived(load_sweep(make_sweep(tmp_path / "c", source="cpu")))
    assert cpu["speedup"].isna().all()  # CPU timings only: no speed-up anywhere
    assert df.loc["int8-entropy", "size_ratio"] == pytest.approx(6_600_000 / 25_500_000)
    assert df.loc["fp16", "kind"] == "fp16" and df.loc["fp32", "kind"] == "fp32"
    assert df.loc["auto", "kind"] == "int8"
    assert np.isnan(df.loc["int8-mse", "speedup"]) and not df.loc["int8-mse", "pareto"]
    assert isinstance(df, pd.DataFrame) and set(COLUMNS) <= set(df.columns) | {"config"}
