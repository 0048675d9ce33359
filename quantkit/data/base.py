"""The data-source interface shared by every ``--data`` kind.

A data source yields batches: ``dict[input name -> np.ndarray]`` whose first axis is the
sample axis. Sources stream: they never hold more than one batch (plus what the underlying
format needs, e.g. a memory map), so memory stays flat in the number of samples.
"""

from __future__ import annotations

import abc
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from quantkit.errors import InputError

Batch = dict[str, np.ndarray]
Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """What a model expects for one input.

    Attributes:
        name: the graph input's name.
        dtype: the numpy dtype the model expects.
        shape: one entry per axis: an ``int`` for a static dim, a ``str`` for a named dynamic
            dim, ``None`` for an unknown one. The first axis is the batch axis.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    def describe(self) -> str:
        """Human-readable ``name: dtype[d0 x d1 ...]``."""
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


class DataSource(abc.ABC):
    """A stream of batches for a model's inputs.

    Subclasses implement :meth:`batches` (and :attr:`num_samples` when the length is known).
    """

    #: where the data comes from, used in error messages (a path, ``hf:name``, ...)
    description: str = "<data>"

    @property
    def num_samples(self) -> int | None:
        """Number of samples if known without reading the data, else ``None``."""
        return None

    @abc.abstractmethod
    def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
        """Yield batches of at most ``batch_size`` samples, ``max_samples`` in total."""

    def num_batches(self, batch_size: int, max_samples: int | None = None) -> int | None:
        """Number of batches :meth:`batches` will yield, if known."""
        n = self.num_samples
        if n is None:
            return None if max_samples is None else -(-max_samples // batch_size)
        if max_samples is not None:
            n = min(n, max_samples)
        return -(-n // batch_size)


def check_batch_args(batch_size: int, max_samples: int | None) -> None:
    """Validate ``--batch-size`` / ``--max-samples``."""
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be a positive integer.")
    if max_samples is not None and max_samples < 1:
        raise InputError(f"--max-samples {max_samples}: must be a positive integer.")


def validate_batch(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec],
                   source: str) -> Batch:
    """Check one batch against the model's inputs and cast it to the expected dtypes.

    Checks names (missing and unexpected inputs), rank, dtype compatibility and static
    dims other than the batch axis. Returns the batch with arrays cast to the model's dtypes
    (only safe casts: same kind, e.g. float64 -> float32, int64 -> int32 is refused if values
    don't fit).

    Raises:
        InputError: naming the source, the input and what was expected.
    """
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in batch]
    extra = [n for n in batch if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected name(s) {', '.join(extra)}")
        want = "; ".join(s.describe() for s in specs)
        raise InputError(
            f"data {source}: {' and '.join(parts)}. The model expects: {want}. "
            "Rename the arrays/columns to the model's input names."
        )
    out: Batch = {}
    for name, spec in expected.items():
        arr = np.asarray(batch[name])
        if arr.ndim != len(spec.shape):
            raise InputError(
                f"data {source}: input '{name}' has rank {arr.ndim} (shape "
                f"{tuple(arr.shape)}) but the model expects rank {len(spec.shape)} "
                f"({spec.describe()}). The first axis of the data must be the sample axis."
            )
        for axis, (got, dim) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if axis == 0:
                continue
            if isinstance(dim, int) and dim > 0 and got != dim:
                raise InputError(
                    f"data {source}: input '{name}' has shape {tuple(arr.shape)} but the model "
                    f"expects {spec.describe()} (axis {axis} must be {dim}). Resize or "
                    "preprocess the data to the model's input shape."
                )
        out[name] = _cast(arr, spec, source)
    return out


#: integer data may be cast to a float input (``allow_cast``); see data/_common.allow_cast.
ALLOW_INT_TO_FLOAT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "quantkit_allow_int_to_float", default=False)


def _cast(arr: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    if want.kind == "f" and arr.dtype.kind in "iu" and not ALLOW_INT_TO_FLOAT.get():
        from quantkit.data._common import integer_for_float

        raise integer_for_float(arr.dtype, spec, source)
    ok = (
        (want.kind == "f" and arr.dtype.kind in "fiub")
        or (want.kind in "iu" and arr.dtype.kind in "iub")
        or (want.kind == "b" and arr.dtype.kind == "b")
    )
    if not ok:
        raise InputError(
            f"data {source}: input '{spec.name}' has dtype {arr.dtype} but the model expects "
            f"{want.name}. Convert the data to {want.name}."
        )
    if want.kind in "iu" and arr.size:
        info = np.iinfo(want)
        if arr.min() < info.min or arr.max() > info.max:
            raise InputError(
                f"data {source}: input '{spec.name}' has {arr.dtype} values outside the range "
                f"of the model's {want.name}. Convert the data to {want.name}."
            )
    return arr.astype(want)
