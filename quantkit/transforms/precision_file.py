"""Precision files with a ``rescue:`` key: the plan and the transforms to run first.

A precision file (docs/cli.md#precision-file) is a plan -- ``default``, ``default_float``,
``overrides``: :class:`quantkit.qdq.plan.PrecisionConfig`, which knows nothing of transforms --
and optionally ``rescue: [cle, "smoothquant:0.8"]``, the rescue transforms ``quantkit quantize
--precision``, sweeps and autotune apply to the FP32 model first. :class:`PrecisionFile` reads
both: it *is* a :class:`~quantkit.qdq.plan.PrecisionConfig` (so it plans and quantizes like
one) with the ``rescue`` specs validated against the transform registry
(:mod:`quantkit.transforms.registry`). The file format is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator

from quantkit.errors import InputError
from quantkit.qdq.plan import PrecisionConfig
from quantkit.transforms.registry import RescueStep, parse_rescue


class PrecisionFile(PrecisionConfig):
    """A precision file: the plan (every :class:`PrecisionConfig` field) and ``rescue``."""

    #: rescue transforms applied to the FP32 model first (spec strings of
    #: :func:`quantkit.transforms.registry.parse_rescue`, e.g. ``["cle", "smoothquant:0.8"]``)
    rescue: tuple[str, ...] = ()

    @field_validator("rescue", mode="before")
    @classmethod
    def _rescue(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("rescue is a list of transform names, e.g. [cle, "
                             "\"smoothquant:0.8\", bias-correction]")
        try:
            parse_rescue(value, where="rescue")
        except InputError as err:
            raise ValueError(str(err).removeprefix("rescue: ")) from None
        return tuple(value)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PrecisionFile:
        """Load and validate a precision file; errors name the file, line or key."""
        config = super().from_yaml(path)
        assert isinstance(config, PrecisionFile)
        return config

    @classmethod
    def from_mapping(cls, doc: Any, where: str = "precision") -> PrecisionFile:
        """Validate a mapping (a parsed precision file or a recipe's block)."""
        config = super().from_mapping(doc, where)
        assert isinstance(config, PrecisionFile)
        return config

    @classmethod
    def error_text(cls, error: Any, where: str) -> str:
        """A ``rescue`` error as the registry words it; the plan's errors as the plan does."""
        if error["loc"] and error["loc"][0] == "rescue":
            return f"{where}: rescue: {str(error['msg']).removeprefix('Value error, ')}"
        return super().error_text(error, where)

    @property
    def plan(self) -> PrecisionConfig:
        """The plan alone (a :class:`PrecisionConfig` without ``rescue``)."""
        return PrecisionConfig.model_validate(self.model_dump(exclude={"rescue"}))

    def steps(self, where: str = "rescue") -> list[RescueStep]:
        """The ``rescue`` specs parsed, in run order."""
        return parse_rescue(self.rescue, where=where)


def load_precision(path: str | Path) -> PrecisionFile:
    """A precision file (plan and ``rescue:``); see :class:`PrecisionFile`."""
    return PrecisionFile.from_yaml(path)


__all__ = ["PrecisionFile", "load_precision"]
