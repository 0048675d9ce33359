"""quantkit.graph: the index, the editor and the passes, on graphs with and without bodies."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.errors import InputError
from quantkit.graph import (
    GraphEditor,
    GraphIndex,
    UniqueNames,
    all_names,
    constants_to_initializers,
    name_nodes,
    remove_unused_initializers,
    remove_unused_nodes,
    toposort,
)
from tests.builders.subgraphs import if_model, loop_model

F32 = TensorProto.FLOAT


@pytest.fixture()
def if_m(tmp_path: Path) -> onnx.ModelProto:
    return onnx.load(str(if_model(tmp_path / "if.onnx")))


@pytest.fixture()
def loop_m(tmp_path: Path) -> onnx.ModelProto:
    return onnx.load(str(loop_model(tmp_path / "loop.onnx")))


def _pos(model: onnx.ModelProto, name: str) -> int:
    return next(i for i, n in enumerate(model.graph.node) if n.name == name)


def test_index_counts_reads_inside_bodies(if_m: onnx.ModelProto) -> None:
    index = GraphIndex(if_m)
    if_node = _pos(if_m, "/if")
    # read only inside the branches: the If node is their consumer
    assert index.consumers["s_then"] == [if_node]
    assert index.consumers["w_else"] == [if_node]
    assert index.consumers["k_then"] == [if_node]
    # r1: /conv2/Conv explicitly, and the else branch (through the If node)
    assert index.consumers["r1"] == [_pos(if_m, "/conv2/Conv"), if_node]
    # c2: /mean explicitly and both branches, but the If node once
    assert index.consumers["c2"] == [_pos(if_m, "/mean"), if_node]
    # use counts: c2 is read by /mean, then/Mul and else/Conv
    assert index.uses["c2"] == 3
    assert index.uses["s_then"] == 1 and index.uses["w1"] == 1
    assert index.uses["y"] == 1  # the graph output
    assert [n.name for n in index.consumer_nodes("w_else")] == ["/if"]


def test_index_constants_follow_constant_nodes_and_identity() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [helper.make_node("Constant", [], ["wc"], value=numpy_helper.from_array(w)),
             helper.make_node("Identity", ["wc"], ["wi"]),
             helper.make_node("Identity", ["wi"], ["wii"]),
             helper.make_node("Constant", [], ["s"], value_float=2.5),
             helper.make_node("MatMul", ["x", "wii"], ["m"]),
             helper.make_node("Mul", ["m", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [1, 2])],
                              [helper.make_tensor_value_info("y", F32, [1, 3])],
                              initializer=[numpy_helper.from_array(w, "unused")])
    index = GraphIndex(helper.make_model(graph))
    assert index.is_constant("wii") and index.is_constant("s") and not index.is_constant("m")
    assert not index.is_initializer("wii") and index.is_initializer("unused")
    assert index.is_constant_node("wc") and not index.is_constant_node("wii")
    np.testing.assert_array_equal(index.array("wii"), w)
    assert index.const_dims("wii") == (2, 3)
    assert float(index.const_array("s")) == 2.5  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        index.array("s")  # a scalar attribute, no TensorProto behind it
    assert index.elem_type("wii") == F32 and index.elem_type("y") == F32
    assert index.source("wii") == "wc"


def test_unique_names_avoid_every_scope(if_m: onnx.ModelProto) -> None:
    names = all_names(if_m.graph)
    assert {"t_mul", "e_conv", "then/Mul", "else/Conv"} <= names  # inside the bodies
    unique = UniqueNames.for_model(if_m)
    assert unique("t_mul") == "t_mul_1"
    assert unique("t_mul") == "t_mul_2"
    assert unique("else/Conv") == "else/Conv_1"
    assert unique("fresh") == "fresh"


def test_name_nodes_avoids_body_node_names() -> None:
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["b"], name="Relu_0")], "b",
                             [], [helper.make_tensor_value_info("b", F32, None)])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),  # unnamed: would become Relu_0
             helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
                 np.array(True))),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=body,
                              else_branch=body)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [1])],
                              [helper.make_tensor_value_info("y", F32, [1]),
                               helper.make_tensor_value_info("r", F32, [1])])
    model = helper.make_model(graph)
    name_nodes(model)
    assert [n.name for n in model.graph.node] == ["Relu_0_1", "Constant_1", "if"]


def test_remove_unused_initializers_keeps_what_branches_read(if_m: onnx.ModelProto) -> None:
    constants_to_initializers(if_m)  # k_then and zero become initializers of the same name
    if_m.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "dead"))
    if_m.graph.input.append(helper.make_tensor_value_info("dead", F32, [3]))
    dropped = remove_unused_initializers(if_m)
    assert dropped == {"dead"}
    kept = {t.name for t in if_m.graph.initializer}
    assert {"s_then", "w_else", "k_then", "zero", "w1", "w2"} <= kept
    assert "dead" not in {i.name for i in if_m.graph.input}
    onnx.checker.check_model(if_m, full_check=True)


def test_remove_unused_nodes_keeps_producers_of_body_reads(loop_m: onnx.ModelProto) -> None:
    g = loop_m.graph
    g.node.extend([helper.make_node("Neg", ["c1"], ["dead1"], name="dead1"),
                   helper.make_node("Abs", ["dead1"], ["dead2"], name="dead2")])
    assert remove_unused_nodes(loop_m) == ["dead2", "dead1"]
    # /relu1/Relu's output r1 is read by the Loop explicitly and inside its body; b_loop's
    # Constant is read only inside the body
    assert {"/relu1/Relu", "b_loop_Constant", "trip_Constant"} <= {n.name for n in g.node}
    assert remove_unused_nodes(loop_m) == []
    onnx.checker.check_model(loop_m, full_check=True)


def test_toposort_restores_order_and_respects_body_reads(loop_m: onnx.ModelProto) -> None:
    g = loop_m.graph
    original = [n.name for n in g.node]
    assert toposort(loop_m) is False  # already sorted: unchanged
    nodes = list(g.node)
    random.Random(3).shuffle(nodes)
    # the Loop first: b_loop (read only in the body) and r1 must be produced before it
    nodes.sort(key=lambda n: n.name != "/loop")
    del g.node[:]
    g.node.extend(nodes)
    assert toposort(loop_m) is True
    order = [n.name for n in g.node]
    assert order.index("b_loop_Constant") < order.index("/loop")
    assert order.index("/relu1/Relu") < order.index("/loop") < order.index("/conv2/Conv")
    assert sorted(order) == sorted(original)
    onnx.checker.check_model(loop_m, full_check=True)


def test_toposort_is_stable_among_ready_nodes() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="a"),
             helper.make_node("Neg", ["b"], ["c"], name="c"),
             helper.make_node("Abs", ["x"], ["b"], name="b"),
             helper.make_node("Sum", ["a", "c"], ["y"], name="y")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [1])],
                              [helper.make_tensor_value_info("y", F32, [1])])
    model = helper.make_model(graph)
    assert toposort(model)
    # only c moves (after its producer b); a stays first
    assert [n.name for n in model.graph.node] == ["a", "b", "c", "y"]


def test_toposort_rejects_a_cycle() -> None:
    nodes = [helper.make_node("Add", ["x", "q"], ["p"], name="p"),
             helper.make_node("Relu", ["p"], ["q"], name="q")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [1])],
                              [helper.make_tensor_value_info("q", F32, [1])])
    with pytest.raises(InputError, match="cycle through p, q"):
        toposort(helper.make_model(graph))


def test_editor_inserts_before_and_after_in_given_order() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="a"),
             helper.make_node("Neg", ["a"], ["y"], name="y")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [1])],
                              [helper.make_tensor_value_info("y", F32, [1])])
    model = helper.make_model(graph)

    def node(name: str) -> onnx.NodeProto:
        return helper.make_node("Identity", ["x"], [name], name=name)

    edit = GraphEditor(model)
    edit.insert_after("a", [node("after_a1")])
    edit.insert_before("y", [node("before_y")])
    edit.insert_after(0, [node("after_a2")])
    edit.insert_before("a", [node("first")])
    edit.append([node("last")])
    edit.insert_after("y", [node("after_y")])
    with pytest.raises(KeyError):
        edit.insert_before("missing", [])
    edit.commit()
    assert [n.name for n in model.graph.node] == [
        "first", "a", "after_a1", "before_y", "after_a2", "y", "last", "after_y"]
