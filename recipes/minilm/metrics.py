"""all-MiniLM-L6-v2's scores against the FP32 embeddings.

Cosine similarity of each INT8
embedding to its FP32 embedding (quantkit's ``cosine``), and rank-1 retrieval agreement: for
every evaluation sentence, whether its nearest other evaluation sentence (cosine) is the same
under the quantized model as under FP32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def embed(session: Any, tokens: Mapping[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings [n, 384] (float32) from an ONNX Runtime session."""
    wanted = {i.name for i in session.get_inputs()}
    n = len(tokens["input_ids"])
    outs = [session.run(None, {k: v[i: i + batch_size] for k, v in tokens.items()
                               if k in wanted})[0]
            for i in range(0, n, batch_size)]
    return np.concatenate(outs).astype(np.float32)


def cosine_to_reference(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per-sentence cosine similarity of ``output`` to ``reference`` (quantkit's metric)."""
    from quantkit.evaluate.metrics import cosine_rows

    return cosine_rows(output, reference)


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's most similar *other* row (cosine; rows are unit length)."""
    e = embeddings.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.asarray(sim.argmax(axis=1))


def retrieval_agreement(reference: np.ndarray, output: np.ndarray) -> float:
    """Fraction of sentences whose nearest neighbour is the same as under the reference."""
    return float(np.mean(nearest_neighbours(reference) == nearest_neighbours(output)))


def neighbour_margins(embeddings: np.ndarray) -> np.ndarray:
    """Cosine gap between each row's nearest and second-nearest other row (tie closeness)."""
    e = embeddings.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    top2 = np.sort(sim, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


__all__ = ["cosine_to_reference", "embed", "nearest_neighbours", "neighbour_margins",
           "retrieval_agreement"]
