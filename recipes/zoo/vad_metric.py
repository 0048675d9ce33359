"""A quantkit metric plugin for voice-activity detectors.

Use: ``--metric recipes/zoo/vad_metric.py:VadAgreement[:threshold=0.5]``.

A VAD outputs one speech probability per audio chunk; what a user acts on is the decision
``p >= threshold``. The metric is the percentage of chunks whose decision agrees with the
target's (the FP32 model's, or 0/1 labels); ``details`` adds the mean absolute difference of
the probabilities. Options: ``threshold`` (default 0.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantkit.evaluate.base import Metric


class VadAgreement(Metric):
    """Speech / no-speech decision agreement in percent (see the module docstring)."""

    name = "vad-agreement"
    needs_labels = False

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        self.agree = 0
        self.count = 0
        self.abs_diff = 0.0

    def reference_targets(self, reference: Any) -> Any:
        """Without labels: the FP32 model's probabilities."""
        return reference

    def update(self, outputs: Any, targets: Any) -> None:
        """Fold one batch of probabilities against target probabilities (or 0/1 labels)."""
        p = np.asarray(outputs, np.float64).reshape(-1)
        t = np.asarray(targets, np.float64).reshape(-1)
        self.agree += int(((p >= self.threshold) == (t >= self.threshold)).sum())
        self.abs_diff += float(np.abs(p - t).sum())
        self.count += p.size

    def result(self) -> float:
        """Decision agreement so far, in percent."""
        return 100.0 * self.agree / self.count if self.count else float("nan")

    def details(self) -> dict[str, float]:
        """Mean absolute difference of the probabilities."""
        return {"mean_abs_diff": self.abs_diff / self.count if self.count else float("nan")}
