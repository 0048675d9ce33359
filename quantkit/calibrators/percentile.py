"""Percentile calibration (pytorch-quantization / ModelOpt reference).

``cdf = cumsum(hist / total)``; ``idx = searchsorted(cdf, p / 100)``; ``amax = edges[idx]``: the
LEFT edge of the bin holding the percentile (``docs/tensorrt_rules.md#other-calibration-methods``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def percentile_amax(counts: npt.ArrayLike, width: float, percentile: float) -> float:
    """Amax at the given percentile of |x| from its histogram.

    Args:
        counts: histogram counts; bin ``i`` spans ``[i * width, (i + 1) * width)``.
        width: bin width.
        percentile: in ``(0, 100]``.
    """
    hist = np.asarray(counts, dtype=np.int64)
    total = hist.sum()
    if total == 0 or width == 0:
        return 0.0
    cdf = np.cumsum(hist / total)
    idx = int(np.searchsorted(cdf, percentile / 100))
    idx = min(idx, len(hist))  # float rounding can leave cdf[-1] a hair below 1.0
    return float(np.float32(idx * width))
