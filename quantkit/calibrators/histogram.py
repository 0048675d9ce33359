"""Streaming, mergeable histogram of |x|, binned as TensorRT's reference calibrator bins it.

The reference is ``HistogramCalibrator`` in pytorch-quantization 2.1.3 / ModelOpt (see
``docs/tensorrt_rules.md#entropy-calibration``):

1. The first batch fixes the range ``[0, hi0]`` with ``hi0 = max|x|`` and 2048 bins, so the bin
   width is ``w = hi0 / 2048``. A value goes to bin ``int(float32(float32(x * 2048) / hi0))``
   (``torch.histc``'s arithmetic) and the top value ``x == hi0`` goes to the last bin.
2. A later batch with a larger max grows the histogram, keeping ``w``; old counts stay in the
   first bins. From then on batches are binned over the grown range, so a value exactly at
   ``hi0`` goes to bin 2048 (the first bin past the old range), no longer to bin 2047.

Here the bin of a value is a function of ``(x, hi0)`` -- the same float32 formula, applied
beyond ``hi0`` too -- and of whether the histogram has grown (only for ``x == hi0``, as in the
reference), so histograms that share ``hi0`` merge exactly (zero-pad and add) and a sharded run
equals one sequential pass unless a shard holds values exactly at ``hi0`` and only some shards
grew (then those values may sit one bin apart, as they would in the reference with another
batch order). For batches that stay inside the first range this is
the reference's binning bit for bit; when the range grows, the reference re-bins the new batch
over ``[0, edges[-1]]`` with float32 edges and so agrees with an exact-width histogram only to
about one bin (documented in ``docs/tensorrt_rules.md#entropy-calibration``).

Two deliberate differences from the reference:

* An all-zero first batch (which crashes the reference: width 0) is counted as zeros and the
  width is taken from the first batch that has a non-zero value.
* The number of bins is capped (:data:`MAX_BINS`): a later outlier millions of times larger than
  the first batch's max would otherwise allocate an unbounded array. Past the cap, adjacent bins
  are merged pairwise (the width doubles), which every shard does identically, so merging stays
  exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from quantkit.calibrators import _kernel
from quantkit.errors import PipelineError

#: bins of the first batch's range, as in TensorRT / pytorch-quantization.
BASE_BINS = 2048
#: upper bound on the number of bins of one histogram (2 MiB of int64 counts).
MAX_BINS = 1 << 18
_CHUNK = 1 << 16  # elements per binning block (256 KiB of float32: stays in cache)

CountArray = npt.NDArray[np.int64]


_F32_MAX = float(np.finfo(np.float32).max)
#: bin indices are capped here (float32-exact); MAX_BINS coarsens long before it matters.
_INDEX_CAP = float(1 << 62)


def bin_indices(absx: npt.NDArray[np.float32], hi0: np.float32, base_bins: int,
                coarsen: int, top: float | None = None,
                top_in_last: bool = True) -> npt.NDArray[np.int64]:
    """Bin index of every value of ``absx`` (non-negative, finite float32).

    ``int(float32(float32(x * base_bins) / hi0))`` as ``torch.histc`` computes it, with the
    first range's top value in the last base bin, then divided by ``2**coarsen`` when the
    histogram has been coarsened.

    Two cases the reference does not handle are kept finite: when ``x * base_bins`` overflows
    float32 (``|x| > 1.6e35`` with 2048 bins; the reference gets ``inf``) the batch is binned
    in float64, and indices are capped at ``2**62`` (a range ratio no histogram can hold:
    :data:`MAX_BINS` coarsens long before).

    Args:
        absx: the values.
        hi0: the first range's top.
        base_bins: bins of the first range.
        coarsen: log2 of the coarsening factor.
        top: ``absx.max()`` if known.
        top_in_last: put a value exactly at ``hi0`` into the last base bin (``histc`` over
            ``[0, hi0]``); False once the histogram has grown (the reference then bins over
            the grown range, where ``hi0`` is the left edge of bin ``base_bins``).
    """
    if top is None:
        top = float(absx.max()) if absx.size else 0.0
    if top * base_bins >= _F32_MAX:
        q: np.ndarray = absx.astype(np.float64) * base_bins / float(hi0)
    else:
        q = (absx * np.float32(base_bins)) / hi0  # float32 arithmetic, as the reference
    q = np.minimum(q, _INDEX_CAP)
    idx = q.astype(np.int64)
    # histc puts x == max into the last bin; beyond the first range bins are left-closed.
    if top_in_last:
        idx[q == np.float32(base_bins)] = base_bins - 1
    if coarsen:
        idx >>= coarsen
    return idx


def _kernel_bins(flat: npt.NDArray[np.float32], width: np.float32, limit: float,
                 base_bins: int, coarsen: int, acc: CountArray,
                 top_in_last: bool = True) -> bool | None:
    """Bin ``flat`` into the zeroed ``acc`` with the compiled kernel (see ``_kernel``).

    Returns None when there is no kernel for this batch (the numpy path bins it), else
    whether every value was finite and below ``limit`` (when False, ``acc`` is partly filled:
    discard it).
    """
    kernel = _kernel.get_kernel(flat.size)
    if kernel is None or limit >= _kernel.MAX_LIMIT:
        return None
    # the kernel sends quotients equal to ``base`` to the last base bin; -1 matches none
    base = np.float32(base_bins if top_in_last else -1)
    return kernel(np.ascontiguousarray(flat, dtype=np.float32), width, np.float32(limit),
                  base, base_bins, coarsen, acc)


def _exact_width(hi0: np.float32, base_bins: int, top: float) -> np.float32 | None:
    """``hi0 / base_bins`` when dividing by it is exactly the reference's ``(x * B) / hi0``.

    With ``B`` a power of two, ``x * B`` (for every ``|x| <= top``) and ``hi0 / B`` are exact in
    float32 (no overflow, no subnormal), so both quotients are the same real number rounded
    once: bit-identical bins with one division per value instead of a multiplication and a
    division. ``None`` when the shortcut does not apply (the caller then uses the reference
    formula literally).
    """
    if base_bins <= 0 or base_bins & (base_bins - 1):
        return None
    width = np.float32(hi0 / np.float32(base_bins))
    if not np.isfinite(width) or width < np.finfo(np.float32).tiny:
        return None
    if top * base_bins >= _F32_MAX:
        return None  # x * B overflows for the largest values
    return width


@dataclass
class AbsHistogram:
    """Histogram of |x| with a fixed bin width that grows to the right.

    Attributes:
        hi0: float32 max of the first batch with a non-zero value (``None`` before it).
        base_bins: bins spanning ``[0, hi0]``.
        coarsen: log2 of the factor by which bins were merged past :data:`MAX_BINS`.
        counts: int64 counts; bin ``i`` spans ``[i * width, (i + 1) * width)``.
        pending_zeros: zeros seen before ``hi0`` was known (added to bin 0 once it is).
    """

    hi0: float | None = None
    base_bins: int = BASE_BINS
    coarsen: int = 0
    counts: CountArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pending_zeros: int = 0

    @property
    def width(self) -> float:
        """Bin width (0 while no non-zero value was seen)."""
        if self.hi0 is None:
            return 0.0
        return float(self.hi0) / self.base_bins * (1 << self.coarsen)

    @property
    def grown(self) -> bool:
        """Whether a batch has extended the histogram past the first range ``[0, hi0]``."""
        return (len(self.counts) << self.coarsen) > self.base_bins

    @property
    def total(self) -> int:
        """Number of values counted."""
        return int(self.counts.sum()) + self.pending_zeros

    def edges(self) -> npt.NDArray[np.float64]:
        """Bin edges ``i * width`` for ``i`` in ``0..len(counts)``."""
        return np.arange(len(self.counts) + 1, dtype=np.float64) * self.width

    def update(self, values: npt.NDArray[np.float32], absmax: float | None = None) -> None:
        """Add the |x| of finite float32 ``values`` (any shape, any sign).

        Args:
            values: the batch's values; their absolute values are binned.
            absmax: ``max(|values|)`` if the caller already knows it.
        """
        flat = values.reshape(-1)
        if flat.size == 0:
            return
        top = float(np.abs(flat).max()) if absmax is None else absmax
        if self.hi0 is None:
            if top == 0.0:
                self.pending_zeros += flat.size
                return
            self.hi0 = float(np.float32(top))
            self.counts = np.zeros(self.base_bins, dtype=np.int64)
            self.counts[0] += self.pending_zeros
            self.pending_zeros = 0
        hi0 = np.float32(self.hi0)
        # The largest bin index this batch needs, from its max alone (bin_indices is monotonic).
        top_array = np.array([top], dtype=np.float32)
        need = int(bin_indices(top_array, hi0, self.base_bins, self.coarsen, top)[0]) + 1
        while need > MAX_BINS:
            self._coarsen_once()
            need = int(bin_indices(top_array, hi0, self.base_bins, self.coarsen, top)[0]) + 1
        self._grow(need)
        self._accumulate(flat, hi0, top)

    def _accumulate(self, flat: npt.NDArray[np.float32], hi0: np.float32, top: float) -> None:
        # bin_indices() in cache-sized chunks with preallocated buffers: the same float32
        # arithmetic, without materialising |x|, the quotients and the indices of the whole
        # tensor (several full-size temporaries and memory passes otherwise).
        n = len(self.counts)
        size = min(_CHUNK, flat.size)
        base = np.float32(self.base_bins)
        width = _exact_width(hi0, self.base_bins, top)
        top_in_last = not self.grown
        reaches_top = top >= hi0 and top_in_last
        capped = top / float(hi0) * self.base_bins >= _INDEX_CAP / 2
        acc = np.zeros(n, dtype=np.int64)
        if width is None or capped:  # rare cases: the literal definition, chunk by chunk
            for lo in range(0, flat.size, _CHUNK):
                chunk = np.abs(flat[lo: lo + _CHUNK])
                acc += np.bincount(bin_indices(chunk, hi0, self.base_bins, self.coarsen, top,
                                               top_in_last), minlength=n)
            self.counts += acc
            return
        fit = _kernel_bins(flat, width, float(n << self.coarsen), self.base_bins, self.coarsen,
                           acc, top_in_last)
        if fit:
            self.counts += acc
            return
        if fit is False:  # cannot happen (the batch's max fits): bin it with numpy instead
            acc.fill(0)
        q_buf = np.empty(size, dtype=np.float32)
        i_buf = np.empty(size, dtype=np.intp)
        for lo in range(0, flat.size, _CHUNK):
            chunk = flat[lo: lo + _CHUNK]
            q = q_buf[: chunk.size]
            idx = i_buf[: chunk.size]
            np.divide(chunk, width, out=q)  # one division: x / (hi0 / B) == (x * B) / hi0
            np.abs(q, out=q)
            np.copyto(idx, q, casting="unsafe")  # truncation toward zero, as int() in C
            if reaches_top:
                idx[q == base] = self.base_bins - 1
            if self.coarsen:
                np.right_shift(idx, self.coarsen, out=idx)
            acc += np.bincount(idx, minlength=n)
        self.counts += acc

    def try_accumulate(self, flat: npt.NDArray[np.float32]) -> bool:
        """Add a batch in one pass over memory, if it fits the current bins; else change nothing.

        :meth:`update` first reads the batch to find its max (range growth, NaN/Inf), then
        bins it: two passes over an activation that is no longer in cache. Once the width is
        known, this bins each cache-sized chunk and checks the chunk's largest quotient there:
        if every value is finite and falls in the existing bins, the counts are added and
        ``True`` is returned; otherwise nothing is changed and the caller takes the general
        path (:meth:`update`). The bins are the same as :meth:`update`'s (same division).
        """
        if self.hi0 is None or flat.size == 0:
            return False
        hi0 = np.float32(self.hi0)
        n = len(self.counts)
        limit = float(n << self.coarsen)  # quotients below this land in bins 0..n-1
        # the largest value that fits, times B, must not overflow (the shortcut's condition)
        width = _exact_width(hi0, self.base_bins, limit * float(hi0) / self.base_bins)
        if width is None or limit >= _INDEX_CAP / 2:
            return False
        acc = np.zeros(n, dtype=np.int64)
        top_in_last = not self.grown
        fit = _kernel_bins(flat, width, limit, self.base_bins, self.coarsen, acc, top_in_last)
        if fit is not None:
            if fit:
                self.counts += acc
            return fit
        size = min(_CHUNK, flat.size)
        q_buf = np.empty(size, dtype=np.float32)
        # int32 indices when they fit: the float -> int32 cast is ~4x cheaper than -> int64
        # and bincount's own conversion costs less than that (8% less CPU per value, measured)
        i_buf = np.empty(size, dtype=np.int32 if limit < 2.0**31 else np.intp)
        base = np.float32(self.base_bins)
        for lo in range(0, flat.size, _CHUNK):
            chunk = flat[lo: lo + _CHUNK]
            q = q_buf[: chunk.size]
            idx = i_buf[: chunk.size]
            np.divide(chunk, width, out=q)
            np.abs(q, out=q)
            top = q.max()
            if not (top < limit or top == base):  # NaN fails both: the general path reports it
                return False  # (q == B is the first range's top value: last base bin)
            np.copyto(idx, q, casting="unsafe")
            if top >= base and top_in_last:
                idx[q == base] = self.base_bins - 1
            if self.coarsen:
                np.right_shift(idx, self.coarsen, out=idx)
            acc += np.bincount(idx, minlength=n)
        self.counts += acc
        return True

    def _grow(self, nbins: int) -> None:
        if nbins > len(self.counts):
            grown = np.zeros(nbins, dtype=np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown

    def _coarsen_once(self) -> None:
        n = len(self.counts)
        padded = np.zeros(n + (n & 1), dtype=np.int64)
        padded[:n] = self.counts
        self.counts = padded.reshape(-1, 2).sum(axis=1)
        self.coarsen += 1

    def merge(self, other: AbsHistogram, name: str = "?") -> None:
        """Add ``other``'s counts; both must share ``hi0`` (or one has none yet)."""
        if other.hi0 is None:
            self.pending_zeros += other.pending_zeros
            if self.hi0 is not None:
                self.counts[0] += self.pending_zeros
                self.pending_zeros = 0
            return
        if self.hi0 is None:
            zeros = self.pending_zeros
            self.hi0, self.base_bins, self.coarsen = other.hi0, other.base_bins, other.coarsen
            self.counts = other.counts.copy()
            self.counts[0] += zeros
            self.pending_zeros = 0
            return
        if np.float32(self.hi0) != np.float32(other.hi0) or self.base_bins != other.base_bins:
            raise PipelineError(
                f"tensor '{name}': cannot merge histograms with different bin widths "
                f"({self.width!r} vs {other.width!r}). Shards must start from the same first "
                "batch: seed them with Calibrator.empty_like() of a calibrator that has seen it, "
                "or fix the widths with `widths=`."
            )
        src = other
        if other.coarsen > self.coarsen:
            while self.coarsen < other.coarsen:
                self._coarsen_once()
        elif other.coarsen < self.coarsen:
            src = AbsHistogram(other.hi0, other.base_bins, other.coarsen, other.counts.copy())
            while src.coarsen < self.coarsen:
                src._coarsen_once()
        self._grow(len(src.counts))
        self.counts[: len(src.counts)] += src.counts

    def empty_like(self) -> AbsHistogram:
        """A histogram with the same width and no counts (to seed a shard)."""
        return AbsHistogram(self.hi0, self.base_bins, self.coarsen,
                            np.zeros(len(self.counts), dtype=np.int64))

    def state(self) -> dict[str, Any]:
        """Plain-data state (for checkpoints and distributed executors)."""
        return {"hi0": self.hi0, "base_bins": self.base_bins, "coarsen": self.coarsen,
                "counts": self.counts.copy(), "pending_zeros": self.pending_zeros}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AbsHistogram:
        """Inverse of :meth:`state`."""
        # a copy: states are shared (shards seeded from one state) or read-only (Ray objects)
        return cls(state["hi0"], int(state["base_bins"]), int(state["coarsen"]),
                   np.array(state["counts"], dtype=np.int64), int(state["pending_zeros"]))
