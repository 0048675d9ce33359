"""Per-layer SQNR between the FP32 model's activations and a quantized model's.

Q/DQ models written by quantkit keep the FP32 model's tensor names (Q/DQ and Cast nodes are
inserted beside them), so the same activation can be captured in both models and compared,
one batch at a time, with only running sums kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from quantkit.evaluate.metrics import sqnr_db


class LayerSQNR:
    """Streaming signal and noise power per tensor."""

    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def update(self, reference: Mapping[str, np.ndarray],
               quantized: Mapping[str, np.ndarray]) -> None:
        """Fold one batch of activations captured from both models."""
        for name, ref in reference.items():
            got = quantized.get(name)
            if got is None or got.shape != ref.shape:
                continue
            r = ref.astype(np.float64, copy=False)
            d = got.astype(np.float64) - r
            self.signal[name] = self.signal.get(name, 0.0) + float(np.vdot(r, r))
            self.noise[name] = self.noise.get(name, 0.0) + float(np.vdot(d, d))

    def result(self) -> dict[str, float]:
        """``{tensor: SQNR dB}`` in the order tensors were first seen."""
        return {n: sqnr_db(self.signal[n], self.noise[n]) for n in self.signal}


def layer_sqnr(reference_model: str | os.PathLike[str], model: str | os.PathLike[str],
               batches: Iterable[Mapping[str, np.ndarray]],
               tensors: Sequence[str] | None = None) -> dict[str, float]:
    """SQNR (dB) of every activation the two models share, over ``batches``.

    Args:
        reference_model: the FP32 model.
        model: the quantized (Q/DQ, possibly FP16) model.
        batches: input batches (validated against the FP32 model's inputs).
        tensors: restrict to these activations (default: every FP32 activation present in
            both models).
    """
    from quantkit.capture import ActivationCapture
    from quantkit.data.base import validate_batch

    ref = ActivationCapture(reference_model, tensors)
    names = [a.name for a in ref.activations]
    quant = ActivationCapture(model)
    shared = {a.name for a in quant.activations}
    quant = ActivationCapture(model, [n for n in names if n in shared])
    acc = LayerSQNR()
    for raw in batches:
        batch = validate_batch(raw, ref.inputs, "<layer_sqnr>")
        acc.update(ref.run_batch(batch), quant.run_batch(batch))
    return acc.result()
