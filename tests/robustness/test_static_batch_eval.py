"""Models with a fixed batch size are evaluated in chunks of that size ("Got: 32 Expected: 1"
from ONNX Runtime before; issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.cli.main import main
from quantkit.evaluate.task import ModelOutputs

W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 7


def fixed_batch_model(path: Path, batch: int) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(W, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("fixed", [1, 3])
def test_outputs_of_every_sample_in_fixed_size_chunks(tmp_path: Path, fixed: int) -> None:
    model = fixed_batch_model(tmp_path / "m.onnx", fixed)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    outs = ModelOutputs(model).run({"x": x})
    # 10 samples: chunks of `fixed`, the last one padded and trimmed again
    np.testing.assert_allclose(outs["y"], x @ W, rtol=1e-5, atol=1e-6)


def test_eval_cli_on_a_fixed_batch_model(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    model = fixed_batch_model(tmp_path / "m.onnx", 1)
    x = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = main(["eval", str(model), "--data", str(tmp_path / "x.npy"), "--reference",
                 str(model), "--batch-size", "4", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["samples"] == 10
    assert doc["agreement"]["samples"] == 10
    assert doc["agreement"]["top1_agreement"] == 100.0


def test_sweep_timing_feed_is_one_fixed_size_chunk(tmp_path: Path) -> None:
    from quantkit.model import input_specs, load_model
    from quantkit.sweep.latency import feed_of

    model = fixed_batch_model(tmp_path / "m.onnx", 3)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    feed = feed_of([{"x": x}], 8, input_specs(load_model(model)))
    np.testing.assert_array_equal(feed["x"], x[:3])
    assert feed_of([{"x": x}], 8)["x"].shape == (8, 4)  # without the model: the batch, cut
