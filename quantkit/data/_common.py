"""Helpers shared by the data sources: sample selection, chunking, header checks."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from quantkit.data.base import ALLOW_INT_TO_FLOAT, InputSpec, validate_batch
from quantkit.errors import InputError

#: the phrase of :func:`integer_for_float` naming the opt-in (the CLI maps it to its flag).
ALLOW_CAST_HINT = "allow_cast=True"

logger = logging.getLogger(__name__)


def no_samples(description: str, detail: str = "") -> InputError:
    """The error for a data source without samples."""
    extra = f" ({detail})" if detail else ""
    return InputError(
        f"data {description}: contains no samples{extra}. Point data= at a non-empty "
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
        raise InputError(f"data {p}: no such file. Check the path given as data=.")
    if not p.is_file():
        raise InputError(f"data {p}: not a regular file. Check the path given as data=.")
    return p


def integer_for_float(dtype: np.dtype, spec: InputSpec, source: str) -> InputError:
    """The error for integer data fed to a floating-point model input."""
    hint = (" Integer data for a float input is usually unnormalised pixels (0..255 where the "
            "model expects 0..1 or mean/std-normalised values)")
    if np.dtype(dtype).kind == "i":
        hint += " or raw ids/counts"
    return InputError(
        f"data {source}: input '{spec.name}' of the model is {np.dtype(spec.dtype).name} but the "
        f"data holds {np.dtype(dtype).name} values.{hint}; cast as they are, they would give "
        "activation ranges and scales far too large (255x for pixels). Apply the model's "
        f"preprocessing and save the data as {np.dtype(spec.dtype).name}; if the integer "
        f"values are exactly what the model expects, allow the cast with {ALLOW_CAST_HINT}."
    )


@contextlib.contextmanager
def allow_cast(enabled: bool = True) -> Iterator[None]:
    """Within the block, integer data for a float input is cast instead of refused.

    Applies to every batch validated in this thread (or task) while the block runs, including
    batches of generators consumed inside it.
    """
    token = ALLOW_INT_TO_FLOAT.set(enabled)
    try:
        yield
    finally:
        ALLOW_INT_TO_FLOAT.reset(token)
