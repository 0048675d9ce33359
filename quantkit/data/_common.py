"""Helpers shared by the data sources: sample selection, chunking, header checks."""

from __future__ import annotations

import abc
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import numpy as np

from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch
from quantkit.errors import InputError

logger = logging.getLogger(__name__)

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


def no_samples(description: str, detail: str = "") -> InputError:
    """The error for a data source without samples."""
    extra = f" ({detail})" if detail else ""
    return InputError(
        f"data {description}: contains no samples{extra}. Point --data at a non-empty "
        "dataset."
    )


def check_headers(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, np.dtype],
                  specs: Sequence[InputSpec], source: str) -> None:
    """Validate array names, ranks, static dims and dtypes without reading any data.

    Builds empty arrays with the data's dtypes and per-sample shapes and runs them through
    :func:`~quantkit.data.base.validate_batch`, so the messages are the same as for a batch.

    Raises:
        InputError: an array is a scalar, holds Python objects, or does not fit the model.
    """
    proxies: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        dtype = np.dtype(dtypes[name])
        if len(shape) == 0:
            raise InputError(
                f"data {source}: array '{name}' is a scalar; it needs a first (sample) axis. "
                "Save the samples stacked along axis 0."
            )
        if dtype.hasobject or dtype.names is not None:
            raise InputError(
                f"data {source}: array '{name}' has dtype {dtype}, which is not a plain "
                "numeric dtype. Save the data as numeric arrays (no objects, no records)."
            )
        proxies[name] = np.empty((0, *shape[1:]), dtype=dtype)
    validate_batch(proxies, specs, source)


def to_numpy(value: Any) -> np.ndarray:
    """Convert an array-like (numpy, torch tensor, list, ...) to a numpy array.

    Torch tensors are recognised by duck typing (``.detach().cpu().numpy()``) so that torch is
    never imported here.
    """
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if callable(detach) and hasattr(value, "cpu"):
        return np.asarray(detach().cpu().numpy())
    return np.asarray(value)


def single_input(specs: Sequence[InputSpec], source: str, kind: str) -> InputSpec:
    """The model's only input, or an error explaining that ``kind`` data needs one input."""
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs) or "(none)"
        raise InputError(
            f"data {source}: {kind} data feeds a single model input, but the model has "
            f"{len(specs)} inputs ({names}). Use a .npz file with one array per input name, "
            "or a hf: dataset with a column mapping."
        )
    return specs[0]


def check_columns_keys(columns: Mapping[str, str], specs: Sequence[InputSpec],
                       source: str) -> None:
    """Check that every key of a column mapping is a model input name."""
    names = [s.name for s in specs]
    unknown = [k for k in columns if k not in names]
    if unknown:
        raise InputError(
            f"data {source}: the column mapping names {', '.join(map(repr, unknown))}, which "
            f"is not a model input. Model inputs: {', '.join(names)}. The mapping is "
            "{input_name: column}."
        )


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


def read_npy_header(fp: IO[bytes], source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a ``.npy`` header (shape, Fortran order, dtype), leaving ``fp`` at the payload.

    Raises:
        InputError: the stream does not start with a valid ``.npy`` header.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:  # 3.0 is only written for record dtypes with non-latin-1 field names
            raise ValueError(f".npy format version {version[0]}.{version[1]} holds a record "
                             "dtype")
    except (ValueError, OSError, EOFError) as err:
        raise InputError(
            f"data {source}: not a valid .npy array ({err}). Write arrays with numpy.save / "
            "numpy.savez."
        ) from err
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


def existing_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or an InputError if it is missing or not a file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"data {p}: no such file. Check the path given to --data.")
    if not p.is_file():
        raise InputError(f"data {p}: not a regular file. Check the path given to --data.")
    return p
