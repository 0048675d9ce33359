"""Typed option groups shared by the library entry points, the recipes and the command line.

Frozen groups replace the parameter clump that calibration, rescue, evaluation and sweeps
used to thread one keyword at a time:

* :class:`DataOptions` -- how a data source is read: batch size, sample limit, seed, image
  preprocessing, column mapping, streaming, constant inputs, batch axes, integer casts;
* :class:`CalibrationOptions` -- the calibration method, its options, non-finite values, the
  activation memory budget and the TensorRT cache header version;
* :class:`RuntimeOptions` -- ONNX Runtime execution providers and threads;
* :class:`TimingOptions` -- latency timing: iterations, warm-up runs, rounds.

The recipe schema (:mod:`quantkit.sweep.recipe`) embeds :class:`DataOptions` in each data set
(its ``calibration:`` block, method and percentile, gives a config's
:class:`CalibrationOptions`), and the command line builds each group once
(:mod:`quantkit.cli.options`).

Errors name the library parameter (``batch_size=0``), never a command-line flag: the CLI
translates parameter names into flags when it prints (:mod:`quantkit.cli.flags`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantkit.calibrators.base import DEFAULT_METHOD
from quantkit.calibrators.cache import DEFAULT_TRT_VERSION
from quantkit.data.preprocess import PreprocessSpec
from quantkit.data.resolve import OpenOptions
from quantkit.errors import InputError

__all__ = [
    "CalibrationOptions",
    "DataOptions",
    "RunOptions",
    "RuntimeOptions",
    "TimingOptions",
    "refuse_unknown",
    "resolve_options",
    "split_settings",
]

_O = TypeVar("_O", bound="_Options")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def of(cls: type[_O], base: _O | Mapping[str, Any] | None = None, **changes: Any) -> _O:
        """``base`` (an instance, a mapping of its fields or ``None``) with ``changes`` applied.

        Raises:
            InputError: an unknown field or a bad value, naming it as a parameter
                (``batch_size=0: ...``).
        """
        if isinstance(base, cls):  # a subclass (a recipe's data set) gives its fields of cls
            values = {k: getattr(base, k) for k in cls.model_fields
                      if k in base.model_fields_set}
        else:
            values = dict(base or {})
        values.update(changes)
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            first = err.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or cls.__name__
            if first["type"] == "extra_forbidden":
                known = ", ".join(cls.model_fields)
                raise InputError(f"{name}: not an option of {cls.__name__}; its options are: "
                                 f"{known}.") from None
            given = values.get(str(first["loc"][0])) if first["loc"] else None
            shown = repr(given) if len(repr(given)) <= 40 else f"{repr(given)[:40]}..."
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise InputError(f"{name}={shown}: {msg}.") from None


class DataOptions(_Options):
    """How a data source is read.

    Attributes:
        batch_size: samples per batch.
        max_samples: use at most this many samples (``None``: all).
        seed: with ``max_samples``, read a seeded random subset instead of the first samples
            (sources of known length only).
        preprocess: image preprocessing (a :class:`~quantkit.data.PreprocessSpec` or the
            recipe's mapping); default derived from the input shape.
        columns: ``{input name: column}`` where the data's names differ from the model's.
        streaming: read ``hf:`` datasets as streams.
        constants: ``{input name: value}`` for inputs fed one fixed value instead of data.
        batch_axes: ``{input name: axis}`` for inputs whose batch is not their first axis.
        allow_cast: cast integer data for floating-point inputs instead of refusing it.
    """

    batch_size: int = Field(32, ge=1)
    max_samples: int | None = Field(None, ge=1)
    seed: int | None = None
    preprocess: dict[str, Any] | PreprocessSpec | None = None
    columns: dict[str, str] | None = None
    streaming: bool = False
    constants: dict[str, float | int | bool] = Field(default_factory=dict)
    batch_axes: dict[str, int] = Field(default_factory=dict)
    allow_cast: bool = False

    @classmethod
    def coerce(cls, data_options: DataOptions | Mapping[str, Any] | None = None,
               **changes: Any) -> DataOptions:
        """A :class:`DataOptions` from an instance, a mapping or ``None``, ``changes`` applied.

        The mapping holds fields by name (the keyword arguments of
        :func:`quantkit.data.open_source` are fields); ``None`` values in ``changes`` leave the
        field as it is.
        """
        return cls.of(data_options, **{k: v for k, v in changes.items() if v is not None})

    def open_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`quantkit.data.open_source` (the layout included)."""
        out: dict[str, Any] = {"preprocess": self.preprocess, "columns": self.columns,
                               "streaming": self.streaming, "seed": self.seed}
        if self.constants:
            out["constants"] = dict(self.constants)
        if self.batch_axes:
            out["batch_axes"] = dict(self.batch_axes)
        return out

    def open_options(self) -> OpenOptions:
        """The part a source kind's opener reads (:class:`quantkit.data.resolve.OpenOptions`)."""
        spec = self.preprocess
        if isinstance(spec, Mapping):
            spec = PreprocessSpec.from_mapping(spec)
        return OpenOptions(spec, self.columns, self.streaming, self.seed)


class CalibrationOptions(_Options):
    """How activations are calibrated.

    Attributes:
        method: ``auto`` (default), ``entropy``, ``minmax``, ``percentile``, ``mse`` or a
            plugin's name (case-insensitive).
        method_options: options of the method (e.g. ``{"percentile": 99.9}``).
        allow_nonfinite: skip NaN/Inf values instead of failing.
        memory_budget: bytes (or ``"4GiB"``) one batch's captured activations may take; above
            it the model runs in stages with identical scales. ``None``: 25 % of the available
            memory, at most 512 MiB.
        trt_version: version number written in the TensorRT cache header.
        quantized_only: calibrate only the activations a Q/DQ plan can quantize -- the
            activation inputs of Conv, ConvTranspose, Gemm, MatMul and of residual Adds
            (:mod:`quantkit.capture.select`) -- and skip the rest, whose scales no plan uses
            (what ``quantkit calibrate`` does unless ``--all-tensors``). A model where no op
            reads one is calibrated whole. The scales of the tensors calibrated either way are
            identical; a TensorRT cache for implicit quantization needs every tensor.
    """

    method: str = DEFAULT_METHOD
    method_options: dict[str, Any] = Field(default_factory=dict)
    allow_nonfinite: bool = False
    memory_budget: int | str | None = None
    trt_version: int = DEFAULT_TRT_VERSION
    quantized_only: bool = False


class RuntimeOptions(_Options):
    """Where ONNX Runtime runs.

    Attributes:
        providers: execution providers (default: CUDA when available, else CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """

    providers: tuple[str, ...] | None = None
    threads: int | None = Field(None, ge=1)

    @property
    def provider_list(self) -> list[str] | None:
        """:attr:`providers` as a list (what ONNX Runtime takes), or ``None``."""
        return list(self.providers) if self.providers is not None else None


class TimingOptions(_Options):
    """How latency is timed.

    Attributes:
        iterations: timed runs per round (0: no timing).
        warmup: untimed runs before timing.
        repeats: timing rounds (the range of their medians is the run-to-run noise).
    """

    iterations: int = Field(30, ge=0)
    warmup: int = Field(5, ge=0)
    repeats: int = Field(3, ge=1)


#: which option group each legacy keyword of the entry points belongs to
_GROUPS: dict[str, type[_Options]] = {
    **dict.fromkeys(("batch_size", "max_samples", "allow_cast"), DataOptions),
    **dict.fromkeys(CalibrationOptions.model_fields, CalibrationOptions),
    **dict.fromkeys(RuntimeOptions.model_fields, RuntimeOptions),
}


def split_settings(settings: Mapping[str, Any], where: str,
                   allowed: Sequence[str] | None = None,
                   ) -> dict[type[_Options], dict[str, Any]]:
    """Sort keyword arguments of an entry point into their option groups.

    Entry points such as :func:`quantkit.capture.calibrate` take the option objects and, for
    compatibility, their fields as keywords (``method="entropy"``, ``batch_size=32``).

    Args:
        settings: the keywords given.
        where: the entry point, named in the error.
        allowed: the keywords it accepts (default: every field of the three groups).

    Raises:
        InputError: a keyword that is no option (naming it and the accepted ones).
    """
    names = list(allowed) if allowed is not None else list(_GROUPS)
    out: dict[type[_Options], dict[str, Any]] = {}
    for key, value in settings.items():
        if key not in names or key not in _GROUPS:
            raise InputError(f"{where}() got an unexpected keyword argument {key!r}; it takes "
                             f"{', '.join(names)} (or the option objects).")
        out.setdefault(_GROUPS[key], {})[key] = value
    return out


class RunOptions(NamedTuple):
    """The three option groups of one run (calibration, data, runtime)."""

    calibration: CalibrationOptions
    data: DataOptions
    runtime: RuntimeOptions


def resolve_options(settings: dict[str, Any], where: str) -> RunOptions:
    """Pop the option objects and their fields given as keywords from ``settings``.

    ``settings`` may hold ``calibration`` (a :class:`CalibrationOptions`), ``data_options``
    (a :class:`DataOptions` or a mapping of its fields), ``runtime`` (a
    :class:`RuntimeOptions`) and any field of the three groups as a keyword, which overrides
    the objects. What is left in ``settings`` afterwards is not an option.

    Raises:
        InputError: a keyword that is no option is left for the caller; a bad value names
            its parameter.
    """
    calibration = settings.pop("calibration", None)
    data_options = settings.pop("data_options", None)
    runtime = settings.pop("runtime", None)
    fields = {k: settings.pop(k) for k in list(settings) if k in _GROUPS}
    groups = split_settings(fields, where)
    return RunOptions(CalibrationOptions.of(calibration, **groups.get(CalibrationOptions, {})),
                    DataOptions.coerce(data_options, **groups.get(DataOptions, {})),
                    RuntimeOptions.of(runtime, **groups.get(RuntimeOptions, {})))


def refuse_unknown(settings: Mapping[str, Any], where: str) -> None:
    """Raise for keywords left over after :func:`resolve_options` (a typo, usually)."""
    if settings:
        key = next(iter(settings))
        raise InputError(f"{where}() got an unexpected keyword argument {key!r}; it takes the "
                         "calibration, data_options and runtime option objects or their "
                         f"fields ({', '.join(_GROUPS)}).")
