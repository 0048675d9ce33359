"""Run a model with ONNX Runtime for the transform tests.

A module of its own: ``from conftest import run`` resolved to whichever ``conftest`` pytest
imported last (tests/models/conftest.py when both folders were on the command line).
"""

from __future__ import annotations

import numpy as np
import onnx


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
        outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run a model with ONNX Runtime (Q/DQ as written, TensorRT-like numerics)."""
    from quantkit._ort import session

    sess = session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(sess.run(outputs, feeds))
