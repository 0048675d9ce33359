"""Run the FP32 model with its activations exposed, one batch at a time.

The runner (and with it ONNX) is imported on first use of these names.
"""

from typing import TYPE_CHECKING

from quantkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from quantkit.capture.calibration import CalibrationResult, calibrate
    from quantkit.capture.runner import ActivationCapture

#: names loaded on first access (the runner imports ONNX): attribute -> module
_LAZY = {"ActivationCapture": "quantkit.capture.runner",
         "CalibrationResult": "quantkit.capture.calibration",
         "calibrate": "quantkit.capture.calibration"}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["ActivationCapture", "CalibrationResult", "calibrate"]
