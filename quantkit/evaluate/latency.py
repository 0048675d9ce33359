"""Latency sources and labels; host-clock timing (:func:`measure`, from the backends layer).

GPU runners time with CUDA events instead (:mod:`quantkit.backends.runner`); both report a
:class:`~quantkit.backends.base.LatencyStats`.
"""

from __future__ import annotations

from quantkit.backends.base import LatencyStats
from quantkit.backends.timing import measure

__all__ = ["FAKE_QUANT_NOTE", "SOURCES", "LatencyStats", "cpu_source", "latency_label", "measure",
           "source_rank"]


#: where a latency comes from, best first (the report's primary latency is the best available)
SOURCES = ("measured", "estimated", "cpu-fake-quant", "cpu")
#: one sentence on what ``cpu-fake-quant`` is, for every place that shows such a number
FAKE_QUANT_NOTE = ("cpu-fake-quant: ONNX Runtime on the CPU runs the Q/DQ model in float "
                   "(each QuantizeLinear/DequantizeLinear pair rounds and rescales, the "
                   "convolutions stay FP32), so INT8 configs are usually slower than FP32 there; "
                   "it measures the accuracy path, not a TensorRT engine's speed.")


def cpu_source(has_qdq: bool) -> str:
    """``cpu-fake-quant`` for a Q/DQ model on ONNX Runtime's CPU provider, else ``cpu``."""
    return "cpu-fake-quant" if has_qdq else "cpu"


def source_rank(source: str) -> int:
    """Position of ``source`` in :data:`SOURCES` (unknown sources last)."""
    return SOURCES.index(source) if source in SOURCES else len(SOURCES)


def latency_label(source: str, target: str | None = None, batch: int | None = None) -> str:
    """How a latency was obtained, in words: ``estimated, H100-SXM, batch 8``.

    Args:
        source: one of :data:`SOURCES`.
        target: the GPU (measured / estimated) or the CPU.
        batch: samples per timed inference.
    """
    parts = [source or "unknown source"]
    if target:
        parts.append(str(target))
    if batch:
        parts.append(f"batch {int(batch)}")
    return ", ".join(parts)
