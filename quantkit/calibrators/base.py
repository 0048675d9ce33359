"""The calibrator interface and its registry.

A :class:`Calibrator` holds one small, fixed-size statistic per tensor (a histogram, a running
max) -- never the activations themselves -- so memory is flat in the number of samples:

* ``update(name, array)`` folds one batch of one tensor into its statistic;
* ``merge(other)`` adds another calibrator's statistics (shards calibrated in parallel);
* ``compute_amax()`` returns ``{tensor name: amax}``.

Methods register themselves with :func:`register_calibrator`; plugins do the same from their
own package (entry-point group ``quantkit.calibrators``) or a file (``--calibrator path.py``).
"""

from __future__ import annotations

import abc
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="Calibrator")

#: the method used when none is given: ``auto`` (see ``docs/calibration_methods.md``).
DEFAULT_METHOD = "auto"
#: TensorRT cache header algorithms (``docs/tensorrt_rules.md#calibration-cache-format``).
CACHE_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration",
                    "LegacyCalibration")


class NonFiniteError(InputError):
    """A tensor held NaN or Inf values during calibration."""


class Calibrator(abc.ABC):
    """Streaming, mergeable per-tensor statistics that produce an amax per tensor.

    Subclasses set :attr:`method` and implement :meth:`_update_tensor`, :meth:`_merge_tensor`,
    :meth:`_amax`, :meth:`_empty_like_tensor` and the state conversion hooks.

    Args:
        allow_nonfinite: drop NaN/Inf values (and count them in :attr:`nonfinite_counts`)
            instead of raising :class:`NonFiniteError`.
    """

    #: method name used on the command line and in the scales JSON.
    method: ClassVar[str] = ""
    #: algorithm written in the TensorRT cache header.
    cache_algorithm: ClassVar[str] = "EntropyCalibration2"
    #: ``update_many`` may fold different tensors in concurrent threads: set it on
    #: subclasses whose ``_update_tensor`` touches only its own ``stat`` (the built-in
    #: histogram methods do; their numpy work releases the GIL). Off by default for plugins.
    parallel_updates: ClassVar[bool] = False

    def __init__(self, *, allow_nonfinite: bool = False) -> None:
        self.allow_nonfinite = allow_nonfinite
        self._stats: dict[str, Any] = {}
        self.nonfinite_counts: dict[str, int] = {}

    # -- public API -------------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        """Tensors seen so far, in first-seen order."""
        return list(self._stats)

    def update(self, name: str, array: npt.ArrayLike) -> None:
        """Fold one batch of tensor ``name`` into its statistic."""
        x = np.asarray(array, dtype=np.float32)
        if x.size == 0:
            self._stats.setdefault(name, self._new_tensor())
            return
        # max |x| without materialising |x|; NaN and Inf propagate into it.
        top = float(max(x.max(), -x.min()))
        if not np.isfinite(top):
            finite = np.isfinite(x)
            bad = int(x.size - np.count_nonzero(finite))
            if not self.allow_nonfinite:
                raise NonFiniteError(
                    f"tensor '{name}': {bad} of {x.size} values in this batch are NaN or "
                    "Inf. Check the input data and the model; pass --allow-nonfinite "
                    "(allow_nonfinite=True) to skip non-finite values instead."
                )
            self.nonfinite_counts[name] = self.nonfinite_counts.get(name, 0) + bad
            x = x[finite]
            top = float(np.abs(x).max()) if x.size else 0.0
        stat = self._stats.get(name)
        if stat is None:
            stat = self._stats[name] = self._new_tensor()
        self._update_tensor(name, stat, x, top)

    def update_many(self, tensors: Mapping[str, npt.ArrayLike], *,
                    threads: int | None = None) -> None:
        """:meth:`update` for every ``{name: array}`` of one batch.

        With :attr:`parallel_updates`, the tensors are folded by a small thread pool (one
        thread per core, :func:`update_threads`, or ``threads``). Each tensor's statistic is
        updated by exactly one thread, so the result is identical to the sequential loop;
        errors are raised for the first failing tensor in the mapping's order, as the loop
        would.
        """
        items = list(tensors.items())
        pool = (_update_pool(threads) if self.parallel_updates and len(items) > 1 else None)
        if pool is None:
            for name, array in items:
                self.update(name, array)
            return
        for name, _ in items:  # first-seen order independent of thread scheduling
            if name not in self._stats:
                self._stats[name] = self._new_tensor()
        futures = [pool.submit(self.update, name, array) for name, array in items]
        errors = [f.exception() for f in futures]  # waits for all of them
        for err in errors:
            if err is not None:
                raise err

    def merge(self: C, other: C) -> C:
        """Add ``other``'s statistics to this calibrator's (in place) and return ``self``."""
        if type(other) is not type(self) or other.settings() != self.settings():
            raise InputError(
                f"cannot merge a {other.method} calibrator {other.settings()} into a "
                f"{self.method} calibrator {self.settings()}: shards must use the same method "
                "and settings."
            )
        for name, stat in other._stats.items():
            mine = self._stats.get(name)
            if mine is None:
                self._stats[name] = self._empty_like_tensor(stat)
                mine = self._stats[name]
            self._merge_tensor(name, mine, stat)
        for name, n in other.nonfinite_counts.items():
            self.nonfinite_counts[name] = self.nonfinite_counts.get(name, 0) + n
        return self

    def compute_amax(self) -> dict[str, float]:
        """Amax of every tensor seen, in first-seen order.

        With :attr:`parallel_updates`, tensors are computed by the update thread pool (each
        amax depends on its own statistic only: the same values as one by one).
        """
        items = list(self._stats.items())
        pool = _update_pool() if self.parallel_updates and len(items) > 1 else None
        if pool is None:
            return {name: self._amax(name, stat) for name, stat in items}
        return dict(zip([n for n, _ in items],
                        pool.map(lambda item: self._amax(*item), items), strict=True))

    def empty_like(self: C) -> C:
        """A calibrator with the same settings and bin widths but no counts (seeds a shard)."""
        new = self._new_calibrator()
        new._stats = {n: self._empty_like_tensor(s) for n, s in self._stats.items()}
        return new

    def settings(self) -> dict[str, Any]:
        """Method-specific settings recorded in the scales JSON (e.g. the percentile)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Plain-data state (numbers, strings, numpy arrays): checkpoints, Ray tasks."""
        return {
            "method": self.method,
            "settings": self.settings(),
            "allow_nonfinite": self.allow_nonfinite,
            "tensors": {n: self._tensor_state(s) for n, s in self._stats.items()},
            "nonfinite_counts": dict(self.nonfinite_counts),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Calibrator:
        """Rebuild a calibrator from :meth:`state` (of any registered method)."""
        klass = get_calibrator_class(str(state["method"]))
        cal = klass(allow_nonfinite=bool(state["allow_nonfinite"]), **state["settings"])
        cal._stats = {n: cal._tensor_from_state(s) for n, s in state["tensors"].items()}
        cal.nonfinite_counts = dict(state["nonfinite_counts"])
        return cal

    # -- subclass hooks ---------------------------------------------------------------------
    def _new_calibrator(self: C) -> C:
        return type(self)(allow_nonfinite=self.allow_nonfinite, **self.settings())

    @abc.abstractmethod
    def _new_tensor(self) -> Any:
        """A fresh, empty statistic."""

    @abc.abstractmethod
    def _update_tensor(self, name: str, stat: Any, x: npt.NDArray[np.float32],
                       absmax: float) -> None:
        """Fold finite float32 values ``x`` (signed; ``absmax = max|x|``) into ``stat``."""

    @abc.abstractmethod
    def _merge_tensor(self, name: str, stat: Any, other: Any) -> None:
        """Add ``other`` into ``stat`` in place."""

    @abc.abstractmethod
    def _empty_like_tensor(self, stat: Any) -> Any:
        """An empty statistic compatible with ``stat``."""

    @abc.abstractmethod
    def _amax(self, name: str, stat: Any) -> float:
        """The amax for one tensor."""

    @abc.abstractmethod
    def _tensor_state(self, stat: Any) -> dict[str, Any]:
        """Plain-data form of one statistic."""

    @abc.abstractmethod
    def _tensor_from_state(self, state: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`_tensor_state`."""


# -- parallel updates -------------------------------------------------------------------------
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def update_threads() -> int:
    """Threads used by :meth:`Calibrator.update_many`.

    ``QUANTKIT_UPDATE_THREADS`` if set, else the CPUs this process may run on (at most 8).
    """
    env = os.environ.get("QUANTKIT_UPDATE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _update_pool(threads: int | None = None) -> ThreadPoolExecutor | None:
    """The shared pool of ``threads`` (default :func:`update_threads`) workers; None below 2."""
    threads = update_threads() if threads is None else threads
    if threads < 2:
        return None
    with _POOL_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix=f"quantkit-update{threads}")
        return pool


# -- registry ---------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Calibrator]] = {}
_ENTRY_POINTS_LOADED = False
_PLUGIN_FILES: dict[Path, list[str]] = {}


def register_calibrator(name: str) -> Callable[[type[C]], type[C]]:
    """Class decorator registering a :class:`Calibrator` under ``name`` (``--method name``)."""

    def deco(cls: type[C]) -> type[C]:
        if not (isinstance(cls, type) and issubclass(cls, Calibrator)):
            raise TypeError(f"@register_calibrator({name!r}) needs a Calibrator subclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a calibrator named {name!r} is already registered")
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="quantkit.calibrators"):
        try:
            ep.load()
        except Exception as err:  # a broken plugin must not break built-in methods
            logger.warning("could not load calibrator plugin %s: %s", ep.name, err)


def available_methods() -> list[str]:
    """Registered method names (built-ins and loaded plugins)."""
    _load_entry_points()
    return sorted(_REGISTRY)


def canonical_method(method: str) -> str:
    """The registered spelling of ``method`` (``MSE`` -> ``mse``).

    An exact match wins, then a case-insensitive one; unknown names are returned unchanged.
    """
    if method not in _REGISTRY:
        _load_entry_points()
    if method in _REGISTRY:
        return method
    folded = [name for name in _REGISTRY if name.lower() == method.lower()]
    return folded[0] if len(folded) == 1 else method


def get_calibrator_class(method: str) -> type[Calibrator]:
    """The class registered as ``method`` (case-insensitive, see :func:`canonical_method`)."""
    try:
        return _REGISTRY[canonical_method(method)]
    except KeyError:
        raise InputError(
            f"--method {method}: unknown calibration method. Choose one of: "
            f"{', '.join(available_methods())} (or load a plugin with --calibrator FILE.py)."
        ) from None


def create_calibrator(method: str, **options: Any) -> Calibrator:
    """Instantiate the calibrator registered as ``method`` with ``options``."""
    klass = get_calibrator_class(method)
    try:
        return klass(**options)
    except TypeError as err:
        raise InputError(f"--method {method}: bad options {options}: {err}") from err


def load_calibrator_plugin(path: str | Path) -> list[str]:
    """Import a Python file that registers calibrators; return the newly registered names."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--calibrator {p}: no such file. Give the path of a Python file.")
    if p.resolve() in _PLUGIN_FILES:  # loading the same file twice is a no-op
        return list(_PLUGIN_FILES[p.resolve()])
    before = set(_REGISTRY)
    spec = importlib.util.spec_from_file_location(f"quantkit_plugin_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise InputError(f"--calibrator {p}: not an importable Python file.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise InputError(f"--calibrator {p}: importing it failed: {err}") from err
    new = sorted(set(_REGISTRY) - before)
    if not new:
        raise InputError(
            f"--calibrator {p}: the file registered no calibrator. Decorate a Calibrator "
            "subclass with @quantkit.calibrators.register_calibrator('name')."
        )
    _PLUGIN_FILES[p.resolve()] = new
    return new


def iter_registered() -> Iterable[tuple[str, type[Calibrator]]]:
    """(name, class) pairs of the registry."""
    _load_entry_points()
    return sorted(_REGISTRY.items())
