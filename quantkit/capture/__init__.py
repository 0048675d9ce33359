"""Run the FP32 model with its activations exposed, one batch at a time.

The runner (and with it ONNX) is imported on first use of these names.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantkit.capture.runner import ActivationCapture, CalibrationResult, calibrate

#: names loaded on first access (the runner imports ONNX): attribute -> module
_LAZY = {"ActivationCapture": "quantkit.capture.runner",
         "CalibrationResult": "quantkit.capture.runner", "calibrate": "quantkit.capture.runner"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quantkit.capture' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["ActivationCapture", "CalibrationResult", "calibrate"]
