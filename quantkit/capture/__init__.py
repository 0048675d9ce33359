"""Run the FP32 model with its activations exposed, one batch at a time."""

from quantkit.capture.runner import ActivationCapture, CalibrationResult, calibrate

__all__ = ["ActivationCapture", "CalibrationResult", "calibrate"]
