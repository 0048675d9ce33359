"""A histogram grown far past its first batch's range (found on the zoo's YOLOX detector).

A tensor whose first calibration batch has a tiny max (2.4e-4) and a later batch a value 80x
larger grows its |x| histogram to 10^5 bins, almost all empty. ``mse`` (and so ``auto``, the
default, which weighs the mse candidate of every tensor) evaluated every candidate over every
bin: O(bins^2), about half an hour for that one tensor, so ``quantkit calibrate`` looked hung on
a valid model. Empty bins add nothing to any candidate's error; the search now sums over the
non-empty ones, with the same result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantkit.calibrators.mse import mse_amax
from quantkit.cli.main import main


def reference_mse_amax(counts: np.ndarray, width: float) -> float:
    """The pytorch-quantization MSE search written out: every candidate, every bin."""
    nb = len(counts)
    edges = (np.arange(nb + 1, dtype=np.float64) * width).astype(np.float32)
    centers = (edges[1:] + edges[:-1]) / np.float32(2)
    best, best_err = 0.0, np.inf
    for i in range(128, nb):
        amax = centers[i]
        scale = np.float32(127) / amax
        q = np.clip(np.round(centers * scale), -127, 127) / scale
        err = float((((q - centers).astype(np.float64) ** 2) * counts).mean())
        if err < best_err:  # the first minimum wins
            best, best_err = float(amax), err
    return best


def test_sparse_grown_histogram_matches_the_full_search() -> None:
    rng = np.random.default_rng(3)
    counts = np.zeros(3000, dtype=np.int64)
    counts[:2048] = rng.poisson(np.exp(-np.arange(2048) / 300.0) * 500)
    counts[rng.choice(np.arange(2048, 3000), 5, replace=False)] = 1  # a few far outliers
    for c in (counts, counts[:2048], rng.poisson(3.0, 700)):
        assert mse_amax(c, 1e-3) == reference_mse_amax(np.asarray(c), 1e-3)


def test_calibrate_finishes_on_a_histogram_grown_to_the_bin_cap(tmp_path: Path) -> None:
    """First batch max 1e-4, second batch 1e3: the histogram hits its cap (2^18 bins)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 64],
                           np.eye(64, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                               helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")],
                              "grown", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1e-4, (4, 64)).astype(np.float32)
    data[2:] *= 1e3
    data[3, 5] = 1e3
    np.save(tmp_path / "d.npy", data)
    for method in ("mse", "auto"):
        out = tmp_path / f"{method}.json"
        code = main(["-q", "calibrate", str(path), "--data", str(tmp_path / "d.npy"),
                     "--batch-size", "2", "--method", method, "--scales", str(out)])
        assert code == 0
        amax = json.loads(out.read_text())["tensors"]["r"]["amax"]  # what the MatMul reads
        assert 0 < amax <= 1e3 * 1.001
