"""Precision files and the planner."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantkit.errors import InputError
from quantkit.qdq.plan import NodeView, PrecisionConfig, PrecisionPlan, make_plan

NODES = [NodeView("/backbone/conv1/Conv", "Conv", True),
         NodeView("/backbone/relu/Relu", "Relu", False),
         NodeView("/head/conv/Conv", "Conv", True),
         NodeView("/head/fc/Gemm", "Gemm", True),
         NodeView("/head/softmax/Softmax", "Softmax", False)]


def test_defaults() -> None:
    plan = make_plan(NODES, PrecisionConfig())
    assert [n.precision for n in plan.nodes.values()] == ["int8", "fp32", "int8", "int8", "fp32"]


def test_first_match_wins_and_kinds_of_rules() -> None:
    cfg = PrecisionConfig.from_mapping({
        "default": "int8", "default_float": "fp16",
        "overrides": [{"name": "/head/fc/Gemm", "precision": "fp32"},
                      {"regex": "^/head/.*", "precision": "fp16"},
                      {"op_type": "Softmax", "precision": "fp32"}]})
    plan = make_plan(NODES, cfg)
    got = {n.name: (n.precision, n.reason) for n in plan.nodes.values()}
    assert got["/head/fc/Gemm"] == ("fp32", "override 1: name '/head/fc/Gemm'")
    assert got["/head/conv/Conv"][0] == "fp16"
    assert got["/head/softmax/Softmax"][0] == "fp16"  # rule 2 matched first
    assert plan.warnings == ["override 3 (op_type 'Softmax') never applies: every node it "
                             "matches is taken by an earlier rule (first match wins)"]
    assert got["/backbone/relu/Relu"] == ("fp16", "default_float (not quantizable)")
    assert plan.float_type("/backbone/conv1/Conv") == "fp16"


def test_rule_matching_nothing_lists_close_names() -> None:
    cfg = PrecisionConfig.from_mapping({"overrides": [{"name": "/backbone/conv2/Conv",
                                                        "precision": "fp32"}]})
    with pytest.raises(InputError, match="closest node names: /backbone/conv1/Conv"):
        make_plan(NODES, cfg)
    cfg = PrecisionConfig.from_mapping({"overrides": [{"op_type": "Softmx", "precision": "fp32"}]})
    with pytest.raises(InputError, match="Softmax"):
        make_plan(NODES, cfg)


def test_int8_on_a_non_quantizable_op_is_a_warning() -> None:
    cfg = PrecisionConfig.from_mapping({"overrides": [{"op_type": "Softmax",
                                                        "precision": "int8"}]})
    plan = make_plan(NODES, cfg)
    assert plan.nodes["/head/softmax/Softmax"].precision == "fp32"
    assert len(plan.warnings) == 1 and "does not quantize" in plan.warnings[0]


def test_residual_add_follows_its_fused_conv() -> None:
    nodes = [NodeView("conv", "Conv", True), NodeView("add", "Add", False)]
    plan = make_plan(nodes, PrecisionConfig(), residual_adds=[("add", "conv")])
    add = plan.nodes["add"]
    assert (add.precision, add.quantize_residual) == ("fp32", True)  # a float op, fused
    cfg = PrecisionConfig.from_mapping({"overrides": [{"name": "conv", "precision": "fp16"}]})
    assert not make_plan(nodes, cfg, [("add", "conv")]).nodes["add"].quantize_residual
    cfg = PrecisionConfig.from_mapping({"overrides": [{"name": "add", "precision": "fp32"}]})
    assert not make_plan(nodes, cfg, [("add", "conv")]).nodes["add"].quantize_residual


@pytest.mark.parametrize("text, needle", [
    ("default: int4\n", "default: Input should be 'int8', 'fp8', 'fp16' or 'fp32'"),
    ("overrides:\n  - name: a\n    regex: b\n    precision: fp16\n", "exactly one of"),
    ("overrides:\n  - regex: '('\n    precision: fp16\n", "invalid regex"),
    ("overrides:\n  - name: a\n", "overrides[0].precision: Field required"),
    ("default_float: int8\n", "default_float"),
    ("colour: red\n", "colour: Extra inputs are not permitted"),
    ("overrides:\n  - name: [a\n", "p.yaml:3:1: YAML syntax error"),
    ("- just a list\n", "expected a mapping"),
])
def test_bad_precision_files(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(InputError) as err:
        PrecisionConfig.from_yaml(tmp_path / "p.yaml")
    assert needle in str(err.value)


def test_plan_round_trips_through_json() -> None:
    plan = make_plan(NODES, PrecisionConfig(default_float="fp16"))
    back = PrecisionPlan.from_dict(plan.to_dict())
    assert back.to_dict() == plan.to_dict()


names = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)


@given(st.lists(names, min_size=1, max_size=8, unique=True), st.data())
def test_name_rules_select_exactly_their_node(node_names: list[str], data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(node_names))
    nodes = [NodeView(n, "Conv", True) for n in node_names]
    cfg = PrecisionConfig.from_mapping({"overrides": [{"name": target, "precision": "fp16"}]})
    plan = make_plan(nodes, cfg)
    assert [n.name for n in plan.nodes.values() if n.precision == "fp16"] == [target]
