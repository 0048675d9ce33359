"""The registry of rescue transforms: names, aliases, options, statistics and run order.

Every entry point that names rescue transforms -- ``quantkit quantize --rescue``, the precision
file's ``rescue:`` key, sweep recipe configs, :func:`quantkit.sweep.autotune` -- parses its
specs here (:func:`parse_rescue`), and :func:`quantkit.transforms.rescue.apply_rescue` runs
them through the implementations the registry names. The help of ``--rescue``, recipe
validation and the message for an unknown name are generated from it.

A transform declares (:class:`TransformSpec`): its name and aliases (matched
case-insensitively), its options (a frozen dataclass; ``NAME:VALUE`` sets its ``shorthand``
option), whether it keeps the FP32 function, the statistics it reads (:class:`Statistic`)
and its place in the run order. Transforms always run in that order, whatever the order given.

This module is light (no onnx, no numpy): the implementations are imported when a transform
runs. Plugins: a package may register more transforms with :func:`register_transform`, or
declare a :class:`TransformSpec` in the entry point group ``quantkit.transforms``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from quantkit.errors import InputError

logger = logging.getLogger(__name__)

#: entry point group of installed transform plugins (each names a :class:`TransformSpec`)
ENTRY_POINT_GROUP = "quantkit.transforms"


class Statistic(str, enum.Enum):
    """What a transform reads besides the model (how many passes over the data it costs).

    * ``WEIGHTS`` -- weight tensors only: no pass (data, if any, only verifies the outputs);
    * ``ACTIVATION_RANGES`` -- per-channel activation extrema: one capture pass, shared by
      consecutive transforms that read them
      (:class:`~quantkit.transforms.statistics.ActivationStatistics`);
    * ``SCALES`` -- calibration scales of the model as it is when the transform runs
      (calibrated again after a function-preserving transform);
    * ``QUANTIZATION_SHIFT`` -- the mean output shift INT8 causes with those scales: a pass of
      its own.
    """

    WEIGHTS = "weights"
    ACTIVATION_RANGES = "activation_ranges"
    SCALES = "scales"
    QUANTIZATION_SHIFT = "quantization_shift"


@dataclass(frozen=True)
class EqualizeOptions:
    """Cross-layer equalization (:func:`quantkit.transforms.equalize`)."""

    iterations: int = 20
    tolerance: float = 1e-4
    relu6_to_relu: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"equalize iterations must be at least 1; got {self.iterations}")
        if not self.tolerance >= 0:
            raise ValueError(f"equalize tolerance must be >= 0; got {self.tolerance}")


@dataclass(frozen=True)
class HighBiasOptions:
    """High-bias absorption (:func:`quantkit.transforms.absorb_high_bias`): no options."""


@dataclass(frozen=True)
class SmoothQuantOptions:
    """SmoothQuant (:func:`quantkit.transforms.smoothquant`)."""

    alpha: float = 0.5
    fold: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError("the smoothquant alpha must be in (0, 1] (0.5 is SmoothQuant's "
                             f"default, 0.8 its other setting); got {self.alpha:g}")


@dataclass(frozen=True)
class BiasCorrectionOptions:
    """Bias correction (:func:`quantkit.transforms.bias_correct`): no options."""


@dataclass(frozen=True)
class TransformSpec:
    """One registered rescue transform.

    Attributes:
        name: canonical name (what reports and metadata record).
        aliases: other accepted spellings (all matched case-insensitively).
        options: the options type, a frozen dataclass whose fields all have defaults.
        function_preserving: the transformed model computes the same FP32 function (then the
            runner calibrates again before quantizing, and keeps the activation statistics of
            the tensors the transform did not change).
        statistics: what it reads (:class:`Statistic`).
        order: place in the run order (lower first; built-ins 100, 200, 300, 400).
        implementation: the :class:`~quantkit.transforms.rescue.RescueTransform` that runs
            it, or ``"module:attribute"`` naming it (imported when it runs).
        shorthand: the option ``NAME:VALUE`` sets (None: the transform takes no value).
        shorthand_help: what the value may be, for messages (``ALPHA in (0, 1]``).
        summary: one line for help texts.
    """

    name: str
    aliases: tuple[str, ...]
    options: type
    function_preserving: bool
    statistics: frozenset[Statistic]
    order: int
    implementation: Any
    shorthand: str | None = None
    shorthand_help: str = ""
    summary: str = ""

    @property
    def spellings(self) -> tuple[str, ...]:
        """The name and its aliases."""
        return (self.name, *self.aliases)

    def make_options(self, values: Mapping[str, Any] | None = None, *,
                     where: str = "rescue") -> Any:
        """The options object from ``values`` (unknown keys and bad values: ``InputError``)."""
        known = {f.name for f in fields(self.options)}
        extra = sorted(set(values or {}) - known)
        if extra:
            raise InputError(f"{where}: {self.name} has no option {extra[0]!r}; its options: "
                             f"{', '.join(sorted(known)) or 'none'}.")
        try:
            return self.options(**dict(values or {}))
        except (TypeError, ValueError) as err:
            raise InputError(f"{where}: {err}.") from None

    def load(self) -> Any:
        """The implementation (imported when named by a string)."""
        impl = self.implementation
        if isinstance(impl, str):
            import importlib

            module, _, attr = impl.partition(":")
            impl = getattr(importlib.import_module(module), attr)
        return impl


class RescueStep(NamedTuple):
    """One transform to run: canonical name and its options (``{"alpha": 0.8}``)."""

    name: str
    options: dict[str, Any]

    def spec(self) -> str:
        """The spec string (``smoothquant:0.8``; the shorthand option only)."""
        entry = REGISTRY.lookup(self.name)
        key = entry.shorthand if entry is not None else None
        value = self.options.get(key) if key else None
        if value is None:
            return self.name
        return f"{self.name}:{value:g}" if isinstance(value, float) else f"{self.name}:{value}"


class TransformRegistry:
    """Rescue transforms by name; case-insensitive lookup of names and aliases."""

    def __init__(self) -> None:
        self._specs: dict[str, TransformSpec] = {}
        self._spellings: dict[str, str] = {}
        self._plugins_loaded = False

    def register(self, spec: TransformSpec) -> TransformSpec:
        """Add a transform; a name or alias already taken by another one is a ``ValueError``."""
        for spelling in spec.spellings:
            owner = self._spellings.get(spelling.lower())
            if owner is not None and owner != spec.name:
                raise ValueError(f"rescue transform spelling {spelling!r} is already taken "
                                 f"by {owner!r}")
        if not is_options_type(spec.options):
            raise TypeError(f"{spec.name}: options must be a dataclass whose fields all have "
                            "defaults")
        self._specs[spec.name] = spec
        for spelling in spec.spellings:
            self._spellings[spelling.lower()] = spec.name
        return spec

    def unregister(self, name: str) -> None:
        """Remove a transform (by canonical name) and its spellings."""
        spec = self._specs.pop(name)
        for spelling in spec.spellings:
            self._spellings.pop(spelling.lower(), None)

    def _plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from quantkit.plugins import load_entry_points

        for name, spec in load_entry_points(ENTRY_POINT_GROUP, "rescue transform"):
            try:
                if spec.name not in self._specs:
                    self.register(spec() if callable(spec) else spec)
            except Exception as err:  # a broken plugin must not break the built-ins
                logger.warning("could not load rescue transform plugin %s: %s", name, err)

    def lookup(self, name: str) -> TransformSpec | None:
        """The transform spelled ``name`` (any case, any alias), or None."""
        key = self._spellings.get(name.strip().lower())
        if key is None:
            self._plugins()
            key = self._spellings.get(name.strip().lower())
        return self._specs[key] if key is not None else None

    def get(self, name: str, *, where: str = "rescue") -> TransformSpec:
        """The transform spelled ``name``; an unknown one is an ``InputError`` listing all."""
        spec = self.lookup(name)
        if spec is None:
            raise InputError(f"{where}: unknown rescue transform {name.strip()!r}; "
                             f"{self.help_text()}.")
        return spec

    def specs(self) -> list[TransformSpec]:
        """Every registered transform, in run order."""
        return sorted(self._specs.values(), key=lambda s: (s.order, s.name))

    def names(self) -> list[str]:
        """Canonical names in run order."""
        return [s.name for s in self.specs()]

    def listing(self) -> str:
        """``equalize (cle), ..., smoothquant[:ALPHA] (smooth; ALPHA in (0, 1]), ...``."""
        parts = []
        for s in self.specs():
            head = s.name + (f"[:{s.shorthand.upper()}]" if s.shorthand else "")
            notes = ", ".join(s.aliases)
            if s.shorthand_help:
                notes = f"{notes}; {s.shorthand_help}" if notes else s.shorthand_help
            parts.append(f"{head} ({notes})" if notes else head)
        return ", ".join(parts)

    def help_text(self) -> str:
        """The valid spellings, for messages."""
        return (f"valid (any case): {self.listing()}; separate several with commas, e.g. "
                "'cle,bias-correction,smoothquant:0.8'")

    def flag_help(self, lead: str = "Transform the FP32 model first (needs --data)",
                  tail: str = "Also `rescue:` in the precision YAML.") -> str:
        """The help of a ``--rescue`` option: ``lead``, the transforms, the order, ``tail``."""
        return (f"{lead}: {self.listing()}; names in any case, comma-separated or repeated; "
                f"they run in the order {', '.join(self.names())}. {tail}").rstrip()

    def not_one_of(self, name: str) -> str:
        """The recipe validator's message for an unknown name."""
        aliases = ", ".join(a for s in self.specs() for a in s.aliases)
        short = "; ".join(f"{s.name}:{s.shorthand.upper()}" for s in self.specs()
                          if s.shorthand)
        return (f"{name!r} is not one of {', '.join(sorted(self.names()))} (also {aliases}"
                + (f"; {short}" if short else "") + ")")

    def parse(self, spec: str | Iterable[str] | None, *,
              where: str = "--rescue") -> list[RescueStep]:
        """See :func:`parse_rescue`."""
        found: dict[str, RescueStep] = {}
        for item in _items(spec, self):
            if not item:
                raise InputError(f"{where}: empty transform name in {spec!r}; "
                                 f"{self.help_text()}.")
            step = self._one(item, where)
            old = found.get(step.name)
            if old is not None and old.options != step.options:
                raise InputError(f"{where}: {step.name} is given twice with different options "
                                 f"({old.spec()} and {step.spec()}); give it once.")
            found.setdefault(step.name, step)
        return self.ordered(found.values())

    def ordered(self, steps: Iterable[RescueStep]) -> list[RescueStep]:
        """``steps`` in run order."""
        rank = {s.name: (s.order, s.name) for s in self.specs()}
        return sorted(steps, key=lambda s: rank.get(s.name, (1 << 30, s.name)))

    def _one(self, item: str, where: str) -> RescueStep:
        head, sep, arg = item.partition(":")
        spec = self.get(head, where=where)
        if not sep:
            return RescueStep(spec.name, {})
        if spec.shorthand is None:
            takes = [f"{s.name}:{s.shorthand.upper()}" for s in self.specs() if s.shorthand]
            names = [t.partition(":")[0] for t in takes]
            verb = "takes" if len(names) == 1 else "take"
            raise InputError(f"{where}: {item!r}: only {', '.join(names)} {verb} an option "
                             f"({', '.join(takes)}); {self.help_text()}.")
        kind = {f.name: f.type for f in fields(spec.options)}.get(spec.shorthand)
        try:
            value: Any = float(arg) if kind in (float, "float") else arg.strip()
        except ValueError:
            raise InputError(f"{where}: {item!r}: the {spec.name} {spec.shorthand} must be a "
                             f"number ({spec.shorthand_help}), e.g. {spec.name}:0.8; got "
                             f"{arg!r}.") from None
        spec.make_options({spec.shorthand: value}, where=f"{where}: {item!r}")
        return RescueStep(spec.name, {spec.shorthand: value})


def is_options_type(kind: Any) -> bool:
    """Whether ``kind`` is a dataclass type whose fields all have defaults."""
    import dataclasses

    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        return False
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in fields(kind))


def _items(spec: str | Iterable[str] | None, registry: TransformRegistry) -> list[str]:
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise InputError(f"rescue: {part!r} is not a transform name; "
                             f"{registry.help_text()}.")
        out.extend(p.strip() for p in part.split(","))
    return out


#: the registry every entry point uses
REGISTRY = TransformRegistry()

_IMPL = "quantkit.transforms._steps"
REGISTRY.register(TransformSpec(
    "equalize", ("cle",), EqualizeOptions, True, frozenset({Statistic.WEIGHTS}), 100,
    f"{_IMPL}:EQUALIZE", summary="cross-layer equalization of layer pairs"))
REGISTRY.register(TransformSpec(
    "high_bias", ("high-bias", "hba"), HighBiasOptions, True,
    frozenset({Statistic.ACTIVATION_RANGES}), 200, f"{_IMPL}:HIGH_BIAS",
    summary="high-bias absorption into the next layer's bias"))
REGISTRY.register(TransformSpec(
    "smoothquant", ("smooth",), SmoothQuantOptions, True,
    frozenset({Statistic.ACTIVATION_RANGES}), 300, f"{_IMPL}:SMOOTHQUANT", shorthand="alpha",
    shorthand_help="ALPHA in (0, 1]", summary="activation outliers moved into the weights"))
REGISTRY.register(TransformSpec(
    "bias_correction", ("bias-correction", "bias_correct", "bias-correct"),
    BiasCorrectionOptions, False, frozenset({Statistic.SCALES, Statistic.QUANTIZATION_SHIFT}),
    400, f"{_IMPL}:BIAS_CORRECTION", summary="INT8 output shift removed from the biases"))


def register_transform(spec: TransformSpec) -> TransformSpec:
    """Register a rescue transform (a plugin's); returns it."""
    return REGISTRY.register(spec)


def get_transform(name: str, *, where: str = "rescue") -> TransformSpec:
    """The transform spelled ``name`` (any case, any alias); unknown: ``InputError``."""
    return REGISTRY.get(name, where=where)


def parse_rescue(spec: str | Iterable[str] | None, *,
                 where: str = "--rescue") -> list[RescueStep]:
    """Parse rescue specs into steps in run order.

    Args:
        spec: ``"cle,bias-correction,smoothquant:0.8"``, a list of such strings, or None.
        where: the flag / file / key named in error messages.

    Raises:
        InputError: an unknown name, an option on a transform that takes none, a bad option
            value, or the same transform twice with different options.
    """
    return REGISTRY.parse(spec, where=where)


def combine_rescue(primary: Sequence[RescueStep],
                   secondary: Sequence[RescueStep]) -> list[RescueStep]:
    """The union of two parsed lists, in run order; ``primary``'s options win."""
    found = {s.name: s for s in secondary}
    found.update({s.name: s for s in primary})
    return REGISTRY.ordered(found.values())


def rescue_help(lead: str = "Transform the FP32 model first (needs --data)",
                tail: str = "Also `rescue:` in the precision YAML.") -> str:
    """The help text of a ``--rescue`` option (generated from the registry)."""
    return REGISTRY.flag_help(lead, tail)


__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "BiasCorrectionOptions", "EqualizeOptions",
           "HighBiasOptions", "RescueStep", "SmoothQuantOptions", "Statistic",
           "TransformRegistry", "TransformSpec", "combine_rescue", "get_transform",
           "is_options_type", "parse_rescue", "register_transform", "rescue_help"]
