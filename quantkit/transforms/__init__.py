"""Graph transforms that rescue INT8 accuracy before layers fall back to FP16.

* :func:`equalize` -- cross-layer equalization (Nagel et al. 2019), FP32-function preserving;
* :func:`fold_batchnorm` -- BatchNormalization folded into the Conv/Gemm before it;
* :func:`absorb_high_bias` -- high-bias absorption (same paper, sec. 4.1.2): the always-positive
  part of ReLU inputs moves into the next layer's bias (data or BatchNorm statistics);
* :func:`verify_fp32` -- check on data that a transformed model computes what the original
  does (the function-preserving transforms use it and refuse a difference);
* :func:`working_copy` -- the copy every transform edits: nodes named and ``Constant``
  weights made initializers exactly as the Q/DQ writer does, so node names match;
* :func:`bias_correct` -- per-channel correction of the mean output shift that INT8 weight
  (and activation) quantization causes, measured on calibration data.

Each transform takes an ``onnx.ModelProto`` and returns ``(model, TransformReport)``; the
input model is not modified, node names stay the same and the report is also stored in the
model's ``quantkit.transforms`` metadata (which the Q/DQ writer carries into the quantized
model). Imported lazily: ``import quantkit`` does not load onnx through this package.

Rescue: :mod:`.registry` names the rescue transforms (names, aliases, options, statistics,
run order; :func:`register_transform` for plugins), :func:`apply_rescue` runs them with one
shared statistics pass (:mod:`.statistics`), and :class:`PrecisionFile` reads a precision
file's ``rescue:`` key beside its plan.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["TRANSFORMS_METADATA_KEY", "PrecisionFile", "TransformReport", "TransformSpec",
           "absorb_high_bias", "apply_rescue", "applied_transforms", "bias_correct", "equalize",
           "fold_batchnorm", "load_precision", "parse_rescue", "register_transform",
           "smoothquant", "verify_fp32", "working_copy"]

_LAZY = {
    "equalize": "quantkit.transforms.equalize",
    "fold_batchnorm": "quantkit.transforms.fold_bn",
    "absorb_high_bias": "quantkit.transforms.high_bias",
    "verify_fp32": "quantkit.transforms._common",
    "smoothquant": "quantkit.transforms.smoothquant",
    "bias_correct": "quantkit.transforms.bias_correction",
    "TransformReport": "quantkit.transforms._common",
    "TRANSFORMS_METADATA_KEY": "quantkit.transforms._common",
    "applied_transforms": "quantkit.transforms._common",
    "working_copy": "quantkit.transforms._common",
    "apply_rescue": "quantkit.transforms.rescue",
    "parse_rescue": "quantkit.transforms.registry",
    "register_transform": "quantkit.transforms.registry",
    "TransformSpec": "quantkit.transforms.registry",
    "PrecisionFile": "quantkit.transforms.precision_file",
    "load_precision": "quantkit.transforms.precision_file",
}

if TYPE_CHECKING:
    from quantkit.transforms._common import (
        TRANSFORMS_METADATA_KEY,
        TransformReport,
        applied_transforms,
        verify_fp32,
        working_copy,
    )
    from quantkit.transforms.bias_correction import bias_correct
    from quantkit.transforms.equalize import equalize
    from quantkit.transforms.fold_bn import fold_batchnorm
    from quantkit.transforms.high_bias import absorb_high_bias
    from quantkit.transforms.precision_file import PrecisionFile, load_precision
    from quantkit.transforms.registry import TransformSpec, parse_rescue, register_transform
    from quantkit.transforms.rescue import apply_rescue
    from quantkit.transforms.smoothquant import smoothquant


class _Package(types.ModuleType):
    """Keeps the *functions* ``equalize`` / ``smoothquant`` as the package's attributes.

    When a submodule of the same name is first imported (by another transform, at any
    time), the import system sets the package attribute to the submodule; the public name
    is the function, so it is taken from the submodule instead. The submodules themselves
    stay in ``sys.modules`` (``from quantkit.transforms.equalize import ...`` works).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == value.__name__ \
                and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quantkit.transforms' has no attribute {name!r}")
