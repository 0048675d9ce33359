"""``.npy`` files (memory-mapped) and in-memory arrays as data sources."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from quantkit.data._common import (
    check_columns_keys,
    check_headers,
    existing_file,
    no_samples,
    read_npy_header,
    single_input,
    to_numpy,
)
from quantkit.data.base import InputSpec
from quantkit.data.rows import Reader, ReaderSource, RowReader
from quantkit.errors import InputError


class NpySource(ReaderSource):
    """A ``.npy`` file holding the samples of a single-input model.

    The file is memory-mapped (``np.load(..., mmap_mode="r")``) and each batch is copied out
    of the map, so memory stays flat however large the file is. The header (rank, static dims,
    dtype, sample count) is validated in the constructor without reading any data.

    Args:
        path: the ``.npy`` file; first axis = samples.
        inputs: the model's inputs (exactly one).
        seed: if given and ``max_samples`` is smaller than the file, read a seeded random
            subset of samples (in ascending order) instead of the first ``max_samples``.

    Raises:
        InputError: missing/invalid file, more than one model input, no samples, or data that
            does not fit the model input.
    """

    def __init__(self, path: str | os.PathLike[str], inputs: Sequence[InputSpec], *,
                 seed: int | None = None) -> None:
        self.path = existing_file(path)
        self.description = str(self.path)
        self._inputs = tuple(inputs)
        self._seed = seed
        spec = single_input(self._inputs, self.description, ".npy")
        try:
            with self.path.open("rb") as fp:
                shape, _, dtype = read_npy_header(fp, self.description)
        except OSError as err:
            raise InputError(f"data {self.path}: cannot read the file ({err}).") from err
        check_headers({spec.name: shape}, {spec.name: dtype}, self._inputs, self.description)
        if shape[0] == 0:
            raise no_samples(self.description, f"array shape {shape}")
        self._num = shape[0]
        self._name = spec.name

    @contextmanager
    def _open(self) -> Iterator[Mapping[str, Reader]]:
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise InputError(f"data {self.path}: cannot memory-map the array ({err}).") from err
        yield {self._name: RowReader(array)}


class ArraySource(ReaderSource):
    """In-memory arrays (numpy arrays or tensors) as a data source, handy in notebooks.

    Args:
        arrays: ``{input name: array}`` (first axis = samples), or a single array for a
            single-input model.
        inputs: the model's inputs.
        columns: optional ``{input name: key of arrays}``; only the mapped arrays (and those
            named like an input) are used when given.
        seed: as for :class:`NpySource`.
        description: how the data is named in error messages.

    Raises:
        InputError: names, shapes or dtypes do not fit the model, arrays have different
            numbers of samples, or there are no samples.
    """

    def __init__(self, arrays: Mapping[str, Any] | Any, inputs: Sequence[InputSpec], *,
                 columns: Mapping[str, str] | None = None, seed: int | None = None,
                 description: str = "<arrays>") -> None:
        self.description = description
        self._inputs = tuple(inputs)
        self._seed = seed
        if not isinstance(arrays, Mapping):
            arrays = {single_input(self._inputs, description, "a single array's").name: arrays}
        elif columns:
            check_columns_keys(columns, self._inputs, description)
            keys = {s.name: columns.get(s.name, s.name) for s in self._inputs}
            missing = [k for k in keys.values() if k not in arrays]
            if missing:
                raise InputError(
                    f"data {description}: no array {', '.join(map(repr, missing))}. Arrays: "
                    f"{', '.join(map(str, arrays)) or '(none)'}."
                )
            arrays = {name: arrays[key] for name, key in keys.items()}
        self._arrays = {str(k): to_numpy(v) for k, v in arrays.items()}
        check_headers({k: v.shape for k, v in self._arrays.items()},
                      {k: v.dtype for k, v in self._arrays.items()}, self._inputs, description)
        counts = {k: v.shape[0] for k, v in self._arrays.items()}
        if len(set(counts.values())) > 1:
            raise InputError(
                f"data {description}: the arrays have different numbers of samples "
                f"({', '.join(f'{k}: {n}' for k, n in counts.items())}). Every input needs "
                "one entry per sample along axis 0."
            )
        self._num = next(iter(counts.values()), 0)
        if self._num == 0:
            raise no_samples(description)

    @contextmanager
    def _open(self) -> Iterator[Mapping[str, Reader]]:
        yield {k: RowReader(v) for k, v in self._arrays.items()}
