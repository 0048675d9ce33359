"""Run the FP32 model with its activations exposed, one batch at a time."""

from quantkit.capture.calibration import CalibrationResult, calibrate
from quantkit.capture.runner import ActivationCapture

__all__ = ["ActivationCapture", "CalibrationResult", "calibrate"]
