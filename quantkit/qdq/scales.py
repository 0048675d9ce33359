"""Symmetric weight scales shared by the INT8 and FP8 Q/DQ writers."""

from __future__ import annotations

import numpy as np

#: the smallest normal float32: a smaller (subnormal) scale is flushed to zero by fast-math
#: GPU code and refused by quantkit's linter (QK122), so weight scales never go below it
F32_TINY = float(np.finfo(np.float32).tiny)


def weight_scale(w32: np.ndarray, axis: int | None, qmax: float, min_scale: float = 0.0
                 ) -> tuple[np.ndarray, tuple[int, ...]]:
    """``max(max|w| / qmax, min_scale, F32_TINY)`` per channel on ``axis`` (per tensor if None).

    An all-zero weight (channel) gets scale 1. A channel whose largest value is below
    ``qmax * F32_TINY`` (a dead channel, 1e-40 seen in a real OCR model) gets the smallest
    normal scale: its values quantize to 0, which is what they are to float32 precision.

    Returns:
        The float32 scales (shape ``()`` per tensor, ``[C]`` per channel) and the shape that
        broadcasts them against ``w32``.
    """
    if axis is None:
        amax = np.array(np.abs(w32).max() if w32.size else 0.0, dtype=np.float32)
        shape: tuple[int, ...] = ()
    else:
        amax = np.abs(w32).max(axis=tuple(i for i in range(w32.ndim) if i != axis))
        shape = tuple(w32.shape[i] if i == axis else 1 for i in range(w32.ndim))
    scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    return np.maximum(scale, np.float32(max(min_scale, F32_TINY))), shape
