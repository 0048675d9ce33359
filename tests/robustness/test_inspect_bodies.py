"""`quantkit inspect` shows an If's precision as what its branches compute in, not its bool
condition's type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.cli.main import main
from tests.builders.robust import if_model


def _inspect(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {n["name"]: n for n in doc["nodes"]}


def test_if_precision_is_its_branches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = _inspect(if_model(tmp_path / "if.onnx"), capsys)
    assert nodes["branchy"]["precision"] == "fp32"
    assert "bodies: 2 fp32 compute node(s)" in nodes["branchy"]["notes"]
    assert nodes["relu"]["precision"] == "fp32"  # other nodes are untouched


def test_if_with_int8_and_float_branches_is_mixed(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """then: MatMul on two int8 DequantizeLinear outputs; else: a float MatMul."""
    w = np.eye(4, dtype=np.float32)
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    wq = numpy_helper.from_array(np.eye(4, dtype=np.int8) * 10, "wq")
    then = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="t/q"),
         helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"], name="t/dq"),
         helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"], name="t/wdq"),
         helper.make_node("MatMul", ["xd", "wd"], ["t_out"], name="t/MatMul")],
        "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    other = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["e_out"], name="e/MatMul")],
        "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "w"), s, wq])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    node = _inspect(tmp_path / "m.onnx", capsys)["if"]
    assert node["precision"] == "mixed"
    assert "bodies: 1 fp32, 1 int8 compute node(s)" in node["notes"]
