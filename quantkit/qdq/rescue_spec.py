"""Rescue specs: the names, spellings, options and run order of the rescue transforms.

Parsing lives here, below :mod:`quantkit.qdq.plan` (whose ``rescue:`` key is validated with
it) and :mod:`quantkit.transforms.rescue` (which runs the steps), so the precision file can be
checked without importing the transforms. Names:

* ``equalize`` (``cle``): cross-layer equalization;
* ``high_bias`` (``high-bias``, ``hba``): high-bias absorption;
* ``smoothquant`` (``smooth``), optionally ``:ALPHA`` with ALPHA in (0, 1];
* ``bias_correction`` (``bias-correction``, ``bias_correct``, ``bias-correct``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from quantkit.errors import InputError

#: accepted spellings -> canonical name
RESCUE_SPELLINGS: dict[str, str] = {
    "equalize": "equalize", "cle": "equalize",
    "high_bias": "high_bias", "high-bias": "high_bias", "hba": "high_bias",
    "smoothquant": "smoothquant", "smooth": "smoothquant",
    "bias_correction": "bias_correction", "bias-correction": "bias_correction",
    "bias_correct": "bias_correction", "bias-correct": "bias_correction",
}
#: canonical run order
RESCUE_ORDER: tuple[str, ...] = ("equalize", "high_bias", "smoothquant", "bias_correction")
#: transforms that keep the FP32 function (re-calibrate after them)
FUNCTION_PRESERVING = frozenset({"equalize", "high_bias", "smoothquant"})
_TAKES_ALPHA = frozenset({"smoothquant"})
RESCUE_HELP = ("valid: cle/equalize, high-bias/high_bias/hba, smoothquant/smooth[:ALPHA] "
         "(ALPHA in (0, 1]), bias-correction/bias_correction/bias_correct; separate several "
         "with commas, e.g. 'cle,bias-correction,smoothquant:0.8'")


class RescueStep(NamedTuple):
    """One transform to run: canonical name and its options (``alpha`` for smoothquant)."""

    name: str
    options: dict[str, Any]

    def spec(self) -> str:
        """The canonical spec string (``smoothquant:0.8``)."""
        alpha = self.options.get("alpha")
        return self.name if alpha is None else f"{self.name}:{alpha:g}"


def _items(spec: str | Iterable[str] | None) -> list[str]:
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise InputError(f"rescue: {part!r} is not a transform name; {RESCUE_HELP}.")
        out.extend(p.strip() for p in part.split(","))
    return out


def _one(item: str, where: str) -> RescueStep:
    head, sep, arg = item.partition(":")
    key = head.strip().lower()
    if key not in RESCUE_SPELLINGS:
        raise InputError(f"{where}: unknown rescue transform {head.strip()!r}; {RESCUE_HELP}.")
    name = RESCUE_SPELLINGS[key]
    if not sep:
        return RescueStep(name, {})
    if name not in _TAKES_ALPHA:
        raise InputError(f"{where}: {item!r}: only smoothquant takes an option (':ALPHA'); "
                         f"{RESCUE_HELP}.")
    try:
        alpha = float(arg)
    except ValueError:
        raise InputError(f"{where}: {item!r}: the smoothquant alpha must be a number in "
                         f"(0, 1], e.g. smoothquant:0.8; got {arg!r}.") from None
    if not 0.0 < alpha <= 1.0:
        raise InputError(f"{where}: {item!r}: the smoothquant alpha must be in (0, 1] "
                         f"(0.5 is SmoothQuant's default, 0.8 its other setting); got {arg}.")
    return RescueStep(name, {"alpha": alpha})


def parse_rescue(spec: str | Iterable[str] | None, *,
                 where: str = "--rescue") -> list[RescueStep]:
    """Parse rescue specs into canonical steps in run order.

    Args:
        spec: ``"cle,bias-correction,smoothquant:0.8"``, a list of such strings, or None.
        where: the flag / file / key named in error messages.

    Raises:
        InputError: an unknown name, an option on a transform that takes none, an alpha
            outside (0, 1], or the same transform twice with different options.
    """
    found: dict[str, RescueStep] = {}
    for item in _items(spec):
        if not item:
            raise InputError(f"{where}: empty transform name in {spec!r}; {RESCUE_HELP}.")
        step = _one(item, where)
        old = found.get(step.name)
        if old is not None and old.options != step.options:
            raise InputError(f"{where}: {step.name} is given twice with different options "
                             f"({old.spec()} and {step.spec()}); give it once.")
        found.setdefault(step.name, step)
    return [found[n] for n in RESCUE_ORDER if n in found]


def combine_rescue(primary: Sequence[RescueStep],
                   secondary: Sequence[RescueStep]) -> list[RescueStep]:
    """The union of two parsed lists, in run order; ``primary``'s options win."""
    found = {s.name: s for s in secondary}
    found.update({s.name: s for s in primary})
    return [found[n] for n in RESCUE_ORDER if n in found]


__all__ = ["FUNCTION_PRESERVING", "RESCUE_HELP", "RESCUE_ORDER", "RESCUE_SPELLINGS",
           "RescueStep", "combine_rescue", "parse_rescue"]
