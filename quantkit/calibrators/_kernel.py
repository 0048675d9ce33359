"""Optional compiled binning kernel (numba), bit-identical to the numpy path of ``histogram``.

The numpy path bins a chunk with five array passes (divide, abs, max, float->int cast,
``bincount``, which converts its input to ``intp`` and scans it for its min/max first). The
kernel here does the same float32 arithmetic in one loop per value: ``q = |x / width|``
(IEEE float32 division, as numpy's), ``int(q)`` truncation, the first range's top value to the
last base bin, the coarsening shift, and the range check that makes the caller fall back to
the general path. Counts are therefore identical (tested against the numpy path and the
reference formula); only the CPU time differs (``benchmarks/RESULTS.md``).

numba is an optional dependency (``pip install 'quantkit[fast]'``). It is imported the first
time a histogram is filled, never by ``import quantkit``. ``QUANTKIT_HISTOGRAM_KERNEL`` selects
the path: ``auto`` (default: numba when importable), ``numpy``, or ``numba`` (an error when
numba is missing).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

ENV = "QUANTKIT_HISTOGRAM_KERNEL"
_CHOICES = ("auto", "numpy", "numba")

#: ``kernel(flat, width, limit, base, base_bins, coarsen, acc) -> bool``: add the bins of
#: ``flat`` to ``acc`` and return True, or return False (``acc`` partly filled: discard it) at
#: the first value that is NaN or does not fit below ``limit``.
Kernel = Callable[[npt.NDArray[np.float32], np.float32, np.float32, np.float32, int, int,
                   npt.NDArray[np.int64]], bool]

_lock = threading.Lock()
_cache: dict[str, Kernel | None] = {}


def _build() -> Kernel:
    import numba

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

    @numba.njit(nogil=True, inline="always")
    def one_bin(x: Any, inv: Any, width: Any, limit: Any, base: Any, last: int,
                coarsen: int) -> Any:
        # A multiplication is several times cheaper than a division. |x| * fl(1/w) is within
        # 2**-22 (relative) of the exact quotient fl(|x| / w), so both have the same integer
        # part unless the product lies within 2**-20 (relative) of an integer. Those values,
        # and NaN, inf, values past the bins and the top value B (an integer), take the exact
        # division: the bins are the division's, bit for bit.
        m = abs(x) * inv
        if m < limit:
            fl = np.floor(m)
            f = m - fl  # exact
            # t <= f <= 1 - t, i.e. no integer within t = m * 2**-20 of m
            if abs(f - np.float32(0.5)) <= np.float32(0.5) - m * np.float32(2.0 ** -20):
                return np.int64(fl) >> coarsen
        return exact_bin(x, width, limit, base, last, coarsen)

    def bin_abs(flat: Any, width: Any, limit: Any, base: Any, base_bins: int, coarsen: int,
                acc: Any) -> bool:
        last = (base_bins - 1) >> coarsen
        inv = np.float32(1.0) / width
        n = acc.size
        # four interleaved sub-histograms: a run of values in one bin (the zeros after a
        # ReLU) would otherwise serialise on one counter's store -> load latency
        sub = np.zeros(4 * n, dtype=np.int64)
        stop = flat.size - flat.size % 4
        for j in range(0, stop, 4):
            b0 = one_bin(flat[j], inv, width, limit, base, last, coarsen)
            b1 = one_bin(flat[j + 1], inv, width, limit, base, last, coarsen)
            b2 = one_bin(flat[j + 2], inv, width, limit, base, last, coarsen)
            b3 = one_bin(flat[j + 3], inv, width, limit, base, last, coarsen)
            if b0 < 0 or b1 < 0 or b2 < 0 or b3 < 0:
                return False
            sub[b0] += 1
            sub[n + b1] += 1
            sub[2 * n + b2] += 1
            sub[3 * n + b3] += 1
        for j in range(stop, flat.size):
            b = one_bin(flat[j], inv, width, limit, base, last, coarsen)
            if b < 0:
                return False
            sub[b] += 1
        for k in range(n):
            acc[k] += sub[k] + sub[n + k] + sub[2 * n + k] + sub[3 * n + k]
        return True

    sig = "boolean(float32[::1], float32, float32, float32, int64, int64, int64[::1])"
    compiled = numba.njit(sig, nogil=True, cache=True, boundscheck=False)(bin_abs)
    return compiled


def kernel_choice() -> str:
    """The ``QUANTKIT_HISTOGRAM_KERNEL`` setting, validated."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise InputError(f"{ENV}={choice!r}: choose one of {', '.join(_CHOICES)}.")
    return choice


def get_kernel() -> Kernel | None:
    """The compiled kernel, or None when the numpy path is to be used."""
    choice = kernel_choice()
    if choice == "numpy":
        return None
    with _lock:
        if choice not in _cache:
            try:
                _cache[choice] = _build()
            except ImportError as exc:
                if choice == "numba":
                    raise InputError(
                        f"{ENV}=numba but numba is not importable ({exc}). Install it with "
                        "pip install 'quantkit[fast]', or unset the variable."
                    ) from exc
                logger.debug("numba not available (%s): histograms binned with numpy", exc)
                _cache[choice] = None
            except Exception as exc:  # a broken numba/llvmlite install must not stop work
                if choice == "numba":
                    raise
                logger.warning("numba kernel could not be compiled (%s: %s); histograms are "
                               "binned with numpy", type(exc).__name__, exc)
                _cache[choice] = None
        return _cache[choice]
