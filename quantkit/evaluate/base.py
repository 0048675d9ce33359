"""The :class:`Metric` interface, the metric registry, metric specs and metric plugins.

A metric is named by a *spec*: ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]`` on the command line
(``--metric detection:format=yolov8,score=0.3``), or in a recipe either that string or a mapping
(``metric: {name: detection, format: yolov8}``). A user metric is a Python file and a class:
``FILE.py:CLASS[:OPTIONS]`` or ``{plugin: FILE.py:CLASS, ...}``; an installed package can also
declare it in the entry point group ``quantkit.metrics`` (then it is used by its name).

Every metric takes the option ``batch_axis`` (the axis of the samples in the output it scores;
default: axis 0, or the one axis whose size is the batch size when axis 0 is not).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound="Metric")
T = TypeVar("T")

#: entry point group of installed metric plugins
ENTRY_POINT_GROUP = "quantkit.metrics"


class Metric(abc.ABC):
    """A task metric accumulated over batches.

    Evaluators call :meth:`bind_model` once, then per batch :meth:`prepare` (pick the
    output(s) and put the samples first) and :meth:`update`; :meth:`result` at the end. Without
    labels, a metric with ``needs_labels = False`` is scored against the FP32 model: its
    targets are :meth:`reference_targets` of the FP32 model's prepared outputs.
    """

    #: name used in recipes and results.csv
    name: ClassVar[str] = ""
    #: whether larger values are better (accuracy) or worse (error rates)
    higher_is_better: ClassVar[bool] = True
    #: whether the labels are strings (one text per sample) rather than integer classes
    text_labels: ClassVar[bool] = False
    #: False when the metric can score a model against the FP32 model's outputs (no labels)
    needs_labels: ClassVar[bool] = True
    #: the samples' axis in the scored output (``None``: axis 0, or the one axis whose size
    #: is the batch size); set by the ``batch_axis`` option of the spec
    batch_axis: int | None = None

    def bind_model(self, model: Any) -> None:  # noqa: B027 - optional hook, default no-op
        """Read what the metric needs from the FP32 model before any ``update``.

        ``model`` is a path or an ``onnx.ModelProto``. Called once by the evaluators; the
        default does nothing (see :class:`quantkit.evaluate.ocr.CharacterErrorRate` for a
        metric that reads the model's metadata).
        """

    def prepare(self, outputs: Mapping[str, np.ndarray], output: str, batch: int) -> Any:
        """What :meth:`update` receives for one batch of ``batch`` samples.

        ``outputs`` holds every model output by name, ``output`` is the scored one. The
        default returns the scored output with the samples on axis 0 (see
        :func:`samples_first`); a metric that reads several outputs overrides this.
        """
        return samples_first(outputs[output], batch, self.batch_axis, output)

    def reference_targets(self, reference: Any) -> Any:
        """Targets made from the FP32 model's prepared outputs (scoring without labels)."""
        raise InputError(f"metric {self.name} needs labels (integer classes or texts, one per "
                         "sample in data order); it cannot be scored against the FP32 model.")

    @abc.abstractmethod
    def update(self, outputs: Any, targets: Any) -> None:
        """Fold one batch of model outputs and their targets."""

    @abc.abstractmethod
    def result(self) -> float:
        """The metric over everything seen (in percent for accuracies and error rates)."""

    def details(self) -> dict[str, float]:
        """Secondary values (e.g. precision and recall next to an F1); empty by default."""
        return {}


def batch_axis_of(shape: tuple[int, ...], batch: int, declared: int | None = None) -> int:
    """The samples' axis of an output of ``shape`` for a batch of ``batch`` samples.

    ``declared`` wins; else axis 0 when its size is ``batch``, else the only axis of that size,
    else 0.
    """
    if declared is not None:
        return declared if declared >= 0 else declared + len(shape)
    if not shape or shape[0] == batch:
        return 0
    hits = [i for i, s in enumerate(shape) if s == batch]
    return hits[0] if len(hits) == 1 else 0


def samples_first(array: np.ndarray, batch: int, declared: int | None = None,
                  name: str = "output") -> np.ndarray:
    """``array`` with its samples' axis (:func:`batch_axis_of`) moved to the front."""
    arr = np.asarray(array)
    axis = batch_axis_of(arr.shape, batch, declared)
    if arr.ndim and not 0 <= axis < arr.ndim:
        raise InputError(f"batch_axis {declared}: the model output {name!r} has only "
                         f"{arr.ndim} axes (shape {list(arr.shape)}).")
    return np.moveaxis(arr, axis, 0) if arr.ndim and axis else arr


_METRICS: dict[str, type[Metric]] = {}
_ENTRY_POINTS_LOADED = False


def register_metric(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator registering a :class:`Metric` under ``name``."""

    def deco(cls: type[M]) -> type[M]:
        if not (isinstance(cls, type) and issubclass(cls, Metric)):
            raise TypeError(f"@register_metric({name!r}) needs a Metric subclass")
        cls.name = name
        _METRICS[name] = cls
        return cls

    return deco


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from quantkit.plugins import load_entry_points

    for name, obj in load_entry_points(ENTRY_POINT_GROUP, "metric"):
        if isinstance(obj, type) and issubclass(obj, Metric) and name not in _METRICS:
            register_metric(name)(obj)


def available_metrics() -> list[str]:
    """Registered metric names (built-ins and installed plugins)."""
    _load_entry_points()
    return sorted(_METRICS)


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A parsed metric spec: a registered name or a plugin file and class, and options."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    plugin: str | None = None

    @property
    def label(self) -> str:
        """The name shown in results (the registered name or the plugin's class name)."""
        return self.name


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def _parse_options(text: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in (p for p in text.split(",") if p.strip()):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"{where}: option {item!r} is not KEY=VALUE; write options as "
                             "NAME:KEY=VALUE,KEY=VALUE (e.g. detection:format=yolov8,score=0.3).")
        out[key.strip()] = _value(value)
    return out


def parse_metric(spec: str | Mapping[str, Any] | MetricSpec, where: str = "metric") -> MetricSpec:
    """Parse ``NAME[:OPTIONS]``, ``FILE.py:CLASS[:OPTIONS]`` or a recipe mapping."""
    if isinstance(spec, MetricSpec):
        return spec
    if isinstance(spec, Mapping):
        opts = {str(k): v for k, v in spec.items()}
        plugin, name = opts.pop("plugin", None), opts.pop("name", None)
        if (plugin is None) == (name is None):
            raise InputError(f"{where}: give either name (a registered metric: "
                             f"{', '.join(available_metrics())}) or plugin (FILE.py:CLASS), "
                             "and the metric's options next to it.")
        if plugin is not None:
            return _plugin_spec(str(plugin), opts, where)
        return MetricSpec(str(name), tuple(sorted(opts.items())))
    text = str(spec).strip()
    head, _, rest = text.partition(":")
    if head.endswith(".py"):
        cls, _, opts_text = rest.partition(":")
        return _plugin_spec(f"{head}:{cls}", _parse_options(opts_text, where), where)
    return MetricSpec(head, tuple(sorted(_parse_options(rest, where).items())))


def _plugin_spec(plugin: str, opts: dict[str, Any], where: str) -> MetricSpec:
    path, _, cls = plugin.partition(":")
    if not path.endswith(".py") or not cls.isidentifier():
        raise InputError(f"{where}: plugin {plugin!r} is not FILE.py:CLASS (a Python file and "
                         "the name of its Metric subclass).")
    return MetricSpec(cls, tuple(sorted(opts.items())), plugin)


def load_metric_plugin(plugin: str, where: str = "metric") -> type[Metric]:
    """Import ``FILE.py:CLASS`` and return the class (a :class:`Metric` subclass)."""
    path, _, cls_name = plugin.partition(":")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{where}: plugin file {p} does not exist; give FILE.py:CLASS with the "
                         "path of a Python file defining a quantkit.evaluate.Metric subclass.")
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]
    module_name = f"quantkit_metric_plugin_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, p)
        if spec is None or spec.loader is None:
            raise InputError(f"{where}: {p} is not an importable Python file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # so that instances can be copied and pickled
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise InputError(f"{where}: importing {p} failed: {type(err).__name__}: {err}") \
                from err
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise InputError(f"{where}: {p} defines no Metric subclass named {cls_name!r}; subclass "
                         "quantkit.evaluate.Metric (update, result) and name that class.")
    if not cls.name:
        cls.name = cls_name
    return cls


def metric_class(spec: str | Mapping[str, Any] | MetricSpec, where: str = "metric"
                 ) -> type[Metric]:
    """The class a spec names (a registered metric or a plugin's class)."""
    s = parse_metric(spec, where)
    if s.plugin is not None:
        return load_metric_plugin(s.plugin, where)
    if s.name not in _METRICS:
        _load_entry_points()
    try:
        return _METRICS[s.name]
    except KeyError:
        raise InputError(f"{where} {s.name!r} is unknown; registered metrics: "
                         f"{', '.join(available_metrics())} (or a plugin FILE.py:CLASS)."
                         ) from None


def create_metric(spec: str | Mapping[str, Any] | MetricSpec, where: str = "metric") -> Metric:
    """Instantiate the metric a spec names, with its options (``batch_axis`` included)."""
    s = parse_metric(spec, where)
    cls = metric_class(s, where)
    opts = dict(s.options)
    axis = opts.pop("batch_axis", None)
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        raise InputError(f"{where} {s.name}: batch_axis {axis!r} is not an axis number.")
    try:
        metric = cls(**opts)
    except TypeError as err:
        raise InputError(f"{where} {s.name}: bad options {opts}: {err}. "
                         f"{_options_help(cls)}") from err
    if axis is not None:
        metric.batch_axis = int(axis)
    return metric


def _options_help(cls: type[Metric]) -> str:
    import inspect

    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return (f"Its options: {', '.join(params)}, batch_axis." if params
            else "It takes no options besides batch_axis.")


def typed_options(kind: type[T], raw: Mapping[str, Any], where: str) -> T:
    """A frozen options dataclass from loosely typed values (``"0.3"`` for a float field)."""
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise InputError(f"{where}: unknown option {key!r}; options: "
                             f"{', '.join(fields)}, batch_axis.")
        want = fields[key].type if isinstance(fields[key].type, str) else \
            getattr(fields[key].type, "__name__", "")
        try:
            if want.startswith("float"):
                value = float(value)
            elif want.startswith("int"):
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError("not a whole number")
                value = int(float(value))
            elif want.startswith("str") and value is not None:
                value = str(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: option {key}={value!r} is not a {want.split()[0]}."
                             ) from None
        out[key] = value
    return kind(**out)


def metric_label_kind(spec: str | Mapping[str, Any] | MetricSpec | None) -> str:
    """``"text"`` for metrics with text labels, ``"int"`` otherwise (``None``: ``"int"``)."""
    if spec is None:
        return "int"
    return "text" if metric_class(spec).text_labels else "int"


def metric_text_labels(spec: str | Mapping[str, Any] | MetricSpec | None) -> bool:
    """Whether the metric ``spec`` names takes text labels (``False`` for ``None``)."""
    return metric_label_kind(spec) == "text"
