"""What the real-model recipes share.

Running a (Q/DQ) model with ONNX Runtime *the way TensorRT computes it*, parsing and building
it with TensorRT-RTX on the CPU, and a per-layer sensitivity scan. Used by each model's folder
(:mod:`recipes.efficientnet_lite0`, :mod:`recipes.ppocr`, :mod:`recipes.minilm`), the
benchmarks and the tests.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def ort_session(model: Any, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session that simulates TensorRT's numerics for Q/DQ models.

    ``session.disable_quant_qdq = 1`` keeps ONNX Runtime from fusing ``DequantizeLinear ->
    Conv -> QuantizeLinear`` into its own integer kernels; each DQ/Q then runs as written
    (fake quantization in float), which is what TensorRT's INT8 kernels compute up to float
    rounding (int32 accumulation is exact). Measured on this 2-core AVX2 CPU (no VNNI):

    * with ONNX Runtime's default fusions, EfficientNet-Lite0 INT8 agreed with FP32 on 54% of
      views instead of 94%: its x86 U8S8 kernels (``VPMADDUBSW``) saturate int16 partial sums
      (ONNX Runtime's docs recommend ``reduce_range`` for that);
    * an INT8 + FP16 model gave 0% agreement (infinite activations): its QDQ bias-quantization
      rewrite divides the FP32 bias by ``input_scale * weight_scale`` computed in FP16, which
      underflows to 0 for near-zero weight channels.

    Args:
        model: a path or a ``ModelProto``.
        threads: intra-op threads (default: ONNX Runtime's choice).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    if threads:
        opts.intra_op_num_threads = threads
    payload = model if isinstance(model, (str, bytes, os.PathLike)) else model.SerializeToString()
    if isinstance(payload, os.PathLike):
        payload = os.fspath(payload)
    return ort.InferenceSession(payload, sess_options=opts, providers=["CPUExecutionProvider"])


def run_batched(session: Any, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run a single-input, single-output session over ``inputs`` in batches, as float32."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: inputs[i: i + batch_size]})[0]
            for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``output`` against ``reference``, in dB."""
    ref = reference.astype(np.float64)
    noise = float(((ref - output.astype(np.float64)) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10((ref ** 2).sum() / noise))


_COMPUTE_LAYERS = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")


def _rtx_network(path: str | os.PathLike[str]) -> tuple[Any, Any, Any, float]:
    import tensorrt_rtx_bindings as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT-RTX: always strongly typed
    parser = trt.OnnxParser(network, logger)
    start = time.perf_counter()
    ok = parser.parse_from_file(os.fspath(path))
    seconds = time.perf_counter() - start
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT-RTX rejected {path}: {errors}")
    return builder, network, parser, seconds


def rtx_parse(path: str | os.PathLike[str]) -> tuple[dict[str, str], float]:
    """Parse with TensorRT-RTX: ``({layer name: int8|fp16|fp32}, parse seconds)``.

    The rule of ``tests/_rtx.py`` (docs/tensorrt_rules.md#precision-as-the-builder-sees-it): a
    Conv/Deconv/MatMul layer is INT8 when its data and weight inputs come from DEQUANTIZE layers
    of INT8 tensors; otherwise the type of its first float input. Producers are indexed once
    (the OCR models have 1,200-1,700 layers). A DQ output reached through
    Shuffle/Squeeze/Unsqueeze/Identity layers (the parser broadcasts 2-D MatMul weights with a
    Shuffle) still counts as coming from the DQ.
    """
    _, network, _, seconds = _rtx_network(path)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    from_int8_dq: dict[str, bool] = {}
    for layer in layers:  # layers come in topological order: producers first
        kind = str(layer.type).split(".")[-1]
        first = layer.get_input(0) if layer.num_inputs else None
        if kind == "DEQUANTIZE":
            is_dq = str(layer.get_input(0).dtype).endswith("INT8")
        elif kind in ("SHUFFLE", "SQUEEZE", "UNSQUEEZE", "IDENTITY") and first is not None:
            is_dq = from_int8_dq.get(first.name, False)  # a broadcast weight stays INT8
        else:
            is_dq = False
        for k in range(layer.num_outputs):
            from_int8_dq[layer.get_output(k).name] = is_dq
    out: dict[str, str] = {}
    for layer in layers:
        ins = [layer.get_input(k) for k in range(layer.num_inputs)]
        dq = [t is not None and from_int8_dq.get(t.name, False) for t in ins]
        if str(layer.type).split(".")[-1] in _COMPUTE_LAYERS and len(dq) >= 2 and all(dq[:2]):
            out[layer.name] = "int8"
            continue
        floats = [str(t.dtype).split(".")[-1] for t in ins if t is not None]
        floats = [f for f in floats if f in ("FLOAT", "HALF")]
        out[layer.name] = "fp16" if floats and floats[0] == "HALF" else "fp32"
    return out, seconds


def rtx_build(path: str | os.PathLike[str],
              shapes: dict[str, tuple[tuple[int, ...], ...]]) -> tuple[int, float]:
    """Build a TensorRT-RTX engine with one optimisation profile ``{input: (min, opt, max)}``.

    Returns ``(engine bytes, build seconds)``; raises ``RuntimeError`` if the build fails.
    """
    builder, network, _, _ = _rtx_network(path)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if engine is None:
        raise RuntimeError(f"TensorRT-RTX could not build {path}")
    return int(engine.nbytes), seconds


def layer_sensitivity(model: Any, scales: Any, inputs: np.ndarray,
                      op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul"),
                      batch_size: int = 32) -> dict[str, float]:
    """Output SQNR (dB, vs FP32) with *only* that layer in INT8, for every quantizable layer.

    The lower the SQNR, the more that one layer's INT8 error costs: the first candidates to
    keep in FP16 in a mixed plan. Sorted worst first. Each layer is a full quantize + ONNX
    Runtime run on ``inputs``, so keep ``inputs`` small (a hundred images).

    Args:
        model: the FP32 ``ModelProto``.
        scales: its calibration :class:`~quantkit.calibrators.cache.ScaleTable`.
        inputs: a batch for the model's single input.
        op_types: which layers to scan.
        batch_size: inference batch size.
    """
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import plan_model, prepare, quantize_model

    ref = run_batched(ort_session(model), inputs, batch_size)
    prepared = prepare(model, fp16=False, source="model.onnx")
    plan = plan_model(prepared, PrecisionConfig())
    names = [n.name for n in plan.nodes.values()
             if n.op_type in op_types and n.precision == "int8"]
    out = {}
    for name in names:
        config = PrecisionConfig.from_mapping(
            {"default": "fp32", "overrides": [{"name": name, "precision": "int8"}]})
        quantized = quantize_model(model, scales, config).model
        out[name] = sqnr_db(ref, run_batched(ort_session(quantized), inputs, batch_size))
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def default_cache() -> Path:
    """Where the ``__main__`` measurement scripts keep exported models (pytest's cache)."""
    return Path(__file__).resolve().parents[1] / ".pytest_cache" / "d" / "quantkit-real-models"


__all__ = ["default_cache", "layer_sensitivity", "ort_session", "rtx_build", "rtx_parse",
           "run_batched", "sqnr_db"]
