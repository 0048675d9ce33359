"""Example calibrator plugin: amax = mean over batches of the batch's max |x|.

This is the "mean max" / moving-average-minmax estimator that several frameworks (NNCF,
TensorFlow QAT) use: less sensitive to a single outlier than ``minmax``. It shows the whole
plugin API -- only public names of ``quantkit.calibrators`` are used.

Use it from the command line::

    quantkit calibrate model.onnx --data calib.npz --calibrator calibrators/mean_max.py \\
        --method mean-max --cache model.cache

or package it and declare an entry point in the ``quantkit.calibrators`` group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from quantkit.calibrators import Calibrator, register_calibrator


@register_calibrator("mean-max")
class MeanMaxCalibrator(Calibrator):
    """amax = mean of the per-batch max |x| (mergeable: a sum and a count)."""

    cache_algorithm = "EntropyCalibration2"

    def _new_tensor(self) -> list[float]:
        return [0.0, 0.0]  # sum of batch maxima, number of batches

    def _update_tensor(self, name: str, stat: list[float], x: np.ndarray,
                       absmax: float) -> None:
        stat[0] += absmax
        stat[1] += 1

    def _merge_tensor(self, name: str, stat: list[float], other: list[float]) -> None:
        stat[0] += other[0]
        stat[1] += other[1]

    def _empty_like_tensor(self, stat: list[float]) -> list[float]:
        return [0.0, 0.0]

    def _amax(self, name: str, stat: list[float]) -> float:
        return float(np.float32(stat[0] / stat[1])) if stat[1] else 0.0

    def _tensor_state(self, stat: list[float]) -> dict[str, Any]:
        return {"sum": stat[0], "count": stat[1]}

    def _tensor_from_state(self, state: Mapping[str, Any]) -> list[float]:
        return [float(state["sum"]), float(state["count"])]
