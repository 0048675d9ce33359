"""The numba binning kernel (imported only by ``_kernel.get_kernel``; see there).

Module-level functions, so that numba's on-disk cache (``cache=True``) is reused by later
processes instead of compiling again (about 2 s).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(nogil=True, inline="always")
def exact_bin(x: Any, width: Any, limit: Any, base: Any, last: int, coarsen: int) -> Any:
    q = abs(x / width)  # float32 / float32 -> float32, as np.divide
    if q < limit:
        if q == base:  # the first range's top value: last base bin (histc)
            return last
        return np.int64(q) >> coarsen
    if q == base:  # limit == base: an ungrown histogram's top value
        return last
    return -1  # NaN, inf or beyond the current bins


_CHUNK = 2048  # values per block: the block's bin indices stay in L1


@numba.njit("boolean(float32[::1], float32, float32, float32, int64, int64, int64[::1])",
           nogil=True, cache=True, boundscheck=False)
def bin_abs(flat: Any, width: Any, limit: Any, base: Any, base_bins: int, coarsen: int,
            acc: Any) -> bool:
    last = (base_bins - 1) >> coarsen
    inv = np.float32(1.0) / width
    half = np.float32(0.5)
    tol = np.float32(2.0 ** -20)
    n = acc.size
    # four interleaved sub-histograms: a run of values in one bin (the zeros after a ReLU)
    # would otherwise serialise on one counter's store -> load latency
    sub = np.zeros(4 * n, dtype=np.int64)
    idx = np.empty(_CHUNK, dtype=np.int32)
    for lo in range(0, flat.size, _CHUNK):
        size = min(_CHUNK, flat.size - lo)
        # Pass 1, branch-free (vectorised): a multiplication is several times cheaper than a
        # division. m = |x| * fl(1/w) is within 2**-22 (relative) of the exact quotient
        # fl(|x| / w), so both have the same integer part unless m lies within 2**-20
        # (relative) of an integer. Those values get -1 here, as do NaN, inf and values past
        # the bins (and the top value B, an integer), and take the exact division in pass 2:
        # the bins are the division's, bit for bit.
        for j in range(size):
            m = abs(flat[lo + j]) * inv
            mm = min(m, limit)  # NaN -> limit: keeps the int32 conversion defined
            i = np.int32(mm)
            f = mm - np.float32(i)
            good = (abs(f - half) <= half - mm * tol) & (m < limit)
            idx[j] = (i >> coarsen) if good else -1
        # Pass 2: count.
        stop = size - size % 4
        for j in range(0, stop, 4):
            if (idx[j] | idx[j + 1] | idx[j + 2] | idx[j + 3]) < 0:
                for k in range(j, j + 4):
                    if idx[k] < 0:
                        b = exact_bin(flat[lo + k], width, limit, base, last, coarsen)
                        if b < 0:
                            return False
                        idx[k] = b
            sub[idx[j]] += 1
            sub[n + idx[j + 1]] += 1
            sub[2 * n + idx[j + 2]] += 1
            sub[3 * n + idx[j + 3]] += 1
        for j in range(stop, size):
            b = idx[j]
            if b < 0:
                b = exact_bin(flat[lo + j], width, limit, base, last, coarsen)
                if b < 0:
                    return False
            sub[b] += 1
    for k in range(n):
        acc[k] += sub[k] + sub[n + k] + sub[2 * n + k] + sub[3 * n + k]
    return True
