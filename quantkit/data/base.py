"""The data-source interface shared by every ``--data`` kind.

A data source yields batches: ``dict[input name -> np.ndarray]`` whose first axis is the
sample axis. Sources stream: they never hold more than one batch (plus what the underlying
format needs, e.g. a memory map), so memory stays flat in the number of samples.

The data keeps samples on the first axis whatever the model declares: an input whose batch
axis is not its first (a recurrent state ``[layers, batch, hidden]``) is stored as
``[samples, layers, hidden]``, and :func:`static_batch_chunks` moves the sample axis to the
model's batch axis when feeding it. Inputs without a batch axis (scalars such as a sample
rate) are not read from the data: they are given once, as constants (:class:`InputLayout`).
"""

from __future__ import annotations

import abc
import contextvars
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """What a model expects for one input.

    Attributes:
        name: the graph input's name.
        dtype: the numpy dtype the model expects.
        shape: one entry per axis: an ``int`` for a static dim, a ``str`` for a named dynamic
            dim, ``None`` for an unknown one.
        batch_axis: the model's batch (sample) axis of this input; ``None`` for an input fed
            whole, the same for every sample (a scalar, or a constant).
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]
    batch_axis: int | None = 0

    def describe(self) -> str:
        """Human-readable ``name: dtype[d0 x d1 ...]``."""
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """The shape of one sample: the model's shape without the batch axis."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[:self.batch_axis] + self.shape[self.batch_axis + 1:]

    @property
    def static_batch(self) -> int | None:
        """The batch axis's fixed size, ``None`` when it is dynamic or there is none."""
        if self.batch_axis is None:
            return None
        dim = self.shape[self.batch_axis]
        return dim if isinstance(dim, int) and dim > 0 else None


@dataclass(frozen=True)
class InputLayout:
    """How the model's inputs are fed: each input's batch axis, and constant inputs.

    Attributes:
        batch_axes: ``{input: axis}``, the model's batch axis of an input. Inputs not listed
            get one detected from their declared shape (:meth:`apply`).
        constants: ``{input: value}`` for inputs fed one fixed value rather than read from the
            data (a scalar sample rate, an all-zero initial state); the input's shape must be
            static, and every element gets the value.
    """

    batch_axes: Mapping[str, int] = field(default_factory=dict)
    constants: Mapping[str, float | int | bool] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> InputLayout:
        """The layout named by data options (the ``batch_axes`` and ``constants`` keys)."""
        options = options or {}
        return cls(dict(options.get("batch_axes") or {}), dict(options.get("constants") or {}))

    def apply(self, specs: Sequence[InputSpec]) -> list[InputSpec]:
        """``specs`` with their batch axes set.

        An input's batch axis is, in order: the one given in :attr:`batch_axes`; none for a
        constant or a rank-0 input; the axis whose dimension name contains ``batch``; axis 0
        when it is dynamic; the axis named like another input's dynamic axis 0 (a state
        ``[2, N, 128]`` next to ``x: [N, 80]``); else axis 0.

        Raises:
            InputError: a name that is not a model input, a batch axis outside an input's
                rank, or a constant for an input whose shape is not static.
        """
        names = {s.name for s in specs}
        for what, given in (("batch_axes", self.batch_axes), ("constants", self.constants)):
            unknown = [n for n in given if n not in names]
            if unknown:
                raise InputError(
                    f"{what}: {', '.join(repr(n) for n in unknown)} is not an input of the "
                    f"model; its inputs are: {'; '.join(s.describe() for s in specs)}.")
        both = set(self.batch_axes) & set(self.constants)
        if both:
            raise InputError(f"input '{sorted(both)[0]}' has both a batch axis and a constant "
                             "value; a constant input is fed whole. Give one of them.")
        lead = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)}
        out = []
        for s in specs:
            if s.name in self.constants:
                if not all(isinstance(d, int) and d >= 0 for d in s.shape):
                    raise InputError(
                        f"constants: input {s.describe()} has dynamic dimensions; a constant "
                        "needs a static shape (every element gets the value). Feed this input "
                        "from the data instead.")
                out.append(replace(s, batch_axis=None))
                continue
            axis = self.batch_axes.get(s.name, _detect_batch_axis(s.shape, lead))
            if axis is not None and not -len(s.shape) <= axis < len(s.shape):
                raise InputError(f"batch_axes: input {s.describe()} has rank {len(s.shape)}; "
                                 f"axis {axis} is outside it. Give an axis from 0 to "
                                 f"{len(s.shape) - 1}.")
            out.append(replace(s, batch_axis=None if axis is None else axis % len(s.shape)))
        return out


def _detect_batch_axis(shape: tuple[Dim, ...], lead: set[str]) -> int | None:
    if not shape:
        return None
    named = [i for i, d in enumerate(shape) if isinstance(d, str) and "batch" in d.lower()]
    if len(named) == 1:
        return named[0]
    if not isinstance(shape[0], int):
        return 0
    same = [i for i, d in enumerate(shape) if isinstance(d, str) and d in lead]
    if len(same) == 1:
        return same[0]
    # not "the one dynamic axis": [8, seq] is a static batch of 8 with a dynamic length
    return 0


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
    """Validate ``batch_size`` / ``max_samples`` (errors name the parameters)."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be a positive integer.")
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples={max_samples}: must be a positive integer.")


def validate_batch(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec],
                   source: str) -> Batch:
    """Check one batch against the model's inputs and cast it to the expected dtypes.

    Checks names (missing and unexpected inputs), rank, dtype compatibility and static
    dims other than the batch axis (the data's first axis; inputs without a batch axis are
    checked whole). Returns the batch with arrays cast to the model's dtypes
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
        sample = spec.sample_shape
        sample_axis = 0 if spec.batch_axis is not None else None
        if arr.ndim != len(spec.shape):
            where = (f"The first axis of the data is the sample axis; the model's batch axis "
                     f"of this input is axis {spec.batch_axis}." if sample_axis is not None
                     else "This input has no batch axis: it is fed whole.")
            raise InputError(
                f"data {source}: input '{name}' has rank {arr.ndim} (shape "
                f"{tuple(arr.shape)}) but the model expects rank {len(spec.shape)} "
                f"({spec.describe()}). {where}"
            )
        got = arr.shape[1:] if sample_axis is not None else arr.shape
        for axis, (g, dim) in enumerate(zip(got, sample, strict=True)):
            if isinstance(dim, int) and dim > 0 and g != dim:
                raise InputError(
                    f"data {source}: input '{name}' has shape {tuple(arr.shape)} but the model "
                    f"expects {spec.describe()} (axis {axis + (sample_axis is not None)} must "
                    f"be {dim}{_layout_note(spec)}). {_axis_hint(spec, got)}Resize or "
                    "preprocess the data to the model's input shape."
                )
        out[name] = _cast(arr, spec, source)
    return out


#: integer data may be cast to a float input (``allow_cast``); see data/_common.allow_cast.
ALLOW_INT_TO_FLOAT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "quantkit_allow_int_to_float", default=False)


def _axis_hint(spec: InputSpec, got: tuple[int, ...]) -> str:
    """Which batch axis would make the data fit, as advice (empty when none would)."""
    if spec.batch_axis is None:
        return ""
    for k in range(len(spec.shape)):
        rest = spec.shape[:k] + spec.shape[k + 1:]
        if k != spec.batch_axis and all(not isinstance(d, int) or d <= 0 or d == g
                                        for d, g in zip(rest, got, strict=True)):
            return (f"The data fits if the model's batch axis of '{spec.name}' is axis {k}: "
                    f"declare it with the batch_axes option ({spec.name}={k}). Otherwise: ")
    return ""


def _layout_note(spec: InputSpec) -> str:
    if not spec.batch_axis:  # 0: the data's layout is the model's
        return ""
    dims = ", ".join("?" if d is None else str(d) for d in spec.sample_shape)
    return (f"; the model's batch axis is axis {spec.batch_axis}, the data holds samples first, "
            f"each [{dims}]")


def batch_samples(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec], *,
                  fed: bool = False) -> int:
    """The number of samples in a batch; 1 when every input is fed whole.

    Args:
        batch: the batch.
        specs: the model's inputs.
        fed: ``batch`` is in the model's layout (from :func:`static_batch_chunks`: samples on
            each input's batch axis), not the data's (samples first).
    """
    for s in specs:
        if s.batch_axis is not None and s.name in batch:
            return int(np.shape(batch[s.name])[s.batch_axis if fed else 0])
    return 1


def static_batch_chunks(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec],
                        ) -> Iterator[Batch]:
    """``batch`` (validated, samples first) as the model takes it, chunk by chunk.

    The one place that turns data into model feeds, for capture and for every evaluator:
    each input's samples move from the first axis to its declared batch axis, inputs without
    one are passed as they are, and when the batch axis is static (every input that has one
    must agree on its size) the samples go in chunks of that size. Only batch axes are ever
    sliced. A remainder smaller than the static size is dropped, with a warning.

    Raises:
        InputError: inputs whose static batch sizes differ (name each input's batch axis).
    """
    static = {s.name: s.static_batch for s in specs if s.static_batch is not None}
    if len(set(static.values())) > 1:
        sizes = ", ".join(f"'{n}' {b} on axis {next(s.batch_axis for s in specs if s.name == n)}"
                          for n, b in static.items())
        raise InputError(
            f"the model's inputs declare different fixed batch sizes ({sizes}). Declare the "
            "batch axis of the inputs whose batch is not their first axis (the batch_axes "
            "option, e.g. state=1), or give a fixed input its value as a constant.")
    n = batch_samples(batch, specs)
    size = next(iter(static.values()), None) or n

    def feeds(lo: int, hi: int) -> Batch:
        out: Batch = {}
        for s in specs:
            arr = batch[s.name]
            if s.batch_axis is None:
                out[s.name] = arr
            else:
                part = arr[lo:hi]
                out[s.name] = np.moveaxis(part, 0, s.batch_axis) if s.batch_axis else part
        return out

    for lo in range(0, n - size + 1, size):
        yield feeds(lo, lo + size)
    if n % size:
        logger.warning("dropping %d samples: the model's batch axis is fixed at %d",
                       n % size, size)


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
