"""Shared data for the transform tests: the demo model and digits, a run helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tests.transforms.ortrun import run  # noqa: F401  (old import: from conftest import run)


@pytest.fixture(scope="session")
def demo() -> dict[str, Any]:
    """The shipped demo CNN with its logits exposed, calibration and held-out digits."""
    from quantkit.demo import asset

    model = onnx.load(str(asset("demo_cnn.onnx")))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        softmax.input[0], onnx.TensorProto.FLOAT, ["N", 10]))
    with np.load(asset("demo_data.npz")) as d:
        cal = d["calibration"].astype(np.float32)[:, None] / 255.0
        ev = d["evaluation"].astype(np.float32)[:, None] / 255.0
        labels = d["evaluation_labels"]
    return {"model": model, "path": asset("demo_cnn.onnx"), "cal": cal, "eval": ev,
            "labels": labels, "logits": softmax.input[0]}


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest) -> Path:
    """The folder test_real_models.py exports EfficientNet into (shared, kept between runs)."""
    return Path(request.config.cache.mkdir("quantkit-real-models"))

