"""summary.md: headline, short table and warnings for a pull-request comment."""

from __future__ import annotations

from pathlib import Path

from sweep_dirs import make_sweep

from quantkit.report import load_sweep, render_markdown, write_report
from quantkit.report.markdown import fmt_bytes, fmt_ms, fmt_num, fmt_ratio, fmt_signed, headline


def test_summary_content(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s")
    write_report(root)
    text = (root / "summary.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "### quantkit report: resnet_tiny.onnx"
    assert lines[2] == (
        "Best INT8 config: `mixed-fp16-head`: top1 −0.13 vs `fp32` (worse), 2.16× faster at "
        "p50 (onnxruntime on cpu), 0.28× the model size. TensorRT engine: built with "
        "TensorRT-RTX 1.7.0 for 1 of 9 configs.")
    assert "| config | top1 | Δ vs FP32 | agreement | p50 ms | speed-up | size |" in lines
    assert "| int8-entropy ★ | 75.61 | −0.52 | 97.8% | 1.60 | 2.56× | 6.3 MiB |" in lines
    assert "| int8-minmax | 74.20 | −1.93 | 95.1% | 1.61 | 2.55× | 6.3 MiB |" in lines
    assert "| int8-percentile ★ | 75.90 | −0.23 | — | 1.62 | 2.53× | 6.3 MiB |" in lines
    assert "| **mixed-fp16-head** ★ | 76.00 | −0.13 | 99.1% | 1.90 | 2.16× | 6.8 MiB |" in lines
    assert "| int8-mse | failed | | | | | |" in lines
    assert "| int8-rtx-opt5 | build failed | | | | | |" in lines
    warnings = lines[lines.index("**Warnings**") + 2:]
    assert warnings[0].startswith("- ⚠️ `int8-mse` failed: calibration produced no finite")
    assert warnings[1].startswith("- ⚠️ `int8-rtx-opt5` build failed: TensorRT-RTX parser")
    assert warnings[2].startswith("- ⚠️ `int8-entropy` engine: 2 disagreements")
    assert len(text) < 3000  # fits a PR comment


def test_summary_lower_is_better_and_no_warnings(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s", metric="cer", optional=False, failed=False))
    text = render_markdown(sweep)
    assert "| config | cer | Δ vs FP32 |" in text
    assert "cer: lower is better" in text
    assert "TensorRT engine: not built: install quantkit[rtx]." in text
    assert "**Warnings**" not in text
    h = headline(sweep)
    assert h.best == "mixed-fp16-head" and not h.higher_is_better
    assert h.delta > 0  # a higher CER than FP32: worse


def test_slower_int8_is_said_plainly(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "results.csv").write_text(
        "config,method,accuracy,agreement,sqnr_db,latency_ms_p50,latency_ms_p99,throughput,"
        "model_bytes,backend,device\n"
        "fp32,,99,100,,0.2,0.3,5000,88000,onnxruntime,cpu\n"
        "int8-entropy,entropy,99,100,40,0.4,0.5,2500,31000,onnxruntime,cpu\n", encoding="utf-8")
    text = render_markdown(load_sweep(root))
    # no metric column: the metric is called "accuracy"; tied accuracy reads "same"
    assert "`int8-entropy`: accuracy +0.00 vs `fp32` (same), 2.00× slower at p50" in text
    assert "| **int8-entropy** | 99.00 | +0.00 | 100.0% | 0.400 | 0.50× | 30.3 KiB |" in text


def test_formats() -> None:
    assert fmt_signed(-0.391) == "−0.39" and fmt_signed(float("nan")) == "—"
    assert fmt_num(float("inf"), 1) == "∞" and fmt_num(None) == "—"
    assert fmt_ratio(1.4234) == "1.42×" and fmt_bytes(123456) == "120.6 KiB"
    assert fmt_ms(0.0421) == "0.0421" and fmt_ms(4.1) == "4.10" and fmt_ms(1234.5) == "1,234"


def test_sweep_without_labels_uses_agreement(tmp_path: Path) -> None:
    """quantkit sweep writes metric=agreement and no accuracy when the recipe has no labels."""
    root = tmp_path / "s"
    root.mkdir()
    (root / "results.csv").write_text(
        "config,method,accuracy,agreement,sqnr_db,latency_ms_p50,latency_ms_p99,throughput,"
        "model_bytes,backend,device,status,error,metric,higher_is_better,int8_layers\n"
        "fp32,,,100.0,inf,0.2,0.3,5000,88000,onnxruntime,cpu,ok,,agreement,True,0\n"
        "int8-entropy,entropy,,97.5,30.2,0.4,0.5,2500,31000,onnxruntime,cpu,ok,,agreement,True,7\n"
        "int8-minmax,minmax,,98.5,35.2,0.41,0.5,2500,31000,onnxruntime,cpu,ok,,agreement,True,7\n",
        encoding="utf-8")
    sweep = load_sweep(root)
    text = render_markdown(sweep)
    assert "| config | agreement | Δ vs FP32 | SQNR dB | p50 ms | speed-up | size |" in text
    assert "| **int8-minmax** | 98.50 | −1.50 | 35.2 | 0.410 | 0.49× | 30.3 KiB |" in text
    assert "`int8-minmax`: agreement −1.50 vs `fp32` (worse), 2.05× slower" in text
    page = write_report(root).read_text(encoding="utf-8")
    assert page.count(">agree\u00adment</th>") == 1
