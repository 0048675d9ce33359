"""The evaluators run models through the backends' Runner protocol (ModelOutputs).

Real ONNX Runtime runners; outputs are checked against a plain ``InferenceSession``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _models import small_cnn

from quantkit.backends.base import Runner
from quantkit.backends.onnxruntime import OrtRunner
from quantkit.errors import InputError
from quantkit.evaluate.task import ModelOutputs


def _plain(model: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["probs"], {"x": x})[0])


def test_default_runner_is_onnxruntime_with_the_compared_tensor(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    outs = ModelOutputs(model, compare="logits")
    assert isinstance(outs.runner, OrtRunner) and isinstance(outs.runner, Runner)
    got = outs.run({"x": x})
    assert sorted(got) == ["logits", "probs"]
    np.testing.assert_allclose(got["probs"], _plain(model, x), rtol=1e-6)
    e = np.exp(got["logits"] - got["logits"].max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), got["probs"], rtol=1e-5)


def test_a_given_runner_is_what_runs(tmp_path: Path) -> None:
    a = small_cnn(tmp_path / "a.onnx", seed=0)
    b = small_cnn(tmp_path / "b.onnx", seed=1)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    # model a's layout and names, model b's runner (serialized bytes): b's numbers come back
    outs = ModelOutputs(a, runner=OrtRunner(onnx.load(str(b)).SerializeToString()))
    np.testing.assert_allclose(outs.run({"x": x})["probs"], _plain(b, x), rtol=1e-6)
    assert not np.allclose(_plain(a, x), _plain(b, x))


def test_a_runner_without_the_compared_tensor_is_refused(tmp_path: Path) -> None:
    model = small_cnn(tmp_path / "m.onnx")
    outs = ModelOutputs(model, compare="logits", runner=OrtRunner(model), where="m.onnx")
    with pytest.raises(InputError, match="m.onnx: the runner returned no tensor 'logits'"):
        outs.run({"x": np.zeros((1, 3, 8, 8), np.float32)})
