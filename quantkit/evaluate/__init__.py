"""Evaluation: task metrics, agreement with the FP32 reference, per-layer SQNR, latency.

Task metrics (``--metric`` / recipe ``metric:``): ``top1``, ``top5``, ``cosine``,
``detection``, ``detection-map``, ``ctc-exact``, ``cer``, and user metrics -- a
:class:`Metric` subclass in a Python file (``FILE.py:CLASS``) or in the entry point group
``quantkit.metrics``. See docs/metrics.md.
"""

from quantkit.evaluate.base import MetricSpec, load_metric_plugin, parse_metric
from quantkit.evaluate.detection import DetectionOptions, Detections
from quantkit.evaluate.latency import LatencyStats, measure
from quantkit.evaluate.layers import LayerSQNR, layer_sqnr
from quantkit.evaluate.metrics import (
    Agreement,
    AgreementResult,
    Metric,
    OutputsAgreement,
    available_metrics,
    create_metric,
    edit_distance,
    register_metric,
    sqnr_db,
)
from quantkit.evaluate.ocr import ctc_greedy

__all__ = [
    "Agreement",
    "AgreementResult",
    "DetectionOptions",
    "Detections",
    "LatencyStats",
    "LayerSQNR",
    "Metric",
    "MetricSpec",
    "OutputsAgreement",
    "available_metrics",
    "create_metric",
    "ctc_greedy",
    "edit_distance",
    "layer_sqnr",
    "load_metric_plugin",
    "measure",
    "parse_metric",
    "register_metric",
    "sqnr_db",
]
