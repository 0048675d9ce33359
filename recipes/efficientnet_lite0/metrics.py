"""EfficientNet-Lite0's score: the photos carry no ImageNet labels, so agreement with FP32."""

from __future__ import annotations

from typing import Any


def top1_agreement(reference: Any, output: Any) -> float:
    """Fraction of rows whose arg-max class matches the reference's."""
    import numpy as np

    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(output, axis=1)))


__all__ = ["top1_agreement"]
