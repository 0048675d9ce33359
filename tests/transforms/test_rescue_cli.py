"""Rescue specs (`parse_rescue`) and `quantkit quantize --rescue` / precision YAML `rescue:`.

On the shipped demo CNN and digits, through the command line: the output model records the
transforms in run order, lints clean and parses in TensorRT-RTX with the planned precisions;
its activation scales are those of the *transformed* FP32 model (checked against maxima taken
with plain ONNX Runtime); a layer the precision file keeps out of INT8 keeps its bias; bad
specs exit 2 and write nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantkit.cli.main import main
from quantkit.demo import prepare_demo
from quantkit.errors import InputError
from quantkit.transforms import applied_transforms
from quantkit.transforms.rescue import RescueStep, combine_rescue, parse_rescue


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    prepare_demo(out)
    return out


def _run(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- parse_rescue ---------------------------------------------------------------------------

def test_parse_rescue_spellings_and_run_order() -> None:
    assert parse_rescue("bias-correction,smoothquant:0.8,cle") == [
        RescueStep("equalize", {}), RescueStep("smoothquant", {"alpha": 0.8}),
        RescueStep("bias_correction", {})]
    assert [s.name for s in parse_rescue(["hba", "bias_correct", "equalize"])] == [
        "equalize", "high_bias", "bias_correction"]
    for spelling in ("smooth", "smoothquant", "SmoothQuant"):
        assert parse_rescue(spelling) == [RescueStep("smoothquant", {})]
    for spelling in ("high-bias", "high_bias", "hba"):
        assert parse_rescue(spelling)[0].name == "high_bias"
    assert parse_rescue(["smoothquant:1", "cle, cle"]) == [
        RescueStep("equalize", {}), RescueStep("smoothquant", {"alpha": 1.0})]
    assert parse_rescue(None) == [] and parse_rescue([]) == []
    assert RescueStep("smoothquant", {"alpha": 0.8}).spec() == "smoothquant:0.8"


@pytest.mark.parametrize("spec, needle", [
    ("magic", "unknown rescue transform 'magic'; valid (any case): equalize (cle), "
              "high_bias (high-bias, hba)"),
    ("cle,,bias-correction", "empty transform name"),
    ("smoothquant:0", "alpha must be in (0, 1]"),
    ("smoothquant:1.5", "alpha must be in (0, 1]"),
    ("smoothquant:abc", "must be a number"),
    ("cle:0.5", "only smoothquant takes an option"),
    ("smoothquant:0.5,smooth:0.8", "given twice with different options"),
])
def test_parse_rescue_rejects(spec: str, needle: str) -> None:
    with pytest.raises(InputError, match="--rescue") as err:
        parse_rescue(spec)
    assert needle in str(err.value)


def test_combine_rescue_first_wins_and_keeps_run_order() -> None:
    flag = parse_rescue("smoothquant:0.8")
    yaml_ = parse_rescue(["bias-correction", "smoothquant:0.5", "cle"])
    assert combine_rescue(flag, yaml_) == [
        RescueStep("equalize", {}), RescueStep("smoothquant", {"alpha": 0.8}),
        RescueStep("bias_correction", {})]


# --- quantize --rescue ----------------------------------------------------------------------

def _activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _biases(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.name: inits[n.input[2]].astype(np.float32) for n in model.graph.node
            if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits}


def test_quantize_with_rescue_flag_and_yaml(demo_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from quantkit._ort import session
    from quantkit.qdq.lint import lint_model
    from quantkit.transforms import equalize, smoothquant

    model = demo_dir / "demo_cnn.onnx"
    data = demo_dir / "data" / "calibration.npy"
    (tmp_path / "p.yaml").write_text(
        "overrides:\n  - name: /conv4/Conv\n    precision: fp32\n"
        "rescue: [bias-correction, \"smoothquant:0.5\"]\n")
    out = tmp_path / "q.onnx"
    code, text, err = _run(["quantize", model, "--data", data, "--method", "minmax",
                            "--max-samples", "128", "--precision", tmp_path / "p.yaml",
                            "--rescue", "cle", "--rescue", "smoothquant:0.8", "-o", out],
                           capsys)
    assert code == 0, err
    assert "rescue equalize: 4 changed" in text
    assert "rescue smoothquant: 2 changed (/fc1/Gemm, /fc2/Gemm)" in text
    assert "rescue bias_correction: 6 changed" in text  # the 7 layers but /conv4/Conv
    q = onnx.load(str(out))
    reports = applied_transforms(q)
    assert [r["transform"] for r in reports] == ["equalize", "smoothquant", "bias_correction"]
    assert reports[1]["settings"]["alpha"] == 0.8  # the flag's alpha wins over the YAML's
    assert "/conv4/Conv" not in {c["layer"] for c in reports[2]["changed"]}

    # the activation scales are those of the equalized + smoothed FP32 model (minmax: max|x|
    # over the same 128 samples / 127), measured here with plain ONNX Runtime
    x = np.load(data)[:128]
    eq, _ = equalize(onnx.load(str(model)))
    sm, _ = smoothquant(eq, [{"input": x}], alpha=0.8, layers=["/fc1/Gemm", "/fc2/Gemm"])
    scales = _activation_scales(q)
    wanted = [t for t in scales if t != "input"]
    assert len([t for t in wanted if t.endswith("/smoothquant")]) == 2
    assert "/relu_1/Relu_output_0" in wanted  # between conv2 and conv3: equalized
    for t in wanted:
        sm.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = session(sm.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(wanted, sess.run(wanted, {"input": x}), strict=True))
    for t in wanted:
        np.testing.assert_allclose(scales[t], np.abs(got[t]).max() / 127.0, rtol=1e-5,
                                   err_msg=t)
    # the FP32 layer keeps its (equalized) bias; INT8 layers carry the correction
    b_eq, b_q = _biases(eq), _biases(q)
    np.testing.assert_allclose(b_q["/conv4/Conv"], b_eq["/conv4/Conv"], rtol=1e-6)
    for layer in ("/conv1/Conv", "/conv2/Conv", "/conv3/Conv", "/conv5/Conv"):
        assert not np.allclose(b_q[layer], b_eq[layer]), layer

    assert not [f for f in lint_model(q).findings if f.severity == "error"]
    rtx = pytest.importorskip("_rtx")
    layers = rtx.parse_layers(out)
    int8 = ["/conv1/Conv", "/conv2/Conv", "/conv3/Conv", "/conv5/Conv", "/fc1/Gemm",
            "/fc2/Gemm"]
    assert all(rtx.layer_precision(layers[n]) == "int8" for n in int8)
    assert rtx.layer_precision(layers["/conv4/Conv"]) == "fp32"


def test_quantize_rescue_json_keeps_stdout_a_document(demo_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    import json

    out = tmp_path / "q.onnx"
    code, text, err = _run(["quantize", demo_dir / "demo_cnn.onnx", "--data",
                            demo_dir / "data" / "calibration.npy", "--max-samples", "64",
                            "--rescue", "bias-correct", "--json", "-o", out], capsys)
    assert code == 0, err
    assert json.loads(text)["format"] == "quantkit-plan/1"
    assert "rescue bias_correction: 7 changed" in err
    assert [r["transform"] for r in applied_transforms(onnx.load(str(out)))] == [
        "bias_correction"]


BAD = [
    ("unknown", ["--rescue", "cle,magic"], None, "unknown rescue transform 'magic'"),
    ("alpha", ["--rescue", "smoothquant:2"], None, "alpha must be in (0, 1]"),
    ("no data", ["--rescue", "cle"], None, "--rescue needs --data"),
    ("scales", ["--rescue", "cle", "--scales", "S"], None, "needs --data instead of --scales"),
    ("yaml unknown", [], "rescue: [smoothquant, nope]\n", "rescue: unknown rescue transform"),
    ("yaml with scales", ["--scales", "S"], "rescue: [cle]\n",
     "rescue: in {p} needs --data instead of --scales"),
]


@pytest.mark.parametrize("label, args, yaml_text, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_rescue_exits_2_without_output(demo_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], label: str,
                                           args: list[str], yaml_text: str | None,
                                           needle: str) -> None:
    scales = demo_dir / "s.json"
    if not scales.exists():
        assert _run(["calibrate", demo_dir / "demo_cnn.onnx", "--data",
                     demo_dir / "data" / "calibration.npy", "--max-samples", "32",
                     "--scales", scales], capsys)[0] == 0
    extra = [str(scales) if a == "S" else a for a in args]
    if "--scales" not in extra and "--rescue" in extra and label != "no data":
        extra += ["--data", str(demo_dir / "data" / "calibration.npy")]
    if yaml_text is not None:
        (tmp_path / "p.yaml").write_text(yaml_text)
        extra += ["--precision", str(tmp_path / "p.yaml")]
        if "--scales" not in extra:
            extra += ["--data", str(demo_dir / "data" / "calibration.npy")]
    out = tmp_path / "q.onnx"
    code, _, err = _run(["quantize", demo_dir / "demo_cnn.onnx", *extra, "-o", out], capsys)
    assert code == 2, err
    assert needle.format(p=tmp_path / "p.yaml") in " ".join(err.split())
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("*.onnx*"))


def test_recipe_configs_and_precision_files_take_the_same_specs() -> None:
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.sweep.recipe import ConfigSpec
    from quantkit.sweep.run import _rescue_specs

    cfg = ConfigSpec.model_validate({"name": "a", "precision": {"default": "int8",
                                                                "rescue": ["smooth:0.5"]},
                                     "rescue": ["cle,smoothquant:0.8"]})
    assert isinstance(cfg.precision, PrecisionConfig)
    assert _rescue_specs(cfg, cfg.precision) == [RescueStep("equalize", {}),
                                                 RescueStep("smoothquant", {"alpha": 0.8})]
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        ConfigSpec.model_validate({"name": "b", "precision": "int8",
                                   "rescue": ["smoothquant:1.5"]})
    with pytest.raises(ValueError, match="'magic' is not one of bias_correction, equalize, "
                                         "high_bias, smoothquant"):
        ConfigSpec.model_validate({"name": "c", "precision": "int8", "rescue": ["magic"]})


def test_quantize_high_bias_runs_between_cle_and_bias_correction(
        demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        from quantkit.transforms import absorb_high_bias  # noqa: F401
    except ImportError:
        pytest.skip("high-bias absorption is not in this build")
    out = tmp_path / "q.onnx"
    code, text, err = _run(["quantize", demo_dir / "demo_cnn.onnx", "--data",
                            demo_dir / "data" / "calibration.npy", "--max-samples", "64",
                            "--rescue", "bias-correction,hba,cle", "-o", out], capsys)
    assert code == 0, err
    assert "rescue high_bias:" in text
    assert [r["transform"] for r in applied_transforms(onnx.load(str(out)))] == [
        "equalize", "high_bias", "bias_correction"]
