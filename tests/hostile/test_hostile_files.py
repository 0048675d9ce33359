"""Small hostile files: YAML alias bombs, oversize and non-UTF-8 YAML, byte-order marks, JSON
numbers and nesting, scales TensorRT cannot use."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from _hostile_common import cli, project, refused
from onnx import TensorProto, helper, numpy_helper

from quantkit._yaml import MAX_BYTES, load_yaml
from quantkit.errors import InputError

#: 9 ** 9 = 387 million values from 10 short lines
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


@pytest.fixture
def scales(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, Path]:
    """A model, its data and a scales JSON computed from them."""
    model, data = project(tmp_path / "p")
    out = tmp_path / "p" / "s.json"
    code, _, err = cli(["calibrate", model, "--data", data, "--scales", out], capsys)
    assert code == 0, err
    return model, data, out


# -- YAML ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["precision", "preprocess", "recipe"])
def test_alias_bombs_are_refused_fast_and_short(tmp_path: Path, which: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    args = {"precision": ["quantize", model, "--data", data, "--precision", bomb, "-o",
                          tmp_path / "q.onnx"],
            "preprocess": ["calibrate", model, "--data", data, "--preprocess", bomb,
                           "--scales", tmp_path / "s.json"],
            "recipe": ["sweep", bomb, "-o", tmp_path / "out"]}[which]
    start = time.monotonic()
    code, _, err = cli(args, capsys)
    refused(code, err, "alias bomb", str(bomb))
    assert time.monotonic() - start < 60 and len(err) < 1000
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, needle", [
    ("a: &a [1, *a]\n", "recursive"),
    ("[" * 5000 + "]" * 5000, "nested"),
    ("x: " + "[" * 150 + "]" * 150 + "\n", "levels deep"),
])
def test_recursive_and_deep_yaml_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=needle):
        load_yaml(path, "--precision")


def test_oversize_yaml_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        fh.truncate(MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(InputError, match="more than"):
        load_yaml(path, "--precision")


def test_yaml_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"default: int8\n# caf\xe9\n")
    with pytest.raises(InputError, match="not UTF-8 text.*byte 19"):
        load_yaml(path, "--precision")


def test_yaml_with_a_byte_order_mark_is_read(tmp_path: Path, scales: tuple[Path, Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model, _, table = scales
    prec = tmp_path / "p.yaml"
    prec.write_bytes(b"\xef\xbb\xbfdefault: int8\n")
    code, _, err = cli(["quantize", model, "--scales", table, "--precision", prec, "-o",
                        tmp_path / "q.onnx"], capsys)
    assert code == 0, err


def test_yaml_tags_are_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    marker = tmp_path / "pwned"
    prec = tmp_path / "p.yaml"
    prec.write_text(f"default: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, err = cli(["quantize", model, "--data", data, "--precision", prec, "-o",
                        tmp_path / "q.onnx"], capsys)
    refused(code, err, "YAML")
    assert not marker.exists()


# -- scales files --------------------------------------------------------------------------


def _json_scales(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.json"
    path.write_text('{"format": "quantkit-scales/1", "tensors": {"x": ' + body + "}}")
    return path


@pytest.mark.parametrize("body, needle", [
    ('{"scale": 1' + "0" * 5000 + "}", "5001 characters"),
    ('{"scale": 0.' + "0" * 5000 + "1}", "characters"),
    ('{"scale": ' + "[" * 3000 + "]" * 3000 + "}", "nested too deeply"),
])
def test_hostile_scales_json_is_refused(tmp_path: Path, body: str, needle: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _json_scales(tmp_path, body)
    code, _, err = cli(["cache", "show", path], capsys)
    refused(code, err, needle, str(path))
    assert len(err) < 1000


@pytest.mark.parametrize("hexval, needle", [("00000001", "subnormal"),
                                            ("7f7fffff", "overflow")])
def test_unusable_trt_cache_scales_convert_losslessly_with_a_warning(
        tmp_path: Path, hexval: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    # cache show/convert are lossless by contract; using such a scale is what is refused
    path = tmp_path / "c.cache"
    path.write_text(f"TRT-101300-EntropyCalibration2\nx: {hexval}\n")
    code, _, err = cli(["cache", "convert", path, "-o", tmp_path / "s.json"], capsys)
    assert code == 0 and needle in err and "quantize refuses it" in err
    code, _, err = cli(["cache", "convert", tmp_path / "s.json", "-o", tmp_path / "b.cache"],
                       capsys)
    assert code == 0
    assert (tmp_path / "b.cache").read_text() == path.read_text()


@pytest.mark.parametrize("entry, needle", [
    ({"scale": 1e-42}, "subnormal"), ({"scale": 1e-40}, "subnormal"),
    ({"scale": 1.4e-45}, "subnormal"), ({"amax": 1e-38}, "subnormal"),
    ({"scale": 3.0e38}, "overflow")])
def test_quantize_refuses_a_scale_that_saturates_everything(
        tmp_path: Path, scales: tuple[Path, Path, Path], entry: dict[str, float], needle: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    model, _, table = scales
    doc = json.loads(table.read_text())
    doc["tensors"]["x"] = entry
    table.write_text(json.dumps(doc))
    code, _, err = cli(["quantize", model, "--scales", table, "-o", tmp_path / "q.onnx"], capsys)
    refused(code, err, needle, "'x'")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("kind", ["json", "cache"])
def test_a_byte_order_mark_is_accepted_in_scales(tmp_path: Path, kind: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"s.{kind}"
    text = ('{"format": "quantkit-scales/1", "tensors": {"x": {"scale": 0.5}}}' if kind == "json"
            else "TRT-101300-EntropyCalibration2\nx: 3f000000\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    code, out, err = cli(["cache", "show", path], capsys)
    assert code == 0, err
    assert "x" in out and "0.5" in out


def test_inspect_flags_a_subnormal_scale_in_a_qdq_model(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    scale = numpy_helper.from_array(np.array(1e-40, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
             helper.make_node("Relu", ["dq"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code, out, err = cli(["inspect", path, "--json"], capsys)
    assert code in (0, 1), err  # findings are reported, not a crash
    findings = json.loads(out)["findings"]
    assert any(f["code"] == "QK122" and "subnormal" in f["message"] for f in findings), out


def test_a_huge_value_in_a_recipe_is_shown_short(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # the value comes back in the error (pydantic's input, a validator's repr); a 50,000
    # character value must not become a 50 kB message
    model, data = project(tmp_path)
    huge = "z" * 50_000
    body = f"configs: [{{name: a, precision: {huge}}}]\n"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nmodel: {model}\ndata: {{calibration: {{source: {data}}}}}\n"
                      + body)
    code, _, err = cli(["sweep", recipe, "-o", tmp_path / "out"], capsys)
    refused(code, err, "characters not shown")
    assert len(err) < 1000


def test_an_unknown_method_in_a_recipe_is_refused_at_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # it used to reach the calibration cache's file name (ENAMETOOLONG for a long one)
    model, data = project(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nmodel: {model}\ndata: {{calibration: {{source: {data}}}}}\n"
                      f"configs: [{{name: a, precision: int8, method: {'m' * 5000}}}]\n")
    code, _, err = cli(["sweep", recipe, "-o", tmp_path / "out"], capsys)
    refused(code, err, "configs[0].method", "unknown calibration method", "entropy")
    assert len(err) < 1000 and not (tmp_path / "out").exists()
