"""Legacy TensorRT INT8 calibrators (implicit quantization, TensorRT <= 10), fed by a DataSource.

:class:`EntropyCalibrator2`, :class:`EntropyCalibrator`, :class:`MinMaxCalibrator` and
:class:`LegacyCalibrator` subclass the real ``tensorrt.IInt8*Calibrator`` classes (deprecated since
TensorRT 10.1, removed in 11: ``docs/tensorrt_rules.md#legacy-calibrators``). ``tensorrt``
is imported lazily: importing this module does not import it, the classes are built on first
attribute access, and without TensorRT constructing one raises
:class:`~quantkit.errors.MissingExtraError`. The logic lives in :class:`TensorRTCalibratorBase`,
which needs neither TensorRT nor a GPU; the TensorRT classes only add the TensorRT base class and
``get_algorithm``. Usage: ``docs/tensorrt_legacy.md``.
"""

from __future__ import annotations

import importlib
import logging
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quantkit.calibrators._trt_feed import (
    LastBatch,
    LegacyCalibratorBase,
    TensorRTCalibratorBase,
)
from quantkit.errors import InputError, MissingExtraError, PipelineError

if TYPE_CHECKING:
    import tensorrt as trt

    from quantkit.data.base import DataSource

logger = logging.getLogger(__name__)

__all__ = [
    "EntropyCalibrator",
    "EntropyCalibrator2",
    "LastBatch",
    "LegacyCalibrator",
    "LegacyCalibratorBase",
    "MinMaxCalibrator",
    "TensorRTCalibratorBase",
    "calibrator_class",
]

# public name -> (TensorRT base class, CalibrationAlgoType member, cache algorithm, logic base)
_SPECS: dict[str, tuple[str, str, str, type[TensorRTCalibratorBase]]] = {
    "EntropyCalibrator2": ("IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2",
                           "EntropyCalibration2", TensorRTCalibratorBase),
    "EntropyCalibrator": ("IInt8EntropyCalibrator", "ENTROPY_CALIBRATION", "EntropyCalibration",
                          TensorRTCalibratorBase),
    "MinMaxCalibrator": ("IInt8MinMaxCalibrator", "MINMAX_CALIBRATION", "MinMaxCalibration",
                         TensorRTCalibratorBase),
    "LegacyCalibrator": ("IInt8LegacyCalibrator", "LEGACY_CALIBRATION", "LegacyCalibration",
                         LegacyCalibratorBase),
}
_built: tuple[types.ModuleType, dict[str, type[TensorRTCalibratorBase]]] | None = None


def _missing_tensorrt() -> Exception:
    return MissingExtraError("TensorRT implicit INT8 calibration", "tensorrt", "tensorrt")


def _import_tensorrt() -> types.ModuleType | Callable[[], Exception]:
    """The ``tensorrt`` module, or a factory of the error to raise if it is missing or broken."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name in ("tensorrt", None):
            return _missing_tensorrt
        reason = str(err)

        def broken() -> Exception:
            return PipelineError(f"tensorrt is installed but failed to import: {reason}")

        return broken
    if not hasattr(module, "Builder"):
        # e.g. only tensorrt-stubs is installed: its stub folder imports as an empty
        # namespace package.
        return _missing_tensorrt
    return module


def _make_class(trt_mod: types.ModuleType, public: str) -> type[TensorRTCalibratorBase]:
    base_name, algo_name, cache_alg, logic = _SPECS[public]
    trt_base = getattr(trt_mod, base_name, None)
    if trt_base is None:
        version = getattr(trt_mod, "__version__", "?")

        def removed() -> Exception:
            return InputError(
                f"TensorRT {version} has no {base_name}: implicit INT8 calibration was removed "
                "in TensorRT 11. Use quantkit's explicit Q/DQ pipeline instead."
            )

        return _unavailable(public, removed)
    algo = getattr(trt_mod.CalibrationAlgoType, algo_name)

    def __init__(self: Any, source: DataSource, **kwargs: Any) -> None:
        # pybind11 needs the TensorRT base's __init__ to run (TensorRT docs for IInt8Calibrator).
        trt_base.__init__(self)
        logic.__init__(self, source, **kwargs)

    def get_algorithm(self: Any) -> Any:
        return algo

    get_algorithm.__doc__ = f"``tensorrt.CalibrationAlgoType.{algo_name}``."
    body = {"__init__": __init__, "get_algorithm": get_algorithm, "cache_algorithm": cache_alg,
            "__module__": __name__, "__qualname__": public,
            "__doc__": f"``tensorrt.{base_name}`` fed by a quantkit DataSource; see "
                       f":class:`{logic.__name__}` for the arguments."}
    # The logic class comes first in the MRO so its methods are the ones pybind11 dispatches to.
    return types.new_class(public, (logic, trt_base), exec_body=lambda ns: ns.update(body))


def _unavailable(public: str, error: Callable[[], Exception]) -> type[TensorRTCalibratorBase]:
    """A stand-in class whose constructor raises ``error()`` (TensorRT missing or too new)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise error()

    return types.new_class(public, (TensorRTCalibratorBase,), exec_body=lambda ns: ns.update(
        {"__init__": __init__, "__module__": __name__, "__qualname__": public,
         "__doc__": f"Unavailable: {error()}"}))


def calibrator_class(name: str) -> type[TensorRTCalibratorBase]:
    """The TensorRT calibrator class for a class name or a cache header algorithm.

    Args:
        name: ``"EntropyCalibrator2"``... or ``"EntropyCalibration2"``, ``"MinMaxCalibration"``...
            (the algorithm in a cache's first line,
            ``docs/tensorrt_rules.md#calibration-cache-format``).

    Returns:
        The class; without TensorRT, a stand-in whose constructor raises
        :class:`~quantkit.errors.MissingExtraError`.
    """
    global _built
    public = next((p for p, spec in _SPECS.items() if name in (p, spec[2])), None)
    if public is None:
        raise InputError(f"unknown TensorRT calibrator {name!r}; choose one of "
                         f"{', '.join(_SPECS)}.")
    trt_mod = _import_tensorrt()
    if not isinstance(trt_mod, types.ModuleType):
        return _unavailable(public, trt_mod)
    if _built is None or _built[0] is not trt_mod:
        _built = (trt_mod, {p: _make_class(trt_mod, p) for p in _SPECS})
    return _built[1][public]


def __getattr__(name: str) -> type[TensorRTCalibratorBase]:
    # PEP 562: the TensorRT classes are built (and tensorrt imported) on first access.
    if name in _SPECS:
        return calibrator_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    # What the classes built by calibrator_class() look like to a type checker. TensorRT's
    # stubs type get_batch as list[int] and read_calibration_cache as a buffer, but both
    # accept None (end of data / no cache: TensorRT's pyInt8.cpp), hence the ignores.

    class EntropyCalibrator2(TensorRTCalibratorBase, trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        """``tensorrt.IInt8EntropyCalibrator2`` fed by a quantkit DataSource."""

    class EntropyCalibrator(TensorRTCalibratorBase, trt.IInt8EntropyCalibrator):  # type: ignore[misc]
        """``tensorrt.IInt8EntropyCalibrator`` fed by a quantkit DataSource."""

    class MinMaxCalibrator(TensorRTCalibratorBase, trt.IInt8MinMaxCalibrator):  # type: ignore[misc]
        """``tensorrt.IInt8MinMaxCalibrator`` fed by a quantkit DataSource."""

    class LegacyCalibrator(LegacyCalibratorBase, trt.IInt8LegacyCalibrator):  # type: ignore[misc]
        """``tensorrt.IInt8LegacyCalibrator`` fed by a quantkit DataSource."""
