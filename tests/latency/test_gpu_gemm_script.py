"""The CPU-side logic of benchmarks/latency/gpu_gemm.py (the GPU part needs CUDA)."""

from __future__ import annotations

import pytest
from _bench import load

gg = load("gpu_gemm")


def test_shape_grid_rounds_filters_and_orders() -> None:
    # 10 rounds up to 16; with max_elements 16*64 an operand may hold at most 1024 elements,
    # so at most one of M, N, K can be 64: (16,16,16) then the three with one 64
    grid = gg.shape_grid((10, 64), multiple=16, max_elements=16 * 64)
    assert grid == [(16, 16, 16), (16, 16, 64), (16, 64, 16), (64, 16, 16)]
    full = gg.shape_grid((10, 64), multiple=16)
    assert len(full) == 8 and full[0] == (16, 16, 16) and full[-1] == (64, 64, 64)
    assert all(d % 16 == 0 for shape in full for d in shape)


def test_shape_grid_rejects_bad_multiple() -> None:
    with pytest.raises(ValueError, match="multiple"):
        gg.shape_grid((64,), multiple=0)


def test_gemm_flops_counts_multiply_adds_twice() -> None:
    assert gg.gemm_flops(2, 3, 4) == 48


def test_fit_recovers_cap_and_ramp() -> None:
    # eff = 0.7 * x / (x + 2e-6), by hand: x=1e-7 -> 0.07/2.1, x=1e-6 -> 0.7/3, x=1e-5 -> 7/12
    pts = [(1e-7, 0.07 / 2.1), (1e-6, 0.7 / 3), (1e-5, 7 / 12)]
    fit = gg.fit_efficiency(pts)
    assert fit["cap"] == pytest.approx(0.7, rel=1e-9)
    assert fit["ramp_s"] == pytest.approx(2e-6, rel=1e-9)
    assert fit["points"] == 3


def test_fit_with_one_point_or_flat_data_takes_the_best_efficiency() -> None:
    assert gg.fit_efficiency([(1e-5, 0.6)]) == {"cap": 0.6, "ramp_s": 0.0, "points": 1.0}
    # efficiency falling with size gives a negative ramp: refused, best seen is the cap
    fit = gg.fit_efficiency([(1e-6, 0.8), (1e-5, 0.5)])
    assert fit["cap"] == 0.8 and fit["ramp_s"] == 0.0
    with pytest.raises(ValueError, match="no positive"):
        gg.fit_efficiency([(0.0, 0.5)])


def test_summarize_against_hand_computed_rates() -> None:
    raw = [
        # 2e12 FLOPs in 10 ms = 200 TFLOPS; the peak is 400 -> efficiency 0.5
        {"kind": "gemm", "dtype": "fp16", "flops": 2e12, "median_ms": 10.0},
        # INT8 with no datasheet peak: rate only
        {"kind": "gemm", "dtype": "int8", "flops": 1e12, "median_ms": 2.0},
        # 2e9 bytes in 1 ms = 2000 GB/s; the datasheet says 2500 -> 0.8
        {"kind": "copy", "dtype": "uint8", "bytes": 2e9, "median_ms": 1.0},
        {"kind": "skipped", "dtype": "int8", "m": 16, "n": 16, "k": 16, "reason": "x"},
    ]
    out = gg.summarize(raw, {"fp16": 400.0, "int8": None}, 2500.0)
    assert raw[0]["tflops"] == pytest.approx(200.0)
    assert raw[0]["efficiency"] == pytest.approx(0.5)
    assert raw[1]["tflops"] == pytest.approx(500.0) and "efficiency" not in raw[1]
    assert raw[2]["gbs"] == pytest.approx(2000.0)
    assert out["summary"]["fp16"]["cap"] == pytest.approx(0.5)
    assert out["summary"]["int8"] == {"best": pytest.approx(500.0), "unit": "TFLOPS"}
    assert out["estimate_options"] == {"compute_efficiency": pytest.approx(0.5),
                                       "ramp_s": 0.0, "memory_efficiency": pytest.approx(0.8)}


def test_options_match_the_estimator_fields() -> None:
    from dataclasses import fields

    from quantkit.latency import EstimateOptions

    names = {f.name for f in fields(EstimateOptions)}
    out = gg.summarize([{"kind": "gemm", "dtype": "fp16", "flops": 1e12, "median_ms": 5.0},
                        {"kind": "copy", "dtype": "uint8", "bytes": 1e9, "median_ms": 1.0}],
                       {"fp16": 400.0}, 2000.0)
    assert set(out["estimate_options"]) <= names
    EstimateOptions(**out["estimate_options"])  # valid values


def test_refuses_cleanly_without_cuda(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal path is not reachable")
    out = tmp_path / "gemm.json"
    assert gg.main(["--gpu", "H100-SXM", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Nothing was measured or written" in err
    assert not out.exists()


def test_unknown_gpu_and_precision_are_refused(tmp_path, capsys) -> None:
    assert gg.main(["--gpu", "not-a-gpu", "-o", str(tmp_path / "x.json")]) == 2
    assert "--gpu" in capsys.readouterr().err
    assert gg.main(["--precisions", "fp16,int3", "-o", str(tmp_path / "x.json")]) == 2
    assert "int3" in capsys.readouterr().err
