"""Estimated TensorRT latency of an engine on a named GPU, from the engine's own kernel list.

Importing this package loads neither ONNX nor TensorRT-RTX::

    from quantkit.latency import estimate_model, get_gpu, list_gpus

    est = estimate_model("model.qdq.onnx", "L4", shapes={"input": (1, 3, 224, 224)})
    est.latency_ms, est.by_precision, est.label      # ..., "estimated, L4, batch 1"

How the model works, the GPU table with its citations and the limits: ``docs/latency.md``.
"""

from __future__ import annotations

from quantkit.latency.estimate import (
    check_available,
    check_model_precisions,
    estimate_build,
    estimate_from_sidecar,
    estimate_model,
    estimate_models,
)
from quantkit.latency.gpus import GPU, get_gpu, list_gpus
from quantkit.latency.model import Estimate, EstimateOptions, KernelEstimate

__all__ = [
    "GPU",
    "Estimate",
    "EstimateOptions",
    "KernelEstimate",
    "check_available",
    "check_model_precisions",
    "estimate_build",
    "estimate_from_sidecar",
    "estimate_model",
    "estimate_models",
    "get_gpu",
    "list_gpus",
]
