"""Independent re-derivations of the published calibration algorithms (slow, loop based).

Written from the algorithm description in docs/tensorrt_rules.md#entropy-calibration, not from
quantkit's code, so that tests compare quantkit against something that can disagree with it.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import entropy


def kl_reference(counts: np.ndarray, start_bin: int = 128, levels: int = 128) -> list[float]:
    bins = np.array(counts, dtype=np.int64)
    bins[0] = bins[1]
    out = []
    for i in range(start_bin, len(bins) + 1):
        space = np.linspace(0, i, num=levels + 1)
        dig = np.digitize(range(i), space) - 1
        dig[bins[:i] == 0] = -1
        level_sum = np.zeros(levels)
        level_n = np.zeros(levels)
        for j in range(i):
            if dig[j] != -1:
                level_sum[dig[j]] += bins[j]
                level_n[dig[j]] += 1
        q = np.zeros(i)
        for j in range(i):
            if dig[j] != -1:
                q[j] = level_sum[dig[j]] / level_n[dig[j]]
        p = np.array(bins[:i])
        p[-1] += bins[i:].sum()
        out.append(float(entropy(p, q)))
    return out


def entropy_amax_reference(counts: np.ndarray, width: float) -> float:
    kl = np.array(kl_reference(counts))
    ok = ~np.isnan(kl)
    idx = np.flatnonzero(ok)
    vals = kl[ok]
    last_min = idx[len(vals) - 1 - int(np.argmin(vals[::-1]))]
    return float(np.float32((last_min + 128) * width))


def mse_amax_reference(counts: np.ndarray, width: float, start_bin: int = 128) -> float:
    n = len(counts)
    edges = np.array([np.float32(k * width) for k in range(n + 1)], dtype=np.float32)
    centers = (edges[1:] + edges[:-1]) / np.float32(2)
    best, best_c = None, 0.0
    for i in range(start_bin, n):
        amax = centers[i]
        scale = np.float32(127) / amax
        q = np.clip(np.round(centers * scale), -127, 127) / scale
        err = float(np.mean(((q - centers).astype(np.float64)) ** 2 * counts))
        if best is None or err < best:
            best, best_c = err, float(centers[i])
    return best_c


def percentile_amax_reference(values: np.ndarray, hi0: float, percentile: float) -> float:
    """Percentile of |x| from a histogram built by plain sorting into bins of width hi0/2048."""
    a = np.abs(values.astype(np.float32))
    width = hi0 / 2048
    idx = np.floor(a.astype(np.float64) / width).astype(np.int64)
    counts = np.bincount(idx)
    cdf = np.cumsum(counts) / counts.sum()
    k = int(np.searchsorted(cdf, percentile / 100))
    return float(np.float32(k * width))
