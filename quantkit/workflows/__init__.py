"""The pipelines the command line, sweeps and autotune share.

* :func:`calibrate` -- scales for a model, in one pass or sharded on an executor (one
  implementation, whatever runs it);
* :func:`quantize` -- scales or calibration, then the rescue transforms, the precision plan
  and the Q/DQ model;
* :func:`rescue` -- the rescue transforms with their calibration (the one place that calls
  them).

Names are imported on first use: ``quantkit.workflows.calibration`` does not load the Q/DQ
writer or the transforms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Quantized", "RescueRequest", "ScaleOut", "calibrate", "quantize", "rescue"]

_LAZY = {"ScaleOut": "calibration", "calibrate": "calibration", "Quantized": "quantization",
         "RescueRequest": "quantization", "quantize": "quantization", "rescue": "quantization"}

if TYPE_CHECKING:
    from quantkit.workflows.calibration import ScaleOut, calibrate
    from quantkit.workflows.quantization import Quantized, RescueRequest, quantize, rescue


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"quantkit.workflows.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'quantkit.workflows' has no attribute {name!r}")
