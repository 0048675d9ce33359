"""``auto`` calibration: per tensor, the candidate amax with the least expected INT8 error.

Each tensor's |x| histogram (the one entropy, percentile and mse read) proposes four
candidate amaxes -- the entropy (KL) threshold, the 99.99th percentile, the MSE-optimal bin
centre and the maximum (the right edge of the last non-empty bin) -- and the candidate with the
smallest expected squared error of INT8 quantize-dequantize over the histogram's distribution
wins. The error model (see ``docs/calibration_methods.md``) takes the values of each bin as
spread evenly over it (``SUBSAMPLES`` points per bin), quantizes them with
``scale = amax / 127`` (round half to even, clamp to ``[-127, 127]``, float32 as the reference
methods) and weighs the squared error by the bin's count. Clipping error and rounding error are
thus counted in the same units, so a heavy tail that carries many values keeps its range, and a
few isolated outliers are clipped.

A clipped value's squared error counts :data:`CLIP_WEIGHT` (4) times a rounded value's. Rounding
errors are zero-mean and nearly independent from value to value, so the weighted sum a consumer
layer computes averages them (they add in quadrature); clipping errors all pull values towards
zero with the values' own sign and come in runs (the same channels, neighbouring positions), so
they add with the same sign inside a consumer's window -- up to ``k*k`` times more output error
for a ``k x k`` kernel (9 for 3x3) than the same input MSE spread as rounding noise. 4 sits in
that range; on the project's five models it raised every model's headline metric over plain
MSE (``benchmarks/RESULTS.md``, "Default calibration method").

Candidates whose expected error is within :data:`TIE_TOLERANCE` (1 %) of the least count as
tied, and the largest amax among them wins: the estimate from a 2048-bin histogram is not finer
than that, and between two equally good thresholds the one that clips less is the safer one
(clipping is the failure that breaks models, rounding noise the one they tolerate).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantkit.calibrators.entropy import entropy_amax
from quantkit.calibrators.mse import mse_amax
from quantkit.calibrators.percentile import percentile_amax

#: points per histogram bin at which the quantisation error is evaluated.
SUBSAMPLES = 8
#: percentile of the percentile candidate (the ``percentile`` method's default).
AUTO_PERCENTILE = 99.99
#: relative margin within which two expected errors count as equal (the larger amax wins).
TIE_TOLERANCE = 0.01
#: how many times a clipped value's squared error counts against a rounded value's.
CLIP_WEIGHT = 4.0
#: names of the candidates, in the order they are proposed.
CANDIDATES = ("entropy", "percentile", "mse", "max")


def expected_error(counts: npt.ArrayLike, width: float, amax: float, num_bits: int = 8,
                   subsamples: int = SUBSAMPLES, clip_weight: float = CLIP_WEIGHT) -> float:
    """Expected (clipping-weighted) squared INT8 quantisation error of a |x| histogram.

    Args:
        counts: histogram counts; bin ``i`` spans ``[i * width, (i + 1) * width)``.
        width: bin width.
        amax: the clipping threshold (``scale = amax / (2**(num_bits-1) - 1)``).
        num_bits: signed integer bits.
        subsamples: evenly spaced points per bin standing for its values.
        clip_weight: factor on the squared error of clipped points (those beyond ``amax``);
            1 gives the plain mean squared error.

    Returns:
        The mean over all counted values of ``(q(x) - x)**2``, clipped points weighted by
        ``clip_weight``; ``inf`` for ``amax <= 0`` when the histogram has a non-zero value.
    """
    hist = np.asarray(counts, dtype=np.float64)
    total = hist.sum()
    if total == 0 or width <= 0:
        return 0.0
    if not amax > 0:
        return float("inf")
    bound = np.float32((1 << (num_bits - 1)) - 1)
    offsets = (np.arange(subsamples, dtype=np.float64) + 0.5) / subsamples
    nz = np.flatnonzero(hist)
    x = ((nz[:, None] + offsets[None, :]) * width).astype(np.float32)
    scale = bound / np.float32(amax)
    q = np.clip(np.round(x * scale), -bound, bound) / scale
    sq = (q - x).astype(np.float64) ** 2
    err = np.where(x > np.float32(amax), sq * clip_weight, sq).mean(axis=1)
    return float((err * hist[nz]).sum() / total)


def candidate_amaxes(counts: npt.ArrayLike, width: float) -> dict[str, float]:
    """``{candidate name: amax}`` proposed by a histogram (see :data:`CANDIDATES`)."""
    hist = np.asarray(counts, dtype=np.int64)
    if not hist.any() or width <= 0:
        return {name: 0.0 for name in CANDIDATES}
    top = float(np.float32((int(np.flatnonzero(hist)[-1]) + 1) * width))
    out = {
        "entropy": entropy_amax(hist, width),
        "percentile": percentile_amax(hist, width, AUTO_PERCENTILE),
        "mse": mse_amax(hist, width),
        "max": top,
    }
    # a candidate of 0 (a histogram too short for the method, or all mass in bin 0) falls back
    # to the maximum, which quantizes every value without clipping
    return {k: (v if v > 0 else top) for k, v in out.items()}


def auto_choice(counts: npt.ArrayLike, width: float,
                tolerance: float = TIE_TOLERANCE) -> tuple[str, float]:
    """The candidate with the least :func:`expected_error` and its amax.

    Candidates within ``tolerance`` (relative) of the least error are tied; the largest amax
    among them wins, then the earlier candidate in :data:`CANDIDATES`.
    """
    cands = candidate_amaxes(counts, width)
    if not any(cands.values()):
        return "max", 0.0
    errors = {name: expected_error(counts, width, amax) for name, amax in cands.items()}
    least = min(errors.values())
    tied = [name for name in CANDIDATES if errors[name] <= least * (1 + tolerance)]
    name = max(tied, key=lambda n: (cands[n], -CANDIDATES.index(n)))
    return name, cands[name]
