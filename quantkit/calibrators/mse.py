"""MSE calibration, as the pytorch-quantization reference computes it.

See ``docs/tensorrt_rules.md#other-calibration-methods``.

Candidates are the bin centres ``128 .. nbins-1`` (the last centre excluded). For each candidate
``c``, every centre is fake-quantised with scale ``127 / c`` (round half to even, clamped to
``[-127, 127]``, float32 as the reference) and the error is ``mean((q - centre)^2 * count)``;
the FIRST minimum wins. ModelOpt 0.47's ``compute_amax("mse")`` is broken (it always returns
centre 128), so this follows the algorithm, not that implementation.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

START_BIN = 128
_CHUNK = 256


def mse_amax(counts: npt.ArrayLike, width: float, start_bin: int = START_BIN,
             num_bits: int = 8) -> float:
    """Amax minimising the quantisation MSE of a |x| histogram.

    Args:
        counts: histogram counts; bin ``i`` spans ``[i * width, (i + 1) * width)``.
        width: bin width.
        start_bin: first candidate centre.
        num_bits: signed integer bits (8 -> levels -127..127).
    """
    hist = np.asarray(counts, dtype=np.int64)
    nb = len(hist)
    if nb <= start_bin or width == 0 or hist.sum() == 0:
        return 0.0
    edges = (np.arange(nb + 1, dtype=np.float64) * width).astype(np.float32)
    centers = (edges[1:] + edges[:-1]) / np.float32(2)
    bound = np.float32((1 << (num_bits - 1)) - 1)
    # empty bins add nothing to any candidate's error: sum over the non-empty ones only (a
    # histogram grown from a tiny first-batch range can have 10^5 bins and a few hundred
    # non-empty; over every bin that is O(bins^2), half an hour for one tensor)
    nz = np.flatnonzero(hist)
    xs = centers[nz][None, :]
    weights = hist[nz].astype(np.float64)[None, :]
    cand = np.arange(start_bin, nb)
    errors = np.empty(len(cand))
    for lo in range(0, len(cand), _CHUNK):
        amax = centers[cand[lo: lo + _CHUNK]][:, None]
        scale = bound / amax
        q = np.clip(np.round(xs * scale), -bound, bound) / scale
        diff = (q - xs).astype(np.float64)
        errors[lo: lo + _CHUNK] = (diff * diff * weights).sum(axis=1) / nb
    return float(centers[cand[int(np.argmin(errors))]])
