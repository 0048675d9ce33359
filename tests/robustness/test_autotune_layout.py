"""``autotune`` / ``sensitivity`` feed the model as ``eval`` does (found on the zoo's Silero VAD).

``--constant`` and ``--batch-axis`` reached the data reader but not the evaluator that scores
candidates: a model with a state input given as a constant (``--constant h=0``, ``h: [1, 1, 8]``)
had ``h`` sliced as if it held samples ("Got invalid dimensions for input: h ... Got: 0
Expected: 1"). The per-layer SQNR of autotune's report fed whole batches to a model with a fixed
batch size. Both now go through the one chunking every evaluator uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from quantkit.cli.main import main


def state_model(path: Path) -> None:
    """``y = relu(x @ w1 + h) @ w2`` with x ``[1, 8]`` (fixed batch) and a state h ``[1, 1, 8]``."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 8)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([1, 8], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Reshape", ["h", "shape"], ["h2"], name="flat"),
             helper.make_node("Add", ["m1", "h2"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(
        nodes, "state", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w1, w2, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_autotune_with_a_constant_state_and_a_fixed_batch(tmp_path: Path) -> None:
    state_model(tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(0, 1, (24, 8)).astype(np.float32)
    x[:, 3] *= 40  # one wide channel: INT8 per-tensor loses the small ones, autotune searches
    np.savez(tmp_path / "d.npz", x=x)
    out = tmp_path / "p.yaml"
    code = main(["-q", "autotune", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"),
                 "--constant", "h=0", "--batch-size", "8", "--metric", "cosine",
                 "--max-accuracy-drop", "0.001", "--max-evaluations", "10", "-o", str(out)])
    assert code == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["default"] == "int8" and doc["overrides"]  # it searched: a layer was kept
    code = main(["-q", "sensitivity", str(tmp_path / "m.onnx"), "--data",
                 str(tmp_path / "d.npz"), "--constant", "h=0", "--batch-size", "8",
                 "--metric", "cosine", "-o", str(tmp_path / "sens")])
    assert code == 0
