"""``.npz`` archives as a streaming data source.

``np.load(FILE.npz)[key]`` decompresses and loads a whole member, which is not streaming. This
module reads the zip directly instead:

- stored (``np.savez``) members are memory-mapped at the offset of their ``.npy`` payload inside
  the zip, so a batch is a copy of a slice of the map;
- deflated (``np.savez_compressed``) members are read row by row from the decompressing stream,
  in ascending sample order, so only one batch is ever decompressed into memory.

Names, dtypes, shapes and sample counts come from the ``.npy`` headers; the constructor
validates them against the model without reading any data.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from math import prod
from typing import cast

import numpy as np

from quantkit.data._common import (
    check_columns_keys,
    check_headers,
    existing_file,
    no_samples,
    read_npy_header,
)
from quantkit.data.base import InputSpec
from quantkit.data.rows import Reader, ReaderSource, RowReader, Selection
from quantkit.errors import InputError

logger = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header (APPNOTE 4.3.7)
_LOCAL_HEADER_MAGIC = b"PK\x03\x04"
_READ_PIECE = 1 << 20  # bytes decompressed per read call, bounds temporary buffers


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    key: str
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    data_offset: int  # offset of the array payload inside the (uncompressed) member

    @property
    def stored(self) -> bool:
        return self.info.compress_type == zipfile.ZIP_STORED


class NpzSource(ReaderSource):
    """A ``.npz`` archive with one array per model input, keyed by input name.

    Args:
        path: the ``.npz`` file (from ``np.savez`` or ``np.savez_compressed``); every array's
            first axis is the sample axis and all arrays have the same number of samples.
        inputs: the model's inputs.
        columns: optional ``{input name: array name}`` for archives whose keys differ from the
            model's input names. When given, archive members that are neither mapped nor
            named like an input are ignored; without it every member must be a model input.
        seed: if given and ``max_samples`` is smaller than the data, read a seeded random
            subset of samples (in ascending order) instead of the first ``max_samples``.

    Raises:
        InputError: missing or invalid file, names/dtypes/shapes that do not fit the model,
            arrays with different sample counts, or no samples.
    """

    def __init__(self, path: str | os.PathLike[str], inputs: Sequence[InputSpec], *,
                 columns: Mapping[str, str] | None = None, seed: int | None = None) -> None:
        self.path = existing_file(path)
        self.description = str(self.path)
        self._inputs = tuple(inputs)
        self._seed = seed
        members = self._read_members()
        self._members = self._map_members(members, dict(columns or {}))
        check_headers({n: m.shape for n, m in self._members.items()},
                      {n: m.dtype for n, m in self._members.items()},
                      self._inputs, self.description)
        counts = {m.key: m.shape[0] for m in self._members.values()}
        if len(set(counts.values())) > 1:
            raise InputError(
                f"data {self.path}: the arrays have different numbers of samples "
                f"({', '.join(f'{k}: {n}' for k, n in counts.items())}). Every input needs one "
                "entry per sample along axis 0."
            )
        self._num = next(iter(counts.values()))
        if self._num == 0:
            raise no_samples(self.description)
        for m in self._members.values():
            if m.fortran and not m.stored and m.shape[0] > 1 and prod(m.shape[1:]) > 1:
                raise InputError(
                    f"data {self.path}: array '{m.key}' is compressed and stored in Fortran "
                    "order, so it cannot be streamed sample by sample. Save it with "
                    "np.ascontiguousarray(...) or with np.savez (uncompressed)."
                )

    @property
    def compressed(self) -> dict[str, bool]:
        """``{input name: whether the member is compressed (streamed) or stored (mapped)}``."""
        return {name: not m.stored for name, m in self._members.items()}

    def _read_members(self) -> dict[str, _Member]:
        try:
            zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise InputError(
                f"data {self.path}: not a valid .npz archive ({err}). Write it with "
                "numpy.savez or numpy.savez_compressed."
            ) from err
        members: dict[str, _Member] = {}
        with zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise InputError(
                        f"data {self.path}: archive member '{info.filename}' is not a .npy "
                        "array. A .npz holds only arrays written by numpy.savez."
                    )
                key = info.filename[: -len(".npy")]
                if info.flag_bits & 0x1:
                    raise InputError(f"data {self.path}: array '{key}' is encrypted.")
                where = f"{self.path}[{key}]"
                try:
                    with zf.open(info) as fp:
                        shape, fortran, dtype = read_npy_header(fp, where)
                        offset = fp.tell()
                except (zipfile.BadZipFile, NotImplementedError, OSError) as err:
                    raise InputError(f"data {where}: cannot read the array ({err}).") from err
                members[key] = _Member(info, key, shape, fortran, dtype, offset)
        return members

    def _map_members(self, members: dict[str, _Member],
                     columns: dict[str, str]) -> dict[str, _Member]:
        if not columns:
            names = [s.name for s in self._inputs]
            extra = [key for key in members if key not in names]
            if extra and all(n in members for n in names):
                logger.warning("data %s: ignoring array(s) %s, which are not model inputs "
                               "(the model reads %s).", self.path,
                               ", ".join(repr(k) for k in extra), ", ".join(names))
                return {n: members[n] for n in names}
            missing = [n for n in names if n not in members]
            if missing and extra:
                raise InputError(
                    f"data {self.path}: missing input(s) {', '.join(missing)}: no array is "
                    f"named like the model input(s) {', '.join(repr(n) for n in missing)}; the "
                    "file holds "
                    f"{', '.join(repr(k) for k in members)}. Rename the arrays to the model's "
                    "input names, or map input names to array names with "
                    "columns={INPUT: ARRAY}."
                )
            return {key: m for key, m in members.items()}
        check_columns_keys(columns, self._inputs, self.description)
        out: dict[str, _Member] = {}
        for spec in self._inputs:
            key = columns.get(spec.name, spec.name)
            if key not in members:
                raise InputError(
                    f"data {self.path}: no array '{key}' for model input '{spec.name}'. "
                    f"Arrays in the file: {', '.join(members) or '(none)'}."
                )
            out[spec.name] = members[key]
        return out

    @contextmanager
    def _open(self) -> Iterator[Mapping[str, Reader]]:
        with ExitStack() as stack:
            zf = stack.enter_context(zipfile.ZipFile(self.path))
            readers: dict[str, Reader] = {}
            for name, m in self._members.items():
                row_shape = m.shape[1:]
                if prod(m.shape) == 0:
                    readers[name] = partial(_empty_rows, row_shape, m.dtype)
                elif m.stored:
                    offset = _payload_offset(zf, m)
                    mm = np.memmap(self.path, dtype=m.dtype, mode="r", offset=offset,
                                   shape=m.shape, order="F" if m.fortran else "C")
                    readers[name] = RowReader(mm)
                else:
                    fp = cast(io.BufferedIOBase, stack.enter_context(zf.open(m.info)))
                    readers[name] = _RowStream(fp, m, f"{self.path}[{m.key}]")
            yield readers


def _empty_rows(row_shape: tuple[int, ...], dtype: np.dtype, chunk: Selection) -> np.ndarray:
    return np.empty((len(chunk), *row_shape), dtype=dtype)


def _payload_offset(zf: zipfile.ZipFile, member: _Member) -> int:
    """Absolute offset in the zip file of a stored member's array payload."""
    fp = zf.fp
    if fp is None:  # pragma: no cover - the archive is open for reading
        raise RuntimeError("zip file is closed")
    fp.seek(member.info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_HEADER_MAGIC:
        raise InputError(f"data {member.info.filename}: corrupt zip local header.")
    fields = _LOCAL_HEADER.unpack(header)
    name_len, extra_len = fields[10], fields[11]
    return int(member.info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
               + member.data_offset)


class _RowStream:
    """Reads rows of a compressed member sequentially (forward seeks only)."""

    def __init__(self, fp: io.BufferedIOBase, member: _Member, where: str) -> None:
        self._fp = fp
        self._row_shape = member.shape[1:]
        self._dtype = member.dtype
        self._row_bytes = prod(self._row_shape) * member.dtype.itemsize
        self._start = member.data_offset
        self._next_row = -1  # the stream starts at the .npy header: seek before the first read
        self._where = where

    def __call__(self, chunk: Selection) -> np.ndarray:
        out = np.empty((len(chunk), *self._row_shape), dtype=self._dtype)
        raw = out.reshape(-1).view(np.uint8)
        idx = np.asarray(chunk, dtype=np.int64)
        # runs of consecutive rows: one read each
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        pos = 0
        for run in np.split(idx, breaks):
            if not len(run):
                continue
            first = int(run[0])
            if first != self._next_row:
                self._fp.seek(self._start + first * self._row_bytes)
            nbytes = len(run) * self._row_bytes
            self._read_exact(raw[pos:pos + nbytes].data)
            pos += nbytes
            self._next_row = first + len(run)
        return out

    def _read_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                n = self._fp.readinto(view[got:got + _READ_PIECE])
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise InputError(f"data {self._where}: cannot decompress ({err}).") from err
            if not n:
                raise InputError(
                    f"data {self._where}: the array data is truncated. Re-create the file."
                )
            got += n

