"""ONNX Runtime sessions, created one way for every stage (imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def default_providers() -> list[str]:
    """CUDA when ONNX Runtime has it, else CPU."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


def session(model: str | bytes, *, providers: Sequence[str] | None = None,
            threads: int | None = None, spin: bool = True, layout_transforms: bool = True,
            arena: bool = True, fp8: bool | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` with quiet logging and optional thread count.

    Args:
        model: path or serialized model.
        providers: execution providers (default: :func:`default_providers`).
        threads: intra-op threads (default: ONNX Runtime's).
        spin: let ONNX Runtime's idle intra-op threads spin-wait for the next parallel section
            (its default). Turn it off where the caller works between runs (calibration: the
            histogram threads need the CPUs that spinning threads would hold).
        layout_transforms: let ONNX Runtime convert convolutions to its blocked (NCHWc) layout.
            Off for activation capture: every captured tensor is an NCHW output anyway, and a
            consumer then runs the same kernel whether its input was computed in the same
            session or fed from another (a staged capture gives one pass's values).
        arena: keep freed memory in ONNX Runtime's arena for the next run (its default). Off
            where several sessions run in turn, so each one's peak returns to the system.
        fp8: whether the model stores FP8 initializers, if the caller knows (None: the
            serialized model is parsed once more to find out).

    Raises whatever ONNX Runtime raises; callers turn it into a message naming the model.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Run Q/DQ as written (fake quantisation in float). ONNX Runtime otherwise fuses Q/DQ into
    # its own integer kernels, whose U8S8 arithmetic saturates on CPUs without VNNI and whose
    # bias rewrite divides by FP16 scales: accuracy would describe ONNX Runtime's kernels, not
    # the model TensorRT builds (EfficientNet-Lite0 INT8 read 54.5 % agreement instead of 93.8).
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    # 1.32 mis-fuses Conv -> Relu -> FP8 Q above this level (docs/fp8.md)
    if _has_fp8(model) if fp8 is None else fp8:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not layout_transforms:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.enable_cpu_mem_arena = arena
    return ort.InferenceSession(model, sess_options=opts,
                                providers=list(providers or default_providers()))


def _has_fp8(model: str | bytes) -> bool:
    """Whether a model stores FP8 initializers (FP8 Q/DQ); external data is not loaded."""
    import onnx

    try:
        proto = (onnx.load_from_string(model) if isinstance(model, bytes)
                 else onnx.load(model, load_external_data=False))
    except Exception:  # ONNX Runtime reports an unreadable model itself
        return False
    return any(t.data_type in (17, 18, 19, 20) for t in proto.graph.initializer)
