"""PP-OCRv4's scores: CTC decoding and character error rate (rec), map agreement (det)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from quantkit.evaluate.metrics import edit_distance


def ctc_greedy_decode(probs: np.ndarray, characters: Sequence[str]) -> list[str]:
    """Best-path CTC decoding of ``probs`` [N, T, C]: argmax, merge repeats, drop blanks (0)."""
    idx = np.asarray(probs).argmax(axis=2)
    out = []
    for row in idx:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append("".join(characters[i] for i in row[keep]))
    return out


def character_error_rate(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """Total edit distance over total ground-truth length (corpus-level CER), as a fraction.

    Same definition as quantkit's registered ``cer`` metric (which reports percent).
    """
    if len(predictions) != len(truths):
        raise ValueError("predictions and truths differ in length")
    dist = sum(edit_distance(p, t) for p, t in zip(predictions, truths, strict=True))
    return dist / max(1, sum(len(t) for t in truths))


def recognise(session: Any, batch: np.ndarray, characters: Sequence[str],
              batch_size: int = 32) -> list[str]:
    """Run a rec session and CTC-decode each line.

    Leading/trailing spaces are stripped: the margin and the zero padding sometimes decode as
    a space, which is not a recognition error.
    """
    from recipes.runtime import run_batched

    probs = run_batched(session, batch, batch_size)
    return [s.strip() for s in ctc_greedy_decode(probs, characters)]


def det_agreement(ref: np.ndarray, out: np.ndarray, threshold: float = 0.3) -> dict[str, float]:
    """Agreement of two det probability maps [N, 1, H, W].

    Returns ``iou`` of the maps binarised at ``threshold`` (DBNet's ``thresh`` in RapidOCR's
    config), ``mean_abs_diff`` of the probabilities and ``max_abs_diff``.
    """
    a, b = ref >= threshold, out >= threshold
    union = np.logical_or(a, b).sum()
    iou = float(np.logical_and(a, b).sum() / union) if union else 1.0
    diff = np.abs(ref.astype(np.float32) - out.astype(np.float32))
    return {"iou": iou, "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}


__all__ = ["character_error_rate", "ctc_greedy_decode", "det_agreement", "edit_distance",
           "recognise"]
