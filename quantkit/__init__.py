"""quantkit: INT8 calibration and mixed-precision Q/DQ models for NVIDIA TensorRT.

``import quantkit`` is light: it never imports onnxruntime, tensorrt, torch or datasets.
Heavy entry points are resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quantkit.errors import InputError, MissingExtraError, PipelineError, QuantkitError

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "MissingExtraError",
    "PipelineError",
    "QuantkitError",
    "ScaleTable",
    "__version__",
    "calibrate",
    "create_calibrator",
    "open_source",
    "read_scales",
    "register_calibrator",
]

_LAZY = {
    "calibrate": "quantkit.capture",
    "ScaleTable": "quantkit.calibrators",
    "read_scales": "quantkit.calibrators",
    "create_calibrator": "quantkit.calibrators",
    "register_calibrator": "quantkit.calibrators",
    "open_source": "quantkit.data",
}

if TYPE_CHECKING:
    from quantkit.calibrators import (
        ScaleTable,
        create_calibrator,
        read_scales,
        register_calibrator,
    )
    from quantkit.capture import calibrate
    from quantkit.data import open_source


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quantkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
