"""The backend interface, its registry, and the build options shared by every backend.

A backend turns an ONNX model into something that runs (an engine) and runs it. Generic code
asks the registry for one by name (:func:`get_backend`) and talks to it only through the small
:class:`Backend` protocol, so it never imports TensorRT itself. Nothing here imports a heavy
module: each backend imports its library inside its methods.

The ``--shapes`` / ``--min-shapes`` / ``--max-shapes`` syntax (docs/cli.md#build) is
parsed here too, without TensorRT, so the command line can reject a malformed flag before any
library is loaded.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from quantkit.errors import InputError, MissingExtraError

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
StatusCallback = Callable[[str], None]


@dataclass(frozen=True)
class ShapeRange:
    """The optimisation-profile shapes of one input (equal for a static input)."""

    min: Shape
    opt: Shape
    max: Shape

    def to_json(self) -> dict[str, list[int]]:
        """``{"min": [...], "opt": [...], "max": [...]}``."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class BuildOptions:
    """What ``quantkit build`` can ask of a backend's builder.

    Attributes:
        shapes: opt shape per input (``--shapes``).
        min_shapes: min shape per input (``--min-shapes``; defaults to the opt shape).
        max_shapes: max shape per input (``--max-shapes``; defaults to the opt shape).
        workspace_mib: limit of the builder's workspace memory pool in MiB (None: library
            default).
        opt_level: ``builder_optimization_level``, 0-5 (None: library default, 3).
        timing_cache: timing-cache file to load (if it exists) and save after a successful
            build. Full TensorRT only: TensorRT-RTX ignores timing caches.
        compute_capabilities: TensorRT-RTX target GPUs, e.g. ``("SM89", "SM120")``; empty means
            the library default (portable across its supported GPUs).
        engine_log: build with a VERBOSE logger and DETAILED profiling verbosity and read the
            per-kernel precision the builder logs (``engine_layers`` in the sidecar).
    """

    shapes: Mapping[str, Shape] = field(default_factory=dict)
    min_shapes: Mapping[str, Shape] = field(default_factory=dict)
    max_shapes: Mapping[str, Shape] = field(default_factory=dict)
    workspace_mib: int | None = None
    opt_level: int | None = None
    timing_cache: Path | None = None
    compute_capabilities: tuple[str, ...] = ()
    engine_log: bool = True

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise InputError(f"workspace_mib={self.workspace_mib}: give a positive size in "
                             "MiB, e.g. workspace_mib=1024.")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise InputError(f"opt_level={self.opt_level}: TensorRT's builder optimisation "
                             "level goes from 0 (fastest build) to 5 (most tuning); default 3.")
        for flag, table in (("min_shapes", self.min_shapes), ("max_shapes", self.max_shapes)):
            for name in table:
                if name not in self.shapes:
                    raise InputError(
                        f"{flag}={name}: input '{name}' has no opt shape. Give it in shapes= "
                        f"({name}:DIMS); min_shapes= and max_shapes= only widen the range "
                        "around it."
                    )


@dataclass(frozen=True)
class BuildResult:
    """A successful build: the files written and the sidecar document."""

    engine_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]

    @property
    def disagreements(self) -> list[dict[str, Any]]:
        """Layers whose precision differs between plan, parsed network and engine."""
        return list(self.sidecar.get("disagreements", []))


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one inference of ``batch_size`` samples, in milliseconds.

    Shared by every runner (host timer for ONNX Runtime, CUDA events for TensorRT) and by
    :mod:`quantkit.evaluate`. With ``repeats`` > 1 the timed runs were split into that many
    rounds: ``p50_ms`` is the median of the rounds' medians and ``p50_min_ms`` / ``p50_max_ms``
    their spread (run-to-run noise); the other percentiles pool every timed run.
    """

    iterations: int
    warmup: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    batch_size: int = 1
    timer: str = "perf_counter"
    repeats: int = 1
    p50_min_ms: float | None = None
    p50_max_ms: float | None = None

    @property
    def throughput(self) -> float:
        """Samples per second at the mean latency."""
        return self.batch_size / (self.mean_ms / 1e3) if self.mean_ms > 0 else float("inf")

    @property
    def per_sample_ms(self) -> float:
        """``p50_ms`` divided by the batch size."""
        return self.p50_ms / max(self.batch_size, 1)

    @classmethod
    def from_times(cls, times_ms: Sequence[float] | np.ndarray, *, warmup: int,
                   batch_size: int = 1, timer: str = "perf_counter") -> LatencyStats:
        """Summarise per-run times in milliseconds (one round)."""
        return cls.from_repeats([times_ms], warmup=warmup, batch_size=batch_size, timer=timer)

    @classmethod
    def from_repeats(cls, rounds_ms: Sequence[Sequence[float] | np.ndarray], *, warmup: int,
                     batch_size: int = 1, timer: str = "perf_counter") -> LatencyStats:
        """Summarise several rounds of per-run times (see the class docstring)."""
        import numpy as np

        rounds = [np.asarray(r, dtype=np.float64) for r in rounds_ms]
        rounds = [r for r in rounds if r.size]
        if not rounds:
            raise InputError("no timed iterations: use at least one iteration.")
        t = np.concatenate(rounds)
        medians = [float(np.median(r)) for r in rounds]
        p90, p99 = np.percentile(t, [90, 99])
        return cls(int(t.size), warmup, float(t.mean()), float(np.median(medians)), float(p90),
                   float(p99), float(t.min()), float(t.max()), batch_size, timer, len(rounds),
                   min(medians), max(medians))

    def to_json(self) -> dict[str, float | int | str | None]:
        """The fields (and the throughput) as a JSON-able dict."""
        return {**self.__dict__, "throughput": self.throughput}


@runtime_checkable
class Runner(Protocol):
    """A loaded engine that runs on numpy inputs (see :mod:`quantkit.backends.runner`)."""

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on host arrays (input name -> array) and return the outputs."""
        ...

    def latency(self, feeds: Mapping[str, np.ndarray], *, warmup: int = 10,
                iterations: int = 100) -> LatencyStats:
        """Time ``iterations`` runs after ``warmup`` untimed ones."""
        ...

    def close(self) -> None:
        """Release device memory and the engine."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What every backend offers. Methods import the backend's library lazily."""

    #: registry name, e.g. ``"tensorrt"`` or ``"tensorrt-rtx"``
    name: str

    def available(self) -> bool:
        """Whether the backend's library is installed and importable."""
        ...

    def version(self) -> str | None:
        """The library's version string, or None when it is not installed."""
        ...

    def build(self, model: str | os.PathLike[str], output: str | os.PathLike[str],
              options: BuildOptions | None = None, *,
              status: StatusCallback | None = None) -> BuildResult:
        """Build ``model`` into ``output`` (plus ``output + ".json"``), atomically."""
        ...

    def runner(self, engine: str | os.PathLike[str], **kwargs: Any) -> Runner:
        """Load an engine for running (needs a GPU the engine was built for)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description: name, module, availability, version, capabilities."""
        ...


class NoBackendError(MissingExtraError):
    """Neither TensorRT nor TensorRT-RTX is installed (exit code 2)."""

    def __init__(self, what: str = "quantkit build") -> None:
        InputError.__init__(
            self,
            f"{what} needs TensorRT-RTX or TensorRT, and neither is installed. Install "
            "TensorRT-RTX with: pip install 'quantkit[rtx]' (builds on any machine, even "
            "without a GPU), or TensorRT 10/11 with: pip install 'quantkit[tensorrt]' (needs an "
            "NVIDIA GPU to build)."
        )
        self.extra = "rtx"
        self.module = "tensorrt_rtx_bindings"


# name -> "module:attribute" of a zero-argument factory; imported on first use.
_REGISTRY: dict[str, str | Callable[[], Backend]] = {
    "tensorrt": "quantkit.backends.tensorrt:TensorRTBackend",
    "tensorrt-rtx": "quantkit.backends.tensorrt_rtx:TensorRTRTXBackend",
    "onnxruntime": "quantkit.backends.onnxruntime:OnnxRuntimeBackend",
}
_instances: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Register a backend under ``name`` (a zero-argument factory, called on first use)."""
    _REGISTRY[name] = factory
    _instances.pop(name, None)


def backend_names() -> list[str]:
    """Registered backend names, in registration order."""
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; its library is not imported yet.

    Raises:
        InputError: no backend of that name.
    """
    if name in _instances:
        return _instances[name]
    entry = _REGISTRY.get(name)
    if entry is None:
        raise InputError(f"backend={name!r}: unknown backend; choose one of "
                         f"{', '.join(_REGISTRY)}.")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        factory: Callable[[], Backend] = getattr(importlib.import_module(module), attr)
    else:
        factory = entry
    backend = factory()
    _instances[name] = backend
    return backend


def default_backend_name() -> str:
    """``tensorrt`` when the real TensorRT is installed, else ``tensorrt-rtx``.

    Raises:
        NoBackendError: neither is installed.
    """
    for name in ("tensorrt", "tensorrt-rtx"):
        if get_backend(name).available():
            return name
    raise NoBackendError()


# ---------------------------------------------------------------------------------------------
# shapes NAME:1x3x224x224[,NAME2:...] (--shapes on the command line)


def parse_shapes(text: str | None, param: str = "shapes") -> dict[str, Shape]:
    """Parse ``NAME:1x3x224x224[,NAME2:...]`` into ``{name: shape}``.

    The name is everything before the item's LAST ``:``, so names such as ``input:0`` work.
    A scalar input is written ``NAME:`` (empty dims). ``param`` is how errors name the text:
    the parameter that gave it (``shapes``, ``min_shapes``, ``max_shapes``, which the command
    line prints as its flags) or a recipe key such as ``build.min_shapes``.

    Raises:
        InputError: malformed item, non-integer or negative dimension, a repeated name, a
            dimension over 2**31 - 1, or a 0 outside ``min_shapes``.
    """
    out: dict[str, Shape] = {}
    if text is None or not text.strip():
        return out
    given = f"{param}={text!r}"
    for item in text.split(","):
        item = item.strip()
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise InputError(f"{given}: '{item}' is not NAME:DIMS; write e.g. "
                             f"{param}='input:1x3x224x224' (several inputs separated by "
                             "commas).")
        parts = [p.strip() for p in dims.split("x")] if dims.strip() else []
        if not all(p.isdigit() for p in parts):
            raise InputError(f"{given}: '{dims}' in '{item}' is not a list of "
                             "non-negative integers separated by 'x', e.g. 1x3x224x224.")
        if name in out:
            raise InputError(f"{given}: input '{name}' is given twice.")
        shape = tuple(int(p) for p in parts)
        if any(d > _MAX_DIM for d in shape):
            raise InputError(f"{param}=: a dimension of '{name}' is over {_MAX_DIM} (TensorRT "
                             "dimensions are 32-bit); give the shape the engine will run at.")
        if 0 in shape and not param.endswith("min_shapes"):
            raise InputError(f"{param}={item[:80]!r}: a dimension of 0 makes '{name}' an empty "
                             "tensor; give the shape the engine runs at (an empty tensor, such "
                             "as an empty cache, belongs in min_shapes= only).")
        out[name] = shape
    return out


#: largest dimension TensorRT takes (dims are int32 in its optimisation profiles)
_MAX_DIM = 2**31 - 1


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "(scalar)"


def _dims(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _example(shape: Shape) -> str:
    return "x".join(str(d) if d >= 0 else "1" for d in shape)


def resolve_profile(inputs: Mapping[str, Shape], options: BuildOptions
                    ) -> dict[str, ShapeRange]:
    """Check the shape options against the network inputs and return every input's range.

    Args:
        inputs: network input name -> dims, ``-1`` for a dynamic dimension.
        options: the build options holding ``shapes`` / ``min_shapes`` / ``max_shapes``.

    Returns:
        One :class:`ShapeRange` per input; static inputs get their fixed shape three times.

    Raises:
        InputError: a name that is not an input, a rank mismatch, a static dimension changed,
            ``min <= opt <= max`` violated, or a dynamic input without a shape.
    """
    for flag, table in (("shapes", options.shapes), ("min_shapes", options.min_shapes),
                        ("max_shapes", options.max_shapes)):
        for name in table:
            if name not in inputs:
                raise InputError(
                    f"{flag}={name}: the model has no input named '{name}'. Its inputs are: "
                    + ", ".join(f"{n} {_dims(s)}" for n, s in inputs.items())
                    + " (-1 = dynamic)."
                )
    ranges: dict[str, ShapeRange] = {}
    for name, dims in inputs.items():
        opt = options.shapes.get(name)
        if opt is None:
            if any(d < 0 for d in dims):
                raise InputError(
                    f"model input '{name}' has dynamic dimensions {_dims(dims)} (-1 = dynamic)"
                    f" and no shape was given. Give one, e.g. shapes={name}:{_example(dims)},"
                    f" and for a range also min_shapes={name}:... max_shapes={name}:...."
                )
            ranges[name] = ShapeRange(dims, dims, dims)
            continue
        lo = options.min_shapes.get(name, opt)
        hi = options.max_shapes.get(name, opt)
        for flag, shape in (("shapes=", opt), ("min_shapes=", lo), ("max_shapes=", hi)):
            if len(shape) != len(dims):
                raise InputError(
                    f"{flag}{name}:{_fmt(shape)}: input '{name}' has rank {len(dims)} "
                    f"({_dims(dims)}, -1 = dynamic), the shape given has rank {len(shape)}."
                )
            for axis, (want, got) in enumerate(zip(dims, shape, strict=True)):
                if want >= 0 and want != got:
                    raise InputError(
                        f"{flag}{name}:{_fmt(shape)}: dimension {axis} of input '{name}' is "
                        f"fixed to {want} in the model ({_dims(dims)}); only -1 dimensions "
                        "can be chosen."
                    )
        bad = [a for a in range(len(dims)) if not lo[a] <= opt[a] <= hi[a]]
        if bad:
            raise InputError(
                f"input '{name}': min [{_fmt(lo)}] <= opt [{_fmt(opt)}] <= max [{_fmt(hi)}] "
                f"does not hold in dimension(s) {', '.join(map(str, bad))}. Fix min_shapes=, "
                "shapes= or max_shapes=."
            )
        ranges[name] = ShapeRange(lo, opt, hi)
    return ranges
