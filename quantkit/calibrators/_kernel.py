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
the path: ``auto`` (default: numba when importable, for batches of at least
:data:`MIN_VALUES` values of a tensor), ``numpy``, or ``numba`` (always; an error when numba is
missing).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

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
    from quantkit.calibrators._numba_bins import bin_abs  # imports numba (compiles or loads)

    return bin_abs


def kernel_choice() -> str:
    """The ``QUANTKIT_HISTOGRAM_KERNEL`` setting, validated."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise InputError(f"{ENV}={choice!r}: choose one of {', '.join(_CHOICES)}.")
    return choice


#: the kernel's bin indices are int32: histograms whose ``len(counts) << coarsen`` reaches this
#: take the numpy path.
MAX_LIMIT = float(2**31 - 2**8)

#: smaller batches of one tensor take the numpy path: importing numba and loading the compiled
#: kernel costs about 1 s per process, which a small model's calibration would not earn back.
MIN_VALUES = 1 << 18


#: a run that will bin fewer values than this in all (:func:`expect_values`) stays on numpy
#: under ``auto``: the kernel saves about 1 ns per value, importing numba costs about 1 s
#: (several on a loaded machine), so 4x10^8 values (a 4-conv net on 1,024 CIFAR-sized
#: samples bins 10^8) would not earn the import back.
MIN_TOTAL_VALUES = 1 << 30

_expected: list[int | None] = [None]


def expect_values(total: int | None) -> None:
    """Tell ``auto`` how many values the current run will bin in all (None: unknown).

    Below :data:`MIN_TOTAL_VALUES` the numpy path is used unless the kernel is already
    loaded; at or above it the kernel starts loading in the background (:func:`preload`).
    The capture loop sets this after its first batch and clears it at the end.
    """
    _expected[0] = total
    if total is not None and total >= MIN_TOTAL_VALUES:
        preload()


def get_kernel(size: int | None = None) -> Kernel | None:
    """The compiled kernel, or None when the numpy path is to be used.

    Args:
        size: number of values about to be binned; below :data:`MIN_VALUES` the numpy path is
            used (under ``auto``), as for a whole run below :data:`MIN_TOTAL_VALUES`
            (:func:`expect_values`) while the kernel is not loaded yet.
    """
    choice = kernel_choice()
    if choice == "numpy" or (choice == "auto" and size is not None and size < MIN_VALUES):
        return None
    expected = _expected[0]
    if choice == "auto" and expected is not None and expected < MIN_TOTAL_VALUES \
            and _cache.get(choice) is None:
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


#: per-sample input values from which a capture loads the kernel in the background at once
PRELOAD_PER_SAMPLE = 1 << 14


def preload() -> threading.Thread | None:
    """Load the kernel in a background thread (numba's import and cache load take ~1 s).

    Called when a large calibration starts, so that the load overlaps the model loading and
    session creation instead of stalling the first histogram update. A no-op (None) under
    ``numpy``, when numba is not installed, or when the kernel is already loaded; errors are
    left to the first real :func:`get_kernel` call.
    """
    import importlib.util

    try:
        choice = kernel_choice()
    except InputError:
        return None
    if choice == "numpy" or choice in _cache or importlib.util.find_spec("numba") is None:
        return None

    def load() -> None:
        try:
            get_kernel()
        except Exception:  # reported by the first real call
            logger.debug("background kernel load failed", exc_info=True)

    thread = threading.Thread(target=load, name="quantkit-kernel-load")
    thread.start()
    return thread
