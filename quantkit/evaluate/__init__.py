"""Evaluation: task metrics, agreement with the FP32 reference, per-layer SQNR, latency."""

from quantkit.evaluate.latency import LatencyStats, measure
from quantkit.evaluate.layers import LayerSQNR, layer_sqnr
from quantkit.evaluate.metrics import (
    Agreement,
    AgreementResult,
    Metric,
    available_metrics,
    create_metric,
    edit_distance,
    register_metric,
    sqnr_db,
)

__all__ = [
    "Agreement",
    "AgreementResult",
    "LatencyStats",
    "LayerSQNR",
    "Metric",
    "available_metrics",
    "create_metric",
    "edit_distance",
    "layer_sqnr",
    "measure",
    "register_metric",
    "sqnr_db",
]
