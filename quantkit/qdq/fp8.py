"""FP8 (E4M3) specifics of the Q/DQ writer and the checks around FP8 models.

FP8 Q/DQ as TensorRT takes it (docs/fp8.md, docs/tensorrt_rules.md#fp8):

* ``QuantizeLinear``/``DequantizeLinear`` with a float scale and a ``FLOAT8E4M3FN`` zero point
  of 0, so the model needs opset 19 (the first with FP8 types);
* activations per tensor, ``scale = amax / 448`` (448 = the largest finite E4M3 value) with the
  amax of the same calibrators as INT8;
* weights per output channel (the axis INT8 uses), ``scale = max|w| / 448``, stored as
  ``FLOAT8E4M3FN`` initializers followed by a ``DequantizeLinear``. TensorRT-RTX 1.7 builds
  per-tensor FP8 weights too, and folds a per-tensor scale into the convolution where a
  per-channel one costs an epilogue kernel; but per tensor, the small channels of a
  folded-BatchNorm convolution (EfficientNet-Lite0: channel ranges differ by a factor of 5e6
  in the median convolution, up to 1e13 in depthwise ones) fall into E4M3's subnormals or to 0
  (all-FP8 EfficientNet-Lite0: 4.9 dB logit SQNR per tensor, 7.6 dB per channel);
* Conv, Gemm and MatMul only (:data:`quantkit.qdq.rules.FP8_OPS`), and never INT8 on one input
  and FP8 on the other (the TensorRT-RTX builder fails on that);
* only GPUs of compute capability 8.9 or later (Ada, Hopper, Blackwell) run it:
  :func:`check_fp8_targets` refuses older targets before anything is built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from quantkit.errors import InputError
from quantkit.graph import upgrade_opset
from quantkit.qdq.scales import weight_scale

logger = logging.getLogger(__name__)

#: largest finite FLOAT8E4M3FN value: FP8 scales are ``amax / FP8_MAX``.
FP8_MAX = 448.0
#: the first opset whose QuantizeLinear/DequantizeLinear take FP8 types.
FP8_OPSET = 19
#: onnx element types of FP8 (E4M3FN is the one TensorRT takes; the others it rejects).
FP8_TYPES = frozenset({TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ,
                       TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ})
#: TensorRT / TensorRT-RTX compute capabilities without FP8 tensor math.
NO_FP8_TARGETS = frozenset({"SM70", "SM72", "SM75", "SM80", "SM86", "SM87"})


def to_e4m3(values: np.ndarray) -> np.ndarray:
    """``values`` (already divided by their scale) as an ``ml_dtypes.float8_e4m3fn`` array.

    Saturates at +-448 (as QuantizeLinear does with ``saturate=1``) and rounds half to even.
    """
    import ml_dtypes  # an onnx dependency; imported here to keep ``import quantkit`` light

    clipped = np.clip(values.astype(np.float32), -FP8_MAX, FP8_MAX)
    return np.asarray(clipped.astype(ml_dtypes.float8_e4m3fn))


def quantize_weight_fp8(w: np.ndarray, name: str, axis: int | None = None,
                        min_scale: float = 0.0) -> tuple[onnx.TensorProto, np.ndarray]:
    """A float weight as an FP8 E4M3 initializer ``name``, ``scale = max(max|w|/448, min)``.

    Per channel on ``axis`` (the output channels, as for INT8) or per tensor (``axis=None``).
    An all-zero weight (channel) gets scale 1. ``min_scale`` keeps scales that will be stored
    as FP16 (``default_float: fp16``) out of FP16's subnormals; values are quantized with the
    raised scale.

    Returns:
        ``(FLOAT8E4M3FN TensorProto, float32 scales: shape () per tensor, [C] per channel)``.
    """
    w32 = w.astype(np.float32)
    scale, shape = weight_scale(w32, axis, FP8_MAX, min_scale)
    return numpy_helper.from_array(to_e4m3(w32 / scale.reshape(shape)), name), scale


def fp8_zero_point(name: str, shape: tuple[int, ...] = ()) -> onnx.TensorProto:
    """The ``FLOAT8E4M3FN`` zero point 0 of an FP8 Q/DQ (scalar, or one per channel)."""
    return numpy_helper.from_array(to_e4m3(np.zeros(shape, dtype=np.float32)), name)


def fp8_scale(amax: float) -> float:
    """The FP8 scale of an activation with calibrated ``amax`` (``amax / 448``)."""
    return amax / FP8_MAX


def upgrade_for_fp8(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """``model`` at opset >= 19, as FP8 Q/DQ needs.

    Raises:
        InputError: the model is below opset 19 and onnx's version converter cannot convert it.
    """
    try:
        return upgrade_opset(model, FP8_OPSET, source)
    except InputError as err:
        raise InputError(f"{err} FP8 Q/DQ needs opset {FP8_OPSET} (the first with FP8 types); "
                         "re-export the model at opset >= 19, or plan int8 instead of fp8."
                         ) from None


def fp8_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes of ``model`` that read or write an FP8 tensor (main graph)."""
    fp8 = {t.name for t in model.graph.initializer if t.data_type in FP8_TYPES}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in FP8_TYPES:
                    fp8.update(node.output)
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in fp8:
            fp8.update(node.output)
    typed = {vi.name for vi in (*model.graph.value_info, *model.graph.input,
                                *model.graph.output)
             if vi.type.tensor_type.elem_type in FP8_TYPES}
    fp8 |= typed
    return [n.name or n.op_type for n in model.graph.node
            if any(t in fp8 for t in (*n.input, *n.output))]


def _normalise_target(text: str) -> str:
    key = text.strip().upper().replace("_", "").replace(".", "")
    return key if key.startswith("SM") or key == "CURRENT" else f"SM{key}"


def check_fp8_targets(model: str | Path | onnx.ModelProto, targets: Iterable[str], *,
                      parameter: str = "compute_capabilities") -> None:
    """Refuse to build an FP8 model for a target without FP8 (before SM89), before building.

    Args:
        model: the ONNX model or its path (external data is not loaded).
        targets: compute capabilities (``SM86``, ``8.6``, ``86``...); unknown names pass (the
            builder reports them).
        parameter: the name of the parameter the targets came from, for the message (the
            command line shows its flag).

    Raises:
        InputError: ``model`` has FP8 Q/DQ and a target is Turing/Ampere; the message names an
            FP8 node and the fix.
    """
    names = [t for t in targets if _normalise_target(t) in NO_FP8_TARGETS]
    if not names:
        return
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except Exception:  # a missing or unreadable model is the builder's to report
            return
    nodes = fp8_nodes(proto)
    if not nodes:
        return
    where = "the model" if isinstance(model, onnx.ModelProto) else str(model)
    raise InputError(
        f"{where} has FP8 (E4M3) Q/DQ (e.g. node '{nodes[0]}', {len(nodes)} FP8 nodes) but "
        f"{parameter}={','.join(names)} has no FP8 tensor math: FP8 needs "
        "compute capability 8.9 or later (Ada SM89, Hopper, Blackwell SM120); TensorRT-RTX "
        "refuses the build (\"model contains HW-specific datatypes: fp8_e4m3\"). Build for "
        "SM89 / SM120, or quantize with int8 instead of fp8 for this GPU.")


__all__ = ["FP8_MAX", "FP8_OPSET", "FP8_TYPES", "NO_FP8_TARGETS", "check_fp8_targets",
           "fp8_nodes", "fp8_scale", "fp8_zero_point", "quantize_weight_fp8", "to_e4m3",
           "upgrade_for_fp8"]
