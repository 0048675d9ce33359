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
    # within 0.5 top1 points of fp32 (76.13): int8-percentile 75.90, mixed 76.00, auto 75.95;
    # int8-entropy (75.61) is 0.52 below. Fastest on the L4 estimate: int8-percentile 1.62 ms,
    # 4.10 / 1.62 = 2.53x FP32's; auto (1.75) is 8 % slower: not a tie (5 %)
    assert lines[2] == (
        "Headline config: `int8-percentile`: top1 −0.23 vs `fp32` (worse), 2.53× faster "
        "(estimated, L4, batch 32), 0.26× the model size. TensorRT engine: built with "
        "TensorRT-RTX 1.7.0 for 1 of 9 configs.")
    assert lines[4] == (
        "Headline rule: the fastest by latency (estimated, L4, batch 32), among the configs "
        "with INT8 layers within 0.5 top1 points of the best (fp32: 76.13); estimates within "
        "5% of each other are ties.")
    assert ("| config | top1 | Δ vs FP32 | agreement | latency ms (L4, batch 32; source) | "
            "speed-up | size |") in lines
    assert "| int8-entropy ★ | 75.61 | −0.52 | 97.8% | 1.60 (estimated) | 2.56× | 6.3 MiB |" \
        in lines
    assert "| int8-minmax | 74.20 | −1.93 | 95.1% | 1.61 (estimated) | 2.55× | 6.3 MiB |" in lines
    assert ("| **int8-percentile** ★ | 75.90 | −0.23 | — | 1.62 (estimated) | 2.53× | 6.3 MiB |"
            in lines)
    assert "| int8-mse | failed | | | | | |" in lines
    assert "| int8-rtx-opt5 | build failed | | | | | |" in lines
    assert "CPU only" not in text and "All latency here is ONNX Runtime" not in text
    assert "compare the tensor /head/fc/Gemm_output_0" in text
    warnings = lines[lines.index("**Warnings**") + 2:]
    assert warnings[0].startswith("- ⚠️ `int8-mse` failed: calibration produced no finite")
    assert warnings[1].startswith("- ⚠️ `int8-rtx-opt5` build failed: TensorRT-RTX parser")
    assert warnings[2].startswith("- ⚠️ calibration of `int8-entropy`, `mixed-fp16-head`, "
                                  "`auto`: entropy calibration clipped 2 tensor(s)")
    assert warnings[3].startswith("- ⚠️ `int8-entropy` engine: 2 disagreements")
    assert len(text) < 3500  # fits a PR comment


def test_cpu_only_sweep_says_what_its_latency_is(tmp_path: Path) -> None:
    text = render_markdown(load_sweep(make_sweep(tmp_path / "s", source="cpu",
                                                 optional=False, failed=False)))
    assert ("**All latency here is ONNX Runtime on this machine's CPU, not TensorRT: INT8 "
            "configs ran there as fake quantisation (cpu-fake-quant") in text
    assert "faster" not in text.split("\n")[2] and "slower" not in text.split("\n")[2]
    # latency does not rank the candidates: the most accurate within 0.5 points wins
    assert text.split("\n")[2].startswith("Headline config: `mixed-fp16-head`: top1 −0.13")
    assert "| int8-entropy ★ | 75.61 | −0.52 | 97.8% | 1.60 (cpu-fake-quant) | — | 6.3 MiB |" \
        in text
    assert "| fp32 ★ | 76.13 | +0.00 | 100.0% | 4.10 (cpu) | — | 24.3 MiB |" in text


def test_summary_lower_is_better_and_no_warnings(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path / "s", metric="cer", optional=False, failed=False))
    text = render_markdown(sweep)
    assert "| config | cer | Δ vs FP32 |" in text
    assert "cer: lower is better" in text
    assert "TensorRT engine: not built: install quantkit[rtx]." in text
    assert "**Warnings**" in text and "calibration of `int8-entropy`" in text
    h = headline(sweep)
    # CER = (100 - top1) / 4: fp32 has the lowest (5.968); 0.5 CER points admit every INT8
    # config down to 6.468 CER = 74.13 top1 (all of them); the fastest is int8-entropy (1.60),
    # with int8-minmax (1.61) and int8-percentile (1.62) within the 5 % tie band
    assert h.best == "int8-entropy" and not h.higher_is_better
    assert h.choice.ties == ["int8-minmax", "int8-percentile"]
    assert h.delta > 0  # a higher CER than FP32: worse


def test_slower_int8_is_said_plainly(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "results.csv").write_text(
        "config,method,accuracy,agreement,sqnr_db,latency_ms_p50,latency_ms_p99,throughput,"
        "model_bytes,backend,device,latency_source,latency_target,int8_layers\n"
        "fp32,,99,100,,0.2,,5000,88000,onnxruntime,cpu,estimated,L4,0\n"
        "int8-entropy,entropy,99,100,40,0.4,,2500,31000,onnxruntime,cpu,estimated,L4,7\n",
        encoding="utf-8")
    text = render_markdown(load_sweep(root))
    # no metric column: the metric is called "accuracy"; tied accuracy reads "same"
    assert "`int8-entropy`: accuracy +0.00 vs `fp32` (same), 2.00× slower (estimated, L4)" \
        in text
    assert "| **int8-entropy** | 99.00 | +0.00 | 100.0% | 0.400 (estimated) | 0.50× | 30.3 KiB |" \
        in text


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
    # an older sweep: ONNX Runtime on the CPU, so no speed-up, and latency does not pick
    assert ("| config | agreement | Δ vs FP32 | SQNR dB | latency ms (cpu; source) | speed-up | "
            "size |") in text
    assert "| int8-minmax | 98.50 | −1.50 | 35.2 | 0.410 (cpu-fake-quant) | — | 30.3 KiB |" in text
    # agreement is the metric: both INT8 configs are more than 0.5 points below FP32's 100
    assert ("No INT8 config is within 0.5 agreement points of the best (`fp32`: 100.00); the "
            "most accurate INT8 config, `int8-minmax`, is −1.50 vs `fp32`.") in text
    page = write_report(root).read_text(encoding="utf-8")
    assert page.count(">agree\u00adment</th>") == 1
