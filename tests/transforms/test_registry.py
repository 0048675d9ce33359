"""The rescue transform registry: names, aliases, options, generated help and messages, plugins.

Plus the precision-file loader that reads ``rescue:`` beside the plan (the plan model of
``quantkit.qdq`` has no ``rescue`` and refuses the key with a message naming the loader).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.errors import InputError
from quantkit.qdq.plan import PrecisionConfig
from quantkit.transforms.precision_file import PrecisionFile
from quantkit.transforms.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    EqualizeOptions,
    RescueStep,
    SmoothQuantOptions,
    Statistic,
    TransformRegistry,
    TransformSpec,
    get_transform,
    parse_rescue,
    register_transform,
    rescue_help,
)


def test_builtins_declare_order_options_and_statistics() -> None:
    assert REGISTRY.names() == ["equalize", "high_bias", "smoothquant", "bias_correction"]
    eq, hb, sq, bc = REGISTRY.specs()
    assert eq.aliases == ("cle",) and eq.options is EqualizeOptions
    assert sq.shorthand == "alpha" and sq.options is SmoothQuantOptions
    assert [s.function_preserving for s in (eq, hb, sq, bc)] == [True, True, True, False]
    assert eq.statistics == {Statistic.WEIGHTS}
    assert hb.statistics == sq.statistics == {Statistic.ACTIVATION_RANGES}
    assert bc.statistics == {Statistic.SCALES, Statistic.QUANTIZATION_SHIFT}
    for spec in REGISTRY.specs():  # every implementation loads and has the calling convention
        impl = spec.load()
        assert callable(impl.prepare) and callable(impl.apply)


@pytest.mark.parametrize("spelling, name", [
    ("CLE", "equalize"), ("Equalize", "equalize"), ("HBA", "high_bias"),
    ("High-Bias", "high_bias"), ("SMOOTH", "smoothquant"), ("Bias-Correct", "bias_correction"),
    (" bias_correction ", "bias_correction")])
def test_names_and_aliases_any_case(spelling: str, name: str) -> None:
    assert get_transform(spelling).name == name
    assert parse_rescue(spelling) == [RescueStep(name, {})]


def test_unknown_name_message_lists_every_spelling() -> None:
    with pytest.raises(InputError) as err:
        parse_rescue("cle,frobnicate", where="--rescue")
    text = str(err.value)
    assert text.startswith("--rescue: unknown rescue transform 'frobnicate'; valid (any case):")
    for spec in REGISTRY.specs():
        assert all(s in text for s in spec.spellings), spec.name
    assert "smoothquant[:ALPHA]" in text and "ALPHA in (0, 1]" in text
    recipe = REGISTRY.not_one_of("frobnicate")
    assert recipe.startswith("'frobnicate' is not one of bias_correction, equalize, high_bias, "
                             "smoothquant (also cle, high-bias, hba, smooth")


def test_options_are_typed_and_validated() -> None:
    sq = get_transform("smooth")
    assert sq.make_options({"alpha": 0.8}) == SmoothQuantOptions(alpha=0.8)
    assert parse_rescue("smooth:0.25") == [RescueStep("smoothquant", {"alpha": 0.25})]
    with pytest.raises(InputError, match=r"has no option 'beta'; its options: alpha, fold"):
        sq.make_options({"beta": 1})
    with pytest.raises(InputError, match=r"alpha must be in \(0, 1\]"):
        sq.make_options({"alpha": 0.0})
    with pytest.raises(InputError, match="iterations must be at least 1"):
        get_transform("cle").make_options({"iterations": 0})
    with pytest.raises(InputError, match=r"only smoothquant takes an option \(smoothquant:ALPHA\)"):
        parse_rescue("hba:2")


def test_help_texts_are_generated_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from quantkit.cli.main import main

    text = rescue_help()
    assert all(s in text for spec in REGISTRY.specs() for s in spec.spellings)
    assert "they run in the order equalize, high_bias, smoothquant, bias_correction" in text
    for command in ("quantize", "autotune"):
        assert main([command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # click's wrap
        assert "bias_correction (bias-correction, bias_correct, bias-correct)" in out, command


def _bn_model(path: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("w", rng.normal(0, 0.3, (4, 3, 3, 3))), ("s", rng.uniform(0.5, 2, 4)),
        ("b", rng.normal(0, 1, 4)), ("m", rng.normal(0, 1, 4)), ("v", rng.uniform(0.5, 2, 4)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return model


class FoldBatchNorm:
    """A user transform: the library's BatchNormalization folding, through the registry."""

    def prepare(self, model: onnx.ModelProto, options: object, ctx: object) -> object:
        from quantkit.transforms.rescue import PreparedStep

        return PreparedStep(model)

    def apply(self, prepared: object, source: object, options: object,
              ctx: object) -> object:
        from quantkit.transforms import fold_batchnorm
        from quantkit.transforms.rescue import StepResult

        out, report = fold_batchnorm(prepared.model)  # type: ignore[attr-defined]
        return StepResult(out, report, {"y"})


@pytest.fixture()
def fold_bn_registered() -> object:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NoOptions:
        pass

    spec = register_transform(TransformSpec(
        "fold_bn", ("fold-bn",), NoOptions, True, frozenset({Statistic.WEIGHTS}), 50,
        FoldBatchNorm(), summary="BatchNormalization folded into the layer before it"))
    yield spec
    REGISTRY.unregister("fold_bn")


def test_a_registered_transform_runs_first_and_is_listed(tmp_path: Path,
                                                         fold_bn_registered: object) -> None:
    from quantkit.transforms.rescue import apply_rescue

    model = _bn_model(tmp_path / "bn.onnx")
    x = np.random.default_rng(0).normal(0, 1, (16, 3, 6, 6)).astype(np.float32)
    assert "fold_bn (fold-bn)" in rescue_help()
    assert [s.name for s in parse_rescue("cle,FOLD-BN")] == ["fold_bn", "equalize"]
    res = apply_rescue(model, "fold-bn", [{"x": x}], method="minmax")
    assert [r["transform"] for r in res.details] == ["fold_batchnorm"]
    assert not [n for n in res.model.graph.node if n.op_type == "BatchNormalization"]
    from quantkit._ort import session

    want = session(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = session(res.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert "y" in res.scales.scales  # calibrated again after a function-preserving transform


def test_taken_spelling_and_bad_options_type_are_refused() -> None:
    reg = TransformRegistry()
    with pytest.raises(ValueError, match="'CLE' is already taken by 'equalize'"):
        REGISTRY.register(TransformSpec("other", ("CLE",), EqualizeOptions, True,
                                        frozenset(), 1, object()))
    with pytest.raises(TypeError, match="options must be a dataclass"):
        reg.register(TransformSpec("x", (), dict, True, frozenset(), 1, object()))


def test_entry_point_plugin_is_found_on_lookup(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path declaring the entry point group (not a mock)."""
    (tmp_path / "qk_test_plugin.py").write_text(
        "from dataclasses import dataclass\n"
        "from quantkit.transforms.registry import Statistic, TransformSpec\n"
        "@dataclass(frozen=True)\nclass Opts:\n    strength: float = 1.0\n"
        "SPEC = TransformSpec('sharpen', ('sh',), Opts, True, frozenset({Statistic.WEIGHTS}),"
        " 150, 'qk_test_plugin:IMPL')\nIMPL = object()\n")
    info = tmp_path / "qk_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qk-test-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n"
                                           "sharpen = qk_test_plugin:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "qk_test_plugin", raising=False)
    reg = TransformRegistry()
    assert reg.lookup("SH") is not None and reg.names() == ["sharpen"]
    assert reg.parse("sharpen") == [RescueStep("sharpen", {})]


# --- the precision file: the plan and ``rescue:`` ----------------------------------------

def test_precision_file_splits_rescue_from_the_plan(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("default_float: fp16\noverrides:\n  - op_type: Softmax\n    precision: fp32\n"
                 "rescue: [bias-correction, \"Smooth:0.8\"]\n")
    cfg = PrecisionFile.from_yaml(p)
    assert isinstance(cfg, PrecisionConfig) and cfg.rescue == ("bias-correction", "Smooth:0.8")
    assert cfg.steps() == [RescueStep("smoothquant", {"alpha": 0.8}),
                           RescueStep("bias_correction", {})]
    plan = cfg.plan
    assert type(plan) is PrecisionConfig and not hasattr(plan, "rescue")
    assert plan.default_float == "fp16" and len(plan.overrides) == 1
    with pytest.raises(InputError, match=r"rescue: a plan has no rescue transforms: load the "
                                         r"file with quantkit\.transforms\.precision_file"):
        PrecisionConfig.from_yaml(p)


def test_precision_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("rescue: [cle, magic]\n")
    with pytest.raises(InputError, match=rf"{p}: rescue: unknown rescue transform 'magic'"):
        PrecisionFile.from_yaml(p)
    p.write_text("default: int4\nrescue: [cle]\n")
    with pytest.raises(InputError, match=rf"{p}: default: .*Precisions are int8"):
        PrecisionFile.from_yaml(p)
