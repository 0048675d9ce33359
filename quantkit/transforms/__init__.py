"""Graph transforms that rescue INT8 accuracy before layers fall back to FP16.

* :func:`equalize` -- cross-layer equalization (Nagel et al. 2019), FP32-function preserving;
* :func:`fold_batchnorm` -- BatchNormalization folded into the Conv/Gemm before it;
* :func:`bias_correct` -- per-channel correction of the mean output shift that INT8 weight
  (and activation) quantization causes, measured on calibration data.

Each transform takes an ``onnx.ModelProto`` and returns ``(model, TransformReport)``; the
input model is not modified, node names stay the same and the report is also stored in the
model's ``quantkit.transforms`` metadata (which the Q/DQ writer carries into the quantized
model). Imported lazily: ``import quantkit`` does not load onnx through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TRANSFORMS_METADATA_KEY", "TransformReport", "applied_transforms", "bias_correct",
           "equalize", "fold_batchnorm", "smoothquant"]

_LAZY = {
    "equalize": "quantkit.transforms.equalize",
    "fold_batchnorm": "quantkit.transforms.fold_bn",
    "smoothquant": "quantkit.transforms.smoothquant",
    "bias_correct": "quantkit.transforms.bias_correction",
    "TransformReport": "quantkit.transforms._common",
    "TRANSFORMS_METADATA_KEY": "quantkit.transforms._common",
    "applied_transforms": "quantkit.transforms._common",
}

if TYPE_CHECKING:
    from quantkit.transforms._common import (
        TRANSFORMS_METADATA_KEY,
        TransformReport,
        applied_transforms,
    )
    from quantkit.transforms.bias_correction import bias_correct
    from quantkit.transforms.equalize import equalize
    from quantkit.transforms.fold_bn import fold_batchnorm
    from quantkit.transforms.smoothquant import smoothquant


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quantkit.transforms' has no attribute {name!r}")
