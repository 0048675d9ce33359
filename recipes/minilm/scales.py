"""Scales combined from two calibration runs of all-MiniLM-L6-v2."""

from __future__ import annotations

from typing import Any


def hybrid_scales(model: Any, minmax: Any, other: Any) -> Any:
    """``minmax`` scales for LayerNormalization outputs, ``other``'s for every other tensor.

    quantkit calibrates every tensor with one method; this combines two runs. The LayerNorm
    outputs carry a few outlier channels that clipping methods cut off, while the GELU
    outputs (FFN output projection inputs) have a long tail that max |x| wastes the INT8 range
    on (recipes/MODELS.md, all-MiniLM-L6-v2, per-layer scan).

    Args:
        model: the FP32 ``ModelProto``.
        minmax: a :class:`~quantkit.calibrators.cache.ScaleTable` from ``method="minmax"``.
        other: a ScaleTable from another method.
    """
    from quantkit.calibrators.cache import ScaleTable

    ln = {o for n in model.graph.node if n.op_type == "LayerNormalization" for o in n.output}
    scales = dict(other.scales)
    scales.update({k: v for k, v in minmax.scales.items() if k in ln})
    return ScaleTable(scales=scales, method=f"minmax (LayerNorm outputs) + {other.method}",
                      model=other.model, num_samples=other.num_samples)


__all__ = ["hybrid_scales"]
