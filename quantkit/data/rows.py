"""Row selection and chunked reading of sources of known length (memory maps, arrays, files).

Public so that sharded calibration (:mod:`quantkit.capture.shard`) can split the very chunks a
:class:`ReaderSource` reads: ``select_indices`` picks the samples, ``iter_chunks`` cuts them into
batches, a :class:`RowReader` copies rows out of an array or memory map.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager

import numpy as np

from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch

#: the samples a source reads: a ``range`` (contiguous, read with slices) or a sorted index array
Selection = range | np.ndarray


def select_indices(num_samples: int, max_samples: int | None, seed: int | None) -> Selection:
    """Pick which samples of a dataset of known length to read.

    Without ``seed`` (or when ``max_samples`` covers the whole dataset) this is the first
    ``max_samples`` samples. With ``seed``, it is a seeded random subset of ``max_samples``
    indices, sorted ascending so that reads stay sequential.
    """
    if max_samples is None or max_samples >= num_samples:
        return range(num_samples)
    if seed is None:
        return range(max_samples)
    rng = np.random.default_rng(seed)
    picked = rng.choice(num_samples, size=max_samples, replace=False, shuffle=False)
    return np.sort(picked.astype(np.int64))


def iter_chunks(selection: Selection, batch_size: int) -> Iterator[Selection]:
    """Split a selection into consecutive chunks of at most ``batch_size`` samples."""
    for start in range(0, len(selection), batch_size):
        yield selection[start:start + batch_size]


def as_slice(chunk: Selection) -> slice | None:
    """The chunk as a step-1 slice if it is contiguous, else ``None``."""
    if isinstance(chunk, range):
        return slice(chunk.start, chunk.stop) if chunk.step == 1 or len(chunk) <= 1 else None
    if len(chunk) and int(chunk[-1]) - int(chunk[0]) == len(chunk) - 1:
        return slice(int(chunk[0]), int(chunk[-1]) + 1)
    return None


def read_rows(array: np.ndarray, chunk: Selection, out: np.ndarray | None = None) -> np.ndarray:
    """Copy the rows ``chunk`` out of an array or memory map into memory.

    Args:
        array: the array or memory map.
        chunk: the rows (a contiguous range or sorted indices).
        out: a buffer of at least ``len(chunk)`` rows to copy into (its first rows are
            returned); a new array when ``None``.

    For a memory map, the pages of the rows just copied are then released
    (``madvise(MADV_DONTNEED)``): a memory-mapped file read once from start to end would
    otherwise stay resident and count towards the process's RSS, growing with the samples.
    """
    window = as_slice(chunk)
    if window is not None:
        rows = array[window]
        if out is None:
            result = np.array(rows)
        else:
            result = out[: len(rows)]
            np.copyto(result, rows)
        first, last = window.start or 0, (window.stop or len(array)) - 1
    else:
        idx = np.asarray(chunk)
        if out is None:
            result = np.asarray(array[idx])
        else:
            result = out[: len(idx)]
            np.take(array, idx, axis=0, out=result)
        first, last = (int(idx.min()), int(idx.max())) if idx.size else (0, -1)
    if isinstance(array, np.memmap) and last >= first:
        release_rows(array, first, last)
    return result


class RowReader:
    """Reads row chunks of one array (``Reader``); can reuse one buffer between batches."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self._buffer: np.ndarray | None = None

    def __call__(self, chunk: Selection) -> np.ndarray:
        """The rows ``chunk`` as a new array."""
        return read_rows(self.array, chunk)

    def into_buffer(self, chunk: Selection, batch_size: int) -> np.ndarray:
        """Read ``chunk`` into this reader's buffer (allocated once, ``batch_size`` rows).

        The result is overwritten by the next call: for consumers that are done with a batch
        before asking for the next. Reusing one buffer keeps the allocator from handing out
        a fresh batch-sized block per batch, which made the peak RSS step up once under glibc's
        dynamic mmap threshold (``benchmarks/RESULTS.md``, flat memory). Contiguous rows of a
        C-order memory-mapped file are read with ``readinto`` straight into the buffer, so the
        map's pages never become resident in this process at all.
        """
        need = max(batch_size, len(chunk))
        if self._buffer is None or len(self._buffer) < need:
            self._buffer = np.empty((need, *self.array.shape[1:]), dtype=self.array.dtype)
        window = as_slice(chunk)
        if window is not None and self._read_file(window, self._buffer):
            return self._buffer[: window.stop - window.start]
        return read_rows(self.array, chunk, self._buffer)

    def _read_file(self, window: slice, buffer: np.ndarray) -> bool:
        array = self.array
        filename = getattr(array, "filename", None)
        if not (isinstance(array, np.memmap) and filename and array.flags.c_contiguous
                and array.ndim >= 1 and not array.dtype.hasobject):
            return False
        start, stop = int(window.start), int(window.stop)
        row_bytes = array.strides[0]
        out = buffer[: stop - start].reshape(-1).view(np.uint8).data
        try:
            with open(filename, "rb", buffering=0) as fp:
                fp.seek(array.offset + start * row_bytes)
                done = 0
                while done < len(out):
                    n = fp.readinto(out[done:])
                    if not n:
                        return False  # truncated file: let the memory map report it
                    done += n
        except OSError:
            return False
        return True


def release_rows(array: np.memmap, first: int, last: int) -> None:
    """Drop the resident pages of rows ``first..last`` of a read-only C-order memory map."""
    import mmap

    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not array.flags.c_contiguous \
            or array.ndim == 0:
        return
    row = array.strides[0]
    base = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # where the mapping starts
    lo = array.offset - base + first * row
    hi = array.offset - base + (last + 1) * row
    page = mmap.PAGESIZE
    lo = -(-lo // page) * page  # only whole pages inside the rows: never a neighbour's data
    hi = hi // page * page
    if hi > lo:
        with contextlib.suppress(OSError, ValueError):  # not fatal: pages just stay cached
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


Reader = Callable[[Selection], np.ndarray]


class ReaderSource(DataSource):
    """A source of known length whose inputs are read row-chunk by row-chunk.

    Subclasses set ``_num`` (number of samples), ``_inputs`` and ``_seed``, and implement
    :meth:`_open`, a context manager yielding one reader per model input.
    """

    _num: int
    _inputs: tuple[InputSpec, ...]
    _seed: int | None

    @property
    def num_samples(self) -> int:
        """Number of samples in the data."""
        return self._num

    @abc.abstractmethod
    def _open(self) -> AbstractContextManager[Mapping[str, Reader]]:
        """Open the data; yield ``{input name: reader}``."""

    def batches(self, batch_size: int, max_samples: int | None = None, *,
                reuse_buffers: bool = False) -> Iterator[Batch]:
        """Yield batches of at most ``batch_size`` samples, ``max_samples`` in total.

        With a ``seed`` given to the constructor and ``max_samples`` smaller than the data, a
        seeded random subset of samples is read (in ascending order) instead of the first ones.

        Args:
            batch_size: samples per batch.
            max_samples: stop after this many samples.
            reuse_buffers: read every batch into the same arrays (one per input). Only for
                consumers that are done with a batch before asking for the next one (the
                calibration loop): a batch kept across iterations would change under them.
        """
        check_batch_args(batch_size, max_samples)
        return self._generate(batch_size, max_samples, reuse_buffers)

    def _generate(self, batch_size: int, max_samples: int | None,
                  reuse: bool) -> Iterator[Batch]:
        selection = select_indices(self._num, max_samples, self._seed)
        with self._open() as readers:
            for chunk in iter_chunks(selection, batch_size):
                batch = {
                    name: read.into_buffer(chunk, batch_size)
                    if reuse and isinstance(read, RowReader) else read(chunk)
                    for name, read in readers.items()
                }
                yield validate_batch(batch, self._inputs, self.description)


__all__ = ["Reader", "ReaderSource", "RowReader", "Selection", "as_slice", "iter_chunks",
           "read_rows", "release_rows", "select_indices"]
