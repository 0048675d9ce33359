"""Inputs whose dynamic dimensions share one name (found on the zoo's PP-OCR direction
classifier, whose input is ``[-1, 3, '?', '?']``).

TensorRT takes dimensions of one name as one size, so a 48 x 192 profile fails with "Input
dimensions with this name have different constant values", naming neither the input nor the
dimensions. ``quantkit build`` now names them and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.backends import get_backend
from quantkit.cli.main import main


@pytest.mark.skipif(not get_backend("tensorrt-rtx").available(),
                    reason="needs TensorRT-RTX: pip install 'quantkit[rtx]'")
def test_build_names_dimensions_that_share_a_name(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "?", "?"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "?", "?"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    engine = tmp_path / "m.engine"
    code = main(["-q", "build", str(tmp_path / "m.onnx"), "--backend", "tensorrt-rtx", "-o",
                 str(engine), "--shapes", "x:1x3x8x16"])
    err = capsys.readouterr().err
    assert code != 0 and not engine.exists()
    assert "input 'x' names dimensions 2 and 3 '?'" in " ".join(err.split()), err
    # the same model with distinct names builds
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], ("h", "w"),
                         strict=True):
        dim.dim_param = name
    onnx.save(model, str(tmp_path / "m2.onnx"))
    assert main(["-q", "build", str(tmp_path / "m2.onnx"), "--backend", "tensorrt-rtx", "-o",
                 str(engine), "--shapes", "x:1x3x8x16"]) == 0
