"""Entropy (KL-divergence) calibration, as TensorRT / pytorch-quantization / ModelOpt do it.

The reference (``_compute_amax_entropy`` in pytorch-quantization 2.1.3 and ModelOpt, see
``docs/tensorrt_rules.md#entropy-calibration``) works on the |x| histogram:

* ``bins[0] = bins[1]`` (the zero bin is overwritten by bin 1);
* for every candidate ``i`` in ``128..nbins`` (inclusive): ``P = bins[:i]`` with the tail
  ``sum(bins[i:])`` added to ``P[i-1]``; ``Q = bins[:i]`` split into 128 levels by
  ``digitize(range(i), linspace(0, i, 129)) - 1`` (= ``j * 128 // i``), each level's sum spread
  evenly over its non-empty bins (empty bins stay 0); ``KL = scipy.stats.entropy(P, Q)``;
* the LAST minimum wins; ``amax = edges[i]``.

The reference loops in Python (~3 s per tensor). :func:`entropy_amax` computes the KL of every
candidate at once from prefix sums:

    KL_i = (sum_j P_j log P_j - sum_j P_j log Q_j) / N - log N + log S_i

with ``N = sum(bins)``, ``S_i = sum(bins[:i])``, ``sum_j P_j log Q_j = sum_l s_l log(s_l / n_l)
+ T_i log Q_{i-1}`` (``s_l``, ``n_l``: sum and non-empty count of level ``l``; ``T_i`` the tail).
Candidates within rounding distance of the minimum are then re-evaluated exactly as the
reference does (``scipy.stats.entropy`` on the same P and Q), so ties break as they do there.

Deliberate difference: a candidate whose ``bins[:i]`` are all empty has ``Q = 0`` and a NaN
divergence; the reference's argmin may return it and clip everything to the first non-empty
bin. Such candidates are skipped here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: quantisation levels on the positive side for signed INT8 (values -127..127).
NUM_LEVELS = 128
#: first candidate bin, as in the reference.
START_BIN = 128
_CHUNK = 1024  # candidates per vectorised block: bounds temporary memory to a few MiB


def _xlogx(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(v)
    pos = v > 0
    out[pos] = v[pos] * np.log(v[pos])
    return out


def kl_divergences(counts: npt.ArrayLike, start_bin: int = START_BIN,
                   num_levels: int = NUM_LEVELS) -> tuple[npt.NDArray[np.int64],
                                                          npt.NDArray[np.float64]]:
    """KL divergence of every candidate threshold of a histogram (vectorised).

    Args:
        counts: histogram counts of |x| (bin 0 is overwritten by bin 1 here, as in the reference).
        start_bin: first candidate.
        num_levels: quantisation levels.

    Returns:
        ``(candidates, kl)``: candidate bin counts ``i`` and their divergences (``nan`` where
        ``Q`` is empty, ``inf`` where ``P`` has mass that ``Q`` lacks).
    """
    b = np.array(counts, dtype=np.int64)
    nb = len(b)
    if nb < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    b[0] = b[1]
    total = float(b.sum())
    cand = np.arange(min(start_bin, nb), nb + 1, dtype=np.int64)
    kl = np.full(len(cand), np.nan)
    if total == 0:
        return cand, kl
    c = np.concatenate(([0], np.cumsum(b)))  # exact int64 prefix sums
    nz = np.concatenate(([0], np.cumsum(b > 0)))
    bl = np.concatenate(([0.0], np.cumsum(_xlogx(b.astype(np.float64)))))
    levels = np.arange(num_levels + 1, dtype=np.int64)
    for lo in range(0, len(cand), _CHUNK):
        i = cand[lo: lo + _CHUNK]
        # level l spans bins [ceil(l*i/L), ceil((l+1)*i/L)); linspace(0, i, L+1) is exact here.
        bounds = (levels[None, :] * i[:, None] + num_levels - 1) // num_levels
        s = (c[bounds[:, 1:]] - c[bounds[:, :-1]]).astype(np.float64)
        n = (nz[bounds[:, 1:]] - nz[bounds[:, :-1]]).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sum_q = np.where(s > 0, s * np.log(s / np.where(n > 0, n, 1.0)), 0.0).sum(axis=1)
            head = c[i].astype(np.float64)  # S_i = sum(bins[:i])
            tail = total - head
            last = b[i - 1].astype(np.float64)
            p_last = last + tail
            sum_p = bl[i - 1] + _xlogx(p_last)
            q_last = np.where(n[:, -1] > 0, s[:, -1] / np.where(n[:, -1] > 0, n[:, -1], 1.0), 0.0)
            cross = sum_q + np.where(tail > 0, tail * np.log(np.where(q_last > 0, q_last, 1.0)),
                                     0.0)
            val = (sum_p - cross) / total - np.log(total) + np.log(head)
        val = np.where((tail > 0) & (last == 0), np.inf, val)
        val = np.where(head > 0, val, np.nan)
        kl[lo: lo + _CHUNK] = val
    return cand, kl


def _reference_kl(b: npt.NDArray[np.int64], i: int, num_levels: int) -> float:
    """KL of one candidate computed exactly as the reference does (for near-ties)."""
    from scipy.stats import entropy

    head = b[:i]
    level = (np.arange(i, dtype=np.int64) * num_levels) // i
    nonzero = head != 0
    sums = np.bincount(level[nonzero], weights=head[nonzero].astype(np.float64),
                       minlength=num_levels)
    nums = np.bincount(level[nonzero], minlength=num_levels)
    q = np.zeros(i, dtype=np.float64)
    q[nonzero] = sums[level[nonzero]] / nums[level[nonzero]]
    p = head.copy()
    p[-1] += b[i:].sum()
    return float(entropy(p, q))


def entropy_amax(counts: npt.ArrayLike, width: float, start_bin: int = START_BIN,
                 num_levels: int = NUM_LEVELS) -> float:
    """TensorRT's entropy-calibrated amax of a |x| histogram.

    Args:
        counts: histogram counts; bin ``i`` spans ``[i * width, (i + 1) * width)``.
        width: bin width.
        start_bin: first candidate (128 in the reference).
        num_levels: quantisation levels (128 for signed INT8).

    Returns:
        ``edges[i]`` of the chosen candidate, 0.0 for an empty or all-zero histogram.
    """
    b = np.array(counts, dtype=np.int64)
    cand, kl = kl_divergences(b, start_bin, num_levels)
    valid = ~np.isnan(kl)
    if not valid.any() or width == 0:
        return 0.0
    best = np.min(kl[valid])
    if np.isfinite(best):
        tol = 1e-9 * max(1.0, abs(best)) + 1e-12
        near = np.flatnonzero(valid & (kl <= best + tol))
        if len(near) > 1:
            b_ref = b.copy()
            b_ref[0] = b_ref[1]
            exact = np.array([_reference_kl(b_ref, int(cand[k]), num_levels) for k in near])
            chosen = int(near[len(exact) - 1 - int(np.argmin(exact[::-1]))])
        else:
            chosen = int(near[0])
    else:  # every candidate infinite: the reference's last argmin picks the last one
        chosen = int(np.flatnonzero(valid)[-1])
    return float(np.float32(cand[chosen] * width))
