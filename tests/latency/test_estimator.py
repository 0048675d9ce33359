"""The estimator on real TensorRT-RTX builds, checked against hand-computed rooflines."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from _require import require

require("tensorrt_rtx_bindings")

from quantkit.errors import InputError  # noqa: E402
from quantkit.latency import (  # noqa: E402
    EstimateOptions,
    estimate_from_sidecar,
    estimate_model,
    get_gpu,
)
from tests.builders import latency as lm  # noqa: E402

# The model's constants, restated here (the test does the arithmetic itself).
CAP_C, CAP_M, RAMP, LAUNCH = 0.70, 0.80, 1e-6, 2e-6


def roofline(flops: float, nbytes: float, peak_tflops: float, bw_gbs: float) -> float:
    """Seconds for one kernel: max(compute, memory) at the capped, size-dependent efficiency."""
    t_c = flops / (peak_tflops * 1e12)
    t_m = nbytes / (bw_gbs * 1e9)
    # efficiency = cap * t / (t + RAMP)  =>  t / efficiency = (t + RAMP) / cap
    compute = (t_c + RAMP) / CAP_C if flops else 0.0
    memory = (t_m + RAMP) / CAP_M if nbytes else 0.0
    return max(compute, memory) + LAUNCH


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("latency")
    return {
        "mm": lm.matmul_model(d / "mm.onnx", k=256, n=512),
        "conv16": lm.conv_model(d / "conv16.onnx", c=64, k=64, hw=56, dtype="fp16"),
        "fp32": lm.conv_chain(d / "fp32.onnx", channels=512, hw=14, depth=2),
        "fp16": lm.conv_chain(d / "fp16.onnx", channels=512, hw=14, depth=2, dtype="fp16"),
        "int8": lm.conv_chain(d / "int8.onnx", channels=512, hw=14, depth=2, dtype="fp16",
                              qdq=True),
        "fp8": lm.matmul_model(d / "fp8.onnx", k=256, n=512, qdq="fp8"),
        "block": lm.transformer_block(d / "block.onnx", dtype="fp16"),
    }


def test_matmul_against_hand_roofline(models: dict[str, Path]) -> None:
    # X (2, 64, 256) @ W (256, 512): one FP32 GEMM kernel of M=128, K=256, N=512
    est = estimate_model(models["mm"], "A100-SXM", shapes={"x": (2, 64, 256)})
    (kernel,) = est.kernels
    m, k, n = 2 * 64, 256, 512
    flops = 2 * m * k * n
    # input, weight and output in FP32, plus GEMM alpha and beta scalars the kernel lists
    nbytes = (m * k + k * n + m * n + 2) * 4
    assert kernel.precision == "fp32" and kernel.matrix_flops == flops
    assert kernel.bytes == nbytes
    expected = roofline(flops, nbytes, 156.0, 2039.0)  # A100: TF32 156 TFLOPS, 2039 GB/s
    assert kernel.ms == pytest.approx(expected * 1e3, rel=1e-9)
    assert est.latency_ms == pytest.approx(expected * 1e3, rel=1e-9)
    assert est.by_precision == {"fp32": pytest.approx(expected * 1e3)}
    assert est.build_target == "SM80" and "SM80" in est.method
    assert est.batch_size == 2 and est.shapes == {"x": [2, 64, 256]}
    assert est.label == "estimated, A100-SXM, batch 2"
    assert est.throughput == pytest.approx(2 / (expected))
    assert est.to_json()["throughput"] == est.throughput


def test_fp16_conv_against_hand_roofline(models: dict[str, Path]) -> None:
    n, c, k, hw, r = 8, 64, 64, 56, 3
    est = estimate_model(models["conv16"], "L4", shapes={"x": (n, c, hw, hw)})
    conv = [x for x in est.kernels if x.matrix_flops > 0]
    assert len(conv) == 1 and conv[0].onnx_layers[0] == "conv"
    flops = 2 * n * k * hw * hw * c * r * r
    assert conv[0].matrix_flops == flops and conv[0].precision == "fp16"
    act = n * c * hw * hw * 2
    # input + output activations, the FP16 weights and bias, two FP32 scalars
    nbytes = act + n * k * hw * hw * 2 + k * c * r * r * 2 + k * 2 + 2 * 4
    assert conv[0].bytes == nbytes
    assert conv[0].ms == pytest.approx(roofline(flops, nbytes, 121.0, 300.0) * 1e3, rel=1e-9)
    # the engine also has NCHW <-> NHWC transposes: pure data movement, memory bound
    for other in est.kernels:
        if other is not conv[0]:
            assert other.flops == 0 and other.bound == "memory"
            assert other.ms == pytest.approx(roofline(0, other.bytes, 121.0, 300.0) * 1e3)
    assert est.latency_ms == pytest.approx(sum(x.ms for x in est.kernels))


@pytest.mark.parametrize("gpu", ["A100-SXM", "L4", "Jetson-AGX-Orin"])
def test_int8_faster_than_fp16_faster_than_fp32(models: dict[str, Path], gpu: str) -> None:
    shapes = {"x": (8, 512, 14, 14)}  # 2 x 3x3 convs of 512 channels: compute bound
    fp32, fp16, int8 = (estimate_model(models[m], gpu, shapes=shapes)
                        for m in ("fp32", "fp16", "int8"))
    assert int8.latency_ms < fp16.latency_ms < fp32.latency_ms
    assert "int8" in int8.by_precision and set(fp16.by_precision) == {"fp16"}
    # the same convolution FLOPs in all three engines, by hand: 2 * N*K*H*W * C*3*3 per conv
    flops = 2 * (2 * 8 * 512 * 14 * 14 * 512 * 9)
    for est in (fp32, fp16, int8):
        assert sum(k.matrix_flops for k in est.kernels) == flops


def test_fp8_refused_before_ada(models: dict[str, Path]) -> None:
    with pytest.raises(InputError) as err:
        estimate_model(models["fp8"], "A100", shapes={"x": (1, 16, 256)})
    text = str(err.value)
    assert "FP8" in text and "A100-SXM" in text and "8.9" in text and "x_Q" in text
    est = estimate_model(models["fp8"], "H100", shapes={"x": (1, 16, 256)})
    gemm = [k for k in est.kernels if k.matrix_flops > 0]
    assert [k.precision for k in gemm] == ["fp8"]
    assert gemm[0].matrix_flops == 2 * 16 * 256 * 512
    assert est.build_target == "SM89" and "SM90" in est.method


def test_transformer_block_counts_each_node_once(models: dict[str, Path]) -> None:
    s, d, ff = 128, 64, 128
    est = estimate_model(models["block"], "L4", shapes={"x": (2, s, d)})
    m = 2 * s
    # Q, K, V and output projections, Q.K^T and P.V per head, the two MLP matmuls
    flops = 4 * (2 * m * d * d) + 2 * (2 * 2 * s * s * d) + 2 * (2 * m * d * ff)
    assert sum(k.matrix_flops for k in est.kernels) == flops
    names = [n for k in est.kernels if k.matrix_flops for n in k.onnx_layers]
    for node in ("q_proj", "k_proj", "v_proj", "qk", "pv", "o_proj", "fc1", "fc2"):
        assert node in names


def test_estimate_from_sidecar_matches_and_rejects_dynamic(models: dict[str, Path],
                                                         tmp_path: Path) -> None:
    from quantkit.backends import BuildOptions, get_backend

    backend = get_backend("tensorrt-rtx")
    built = backend.build(models["mm"], tmp_path / "mm.engine",
                          BuildOptions(shapes={"x": (2, 64, 256)}, compute_capabilities=("SM80",)))
    direct = estimate_model(models["mm"], "A100", shapes={"x": (2, 64, 256)})
    again = estimate_from_sidecar(built.sidecar, models["mm"], "A100")
    assert again.latency_ms == pytest.approx(direct.latency_ms)
    ranged = backend.build(models["mm"], tmp_path / "r.engine",
                           BuildOptions(shapes={"x": (2, 64, 256)},
                                        min_shapes={"x": (1, 64, 256)},
                                        max_shapes={"x": (4, 64, 256)}))
    with pytest.raises(InputError, match="dynamic dimensions"):
        estimate_from_sidecar(ranged.sidecar, models["mm"], "A100")
    with pytest.raises(InputError, match=r"built for \[2, 64, 256\]"):
        estimate_from_sidecar(built.sidecar, models["mm"], "A100", {"x": (4, 64, 256)})


def test_options_change_the_result_as_the_formula_says(models: dict[str, Path]) -> None:
    base = estimate_model(models["mm"], "L4", shapes={"x": (2, 64, 256)})
    slow = estimate_model(models["mm"], "L4", shapes={"x": (2, 64, 256)},
                          options=EstimateOptions(launch_s=12e-6))
    n = len(base.kernels)
    assert slow.latency_ms - base.latency_ms == pytest.approx(n * 10e-3)
    with pytest.raises(InputError, match="compute_efficiency"):
        EstimateOptions(compute_efficiency=1.5)


def test_unknown_gpu_and_missing_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Known GPUs"):
        estimate_model(tmp_path / "none.onnx", "GTX-480")
    with pytest.raises(InputError, match="no such file"):
        estimate_model(tmp_path / "none.onnx", "L4")


def test_package_import_is_light() -> None:
    import subprocess

    code = ("import sys, quantkit.latency; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'tensorrt_rtx_bindings', 'torch')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert math.isfinite(get_gpu("L4").fp32_tflops)


def test_int8_epilogue_folded_as_tensorrt_fuses_it(tmp_path: Path) -> None:
    n, c, k, hw = 2, 64, 64, 56
    model = lm.conv_model(tmp_path / "q.onnx", c=c, k=k, hw=hw, qdq=True)
    shapes = {"x": (n, c, hw, hw)}
    built = estimate_model(model, "L4", shapes=shapes, options=EstimateOptions(
        fuse_epilogues=False))
    fused = estimate_model(model, "L4", shapes=shapes)
    # as built: Quantize kernel, INT8 conv writing FP32, epilogue (scale + bias) kernel
    assert [x.precision for x in built.kernels] == ["fp32", "int8", "fp32"]
    quant, conv = fused.kernels
    assert conv.fused == (built.kernels[2].name,) and quant.fused == ()
    flops = 2 * n * k * hw * hw * c * 9
    assert conv.matrix_flops == flops and conv.precision == "int8"
    # INT8 input and weights, per-channel scale and bias of both kernels (FP32 [1, K, 1, 1]),
    # the FP32 output of the model; the FP32 accumulator in between is gone
    nbytes = n * c * hw * hw + k * c * 9 + 4 * k * 4 + n * k * hw * hw * 4
    assert conv.bytes == nbytes
    assert conv.ms == pytest.approx(roofline(flops, nbytes, 242.5, 300.0) * 1e3, rel=1e-9)
    assert quant.ms == pytest.approx(built.kernels[0].ms)
    assert fused.latency_ms < built.latency_ms - LAUNCH * 1e3
    assert "1 INT8/FP8 epilogue kernels folded" in fused.method
    assert "as TensorRT-RTX built them" in built.method


def test_unnamed_nodes_are_matched(tmp_path: Path) -> None:
    import onnx

    path = lm.matmul_model(tmp_path / "named.onnx", k=256, n=512)
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        node.name = ""
    onnx.save(proto, str(tmp_path / "unnamed.onnx"))
    est = estimate_model(tmp_path / "unnamed.onnx", "L4", shapes={"x": (1, 32, 256)})
    assert est.kernels[0].onnx_layers == ("node_of_y",)
    assert est.kernels[0].matrix_flops == 2 * 32 * 256 * 512


def test_kernel_without_metadata_gets_its_flops_from_its_dims(tmp_path: Path) -> None:
    c, mid, out = 512, 256, 1024
    model = lm.bottleneck(tmp_path / "bn.onnx", c=c, mid=mid, out=out)
    est = estimate_model(model, "A100", shapes={"x": (1, c, 28, 28)})
    c1 = 2 * mid * 28 * 28 * c
    c2 = 2 * mid * 14 * 14 * mid * 9
    c3 = 2 * out * 14 * 14 * mid
    down = 2 * out * 14 * 14 * c
    assert sum(k.matrix_flops for k in est.kernels) == pytest.approx(c1 + c2 + c3 + down)
    # TensorRT-RTX 1.7.1 runs c3 in a kernel whose metadata names no ONNX node
    anonymous = [k for k in est.kernels if k.matrix_flops and not k.onnx_layers]
    assert [k.matrix_flops for k in anonymous] == [c3]
    assert "left out" not in est.method


def test_several_gpus_share_a_build(models: dict[str, Path]) -> None:
    from quantkit.latency import estimate_models

    l4, h100, a100 = estimate_models(models["mm"], ["L4", "h100", "A100"],
                                     shapes={"x": (2, 64, 256)})
    assert (l4.gpu, h100.gpu, a100.gpu) == ("L4", "H100-SXM", "A100-SXM")
    assert l4.build_target == h100.build_target == "SM89" and a100.build_target == "SM80"
    assert [(k.name, k.bytes, k.matrix_flops) for k in l4.kernels] == \
        [(k.name, k.bytes, k.matrix_flops) for k in h100.kernels]
    # same kernels, 11x the bandwidth and 8x the TF32 peak: the H100 is faster
    assert h100.latency_ms < l4.latency_ms


def test_embedding_lookup_reads_only_the_gathered_rows(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    vocab, hidden, n, length = 30522, 64, 2, 16
    table = helper.make_tensor("table", TensorProto.FLOAT16, [vocab, hidden],
                               np.zeros((vocab, hidden), np.float16).tobytes(), raw=True)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="/emb/Gather"),
         helper.make_node("Relu", ["emb"], ["y"], name="/relu")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [n, length])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [n, length, hidden])],
        initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "emb.onnx"))
    est = estimate_model(tmp_path / "emb.onnx", "L4", shapes={"ids": (n, length)})
    (kernel,) = [k for k in est.kernels if "/emb/Gather" in k.onnx_layers]
    gathered = n * length * hidden * 2  # FP16 rows read from the table
    # at most: the ids (int64 or int32), the rows read, and the FP16 output; never the table
    upper = n * length * 8 + gathered + n * length * hidden * 2
    assert gathered <= kernel.bytes <= upper
    assert kernel.bytes < vocab * hidden * 2 / 10


def test_weight_kernel_counted_as_build_time_work(tmp_path: Path) -> None:
    from quantkit.latency.model import kernel_seconds

    n, s, d = 2, 128, 64
    model = lm.packed_qkv_attention(tmp_path / "qkv.onnx", d=d)
    shapes = {"x": (n, s, d)}
    built = estimate_model(model, "L4", shapes=shapes,
                           options=EstimateOptions(fold_constant_kernels=False))
    est = estimate_model(model, "L4", shapes=shapes)
    # TensorRT-RTX dequantizes and rearranges the INT8 Q/K/V weight at run time: a kernel
    # with no runtime input, reading the INT8 weight and FP16 scales, writing FP16
    (prep,) = [k for k in built.kernels if k.name.startswith("__myl_CastMulCastResh")]
    assert prep.bytes == d * 3 * d + 3 * d * 2 + d * 3 * d * 2
    assert prep.name not in {k.name for k in est.kernels}
    (reader,) = [k for k in est.kernels if prep.name in k.fused]
    assert reader.precision == "int8" and reader.matrix_flops == 2 * n * s * d * 3 * d
    # INT8 activation, the weight as TensorRT stores it (INT8), FP16 output
    assert reader.bytes == n * s * d + d * 3 * d + n * s * 3 * d * 2
    seconds, _ = kernel_seconds(reader.matrix_flops, reader.flops - reader.matrix_flops,
                                reader.bytes, tensor_tflops=242.5, vector_tflops=30.3,
                                bandwidth_gbs=300.0, options=EstimateOptions())
    assert reader.ms == pytest.approx(seconds * 1e3, rel=1e-12)
    t_m = reader.bytes / 300e9
    assert reader.bound == "memory" and reader.ms == pytest.approx(
        ((t_m + RAMP) / CAP_M + LAUNCH) * 1e3, rel=1e-12)
    assert len(est.kernels) == len(built.kernels) - 1
    assert built.latency_ms - est.latency_ms > prep.ms
    assert "counted as done at build time" in est.method
    assert "run-time weight kernels kept" in built.method


@pytest.mark.parametrize("quantized", [False, True])
def test_layernorm_epilogue_stays_a_kernel(tmp_path: Path, quantized: bool) -> None:
    n, s, d = 8, 128, 256
    model = lm.matmul_layernorm(tmp_path / "mln.onnx", d=d, quantize_output=quantized)
    shapes = {"x": (n, s, d)}
    built = estimate_model(model, "L4", shapes=shapes, options=EstimateOptions(
        fuse_epilogues=False))
    est = estimate_model(model, "L4", shapes=shapes)
    # Quantize kernel, INT8 GEMM writing FP16, bias + residual + LayerNorm kernel: the
    # LayerNorm needs whole rows, so TensorRT does not fuse it into the GEMM either
    assert [k.name for k in est.kernels] == [k.name for k in built.kernels]
    assert all(not k.fused for k in est.kernels)
    gemm, ln = est.kernels[1], est.kernels[2]
    assert gemm.precision == "int8" and gemm.matrix_flops == 2 * n * s * d * d
    # with the GEMM's output quantized, TensorRT writes it as INT8 from the GEMM's epilogue:
    # 1 byte instead of TensorRT-RTX's 2 per element, on the write and on the read
    saved = n * s * d * (2 - 1) if quantized else 0
    assert gemm.bytes == built.kernels[1].bytes - saved
    assert ln.bytes == built.kernels[2].bytes - saved
    t_m = gemm.bytes / 300e9
    assert gemm.bound == "memory" and gemm.ms == pytest.approx(
        ((t_m + RAMP) / CAP_M + LAUNCH) * 1e3, rel=1e-12)


def test_measured_dram_cap_of_a_row_replaces_the_default(models: dict[str, Path]) -> None:
    """H100-SXM carries a DRAM cap measured on the lent H100; an explicit option still wins."""
    from quantkit.latency import EstimateOptions, estimate_models, get_gpu
    from quantkit.latency.model import MEMORY_EFFICIENCY

    row = get_gpu("H100-SXM")
    assert row.memory_efficiency == pytest.approx(0.89) and "measured" in row.efficiency_source
    assert get_gpu("L4").memory_efficiency is None
    shapes = {"x": (2, 64, 256)}
    measured, = estimate_models(models["mm"], ["H100-SXM"], shapes=shapes)
    default, = estimate_models(models["mm"], ["H100-SXM"], shapes=shapes,
                               options=EstimateOptions(memory_efficiency=0.8 + 1e-9))
    assert "0.89 of peak bandwidth" in measured.method
    # a higher DRAM cap only shortens the memory time of each kernel, never the compute time
    pairs = list(zip(measured.kernels, default.kernels, strict=True))
    assert all(a.ms <= b.ms for a, b in pairs)
    assert any(a.ms < b.ms for a, b in pairs if a.bytes > 0)
    assert measured.latency_ms < default.latency_ms
    # the options' own default is what rows without a measurement use
    assert EstimateOptions().for_gpu(None).memory_efficiency == MEMORY_EFFICIENCY
    assert EstimateOptions(memory_efficiency=0.5).for_gpu(0.89).memory_efficiency == 0.5
