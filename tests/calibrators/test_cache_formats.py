"""TensorRT calibration-cache and scales-JSON I/O."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantkit.calibrators.cache import (
    ScaleTable,
    float_to_hex,
    hex_to_float,
    parse_scales_json,
    parse_trt_cache,
    read_scales,
)
from quantkit.errors import InputError


def _bits(value: float) -> str:
    # independent of quantkit: struct with an explicit big-endian float32
    return struct.pack(">f", value).hex()


LONG_NAME = "/model/encoder/layers.3/self_attn/Softmax: [batch, heads]:out " + "x" * 300

# Cache files as TensorRT 7, 8 and 10 write them (docs/tensorrt_rules.md#calibration-cache-format).
TRT7 = ("TRT-7000-EntropyCalibration2\ninput_0: 3c010a14\n"
        "(Unnamed Layer* 1) [Convolution]_output: 3d8a2f1c\n")
TRT8 = ("TRT-8601-MinMaxCalibration\nimages: 3c008081\n/backbone/conv1/Conv_output_0: 3caa54fc\n"
        "/backbone/relu/Relu_output_0: 0\n")
TRT10 = (f"TRT-101401-EntropyCalibration2\ninput: 3c010204\n{LONG_NAME}: 7f800000\n"
         "weird name: with: colons: 7b8c9d0e\nzero: 0\n")


def test_trt7_cache() -> None:
    t = parse_trt_cache(TRT7)
    assert (t.trt_version, t.algorithm) == (7000, "EntropyCalibration2")
    assert t.scales["(Unnamed Layer* 1) [Convolution]_output"] == hex_to_float("3d8a2f1c")


def test_trt8_cache_minmax_and_zero() -> None:
    t = parse_trt_cache(TRT8)
    assert (t.trt_version, t.algorithm, t.method) == (8601, "MinMaxCalibration", "minmax")
    assert t.scales["/backbone/relu/Relu_output_0"] == 0.0
    # 3caa54fc -> 0.0207925 -> amax 2.6406, the example of
    # docs/tensorrt_rules.md#calibration-cache-format
    assert t.scales["/backbone/conv1/Conv_output_0"] == pytest.approx(0.0207925, rel=5e-6)
    assert t.amaxes["/backbone/conv1/Conv_output_0"] == pytest.approx(2.6406, rel=1e-4)


def test_trt10_cache_names_with_colons_inf_and_huge() -> None:
    t = parse_trt_cache(TRT10)
    assert t.trt_version == 101401
    assert math.isinf(t.scales[LONG_NAME])
    assert t.scales["weird name: with: colons"] == pytest.approx(1.4613e36, rel=1e-3)
    assert t.to_trt_cache() == TRT10  # byte-exact rewrite


@pytest.mark.parametrize("algo", ["EntropyCalibration2", "EntropyCalibration",
                                  "MinMaxCalibration", "LegacyCalibration"])
def test_all_algorithm_names(algo: str) -> None:
    assert parse_trt_cache(f"TRT-100000-{algo}\na: 3f800000\n").algorithm == algo


@pytest.mark.parametrize("text, line", [
    ("TRT-8601-EntropyCalibration2\ngood: 3f800000\nbad line without hex\n", 3),
    ("TRT-8601-EntropyCalibration2\na: 3f80000g\n", 2),
    ("TRT-8601-EntropyCalibration2\na: 123456789\n", 2),
    ("TRT-8601-EntropyCalibration2\na: 3f800000\na: 3f800000\n", 3),
    ("not a cache\n", 1),
    ("TRT-8601-FancyCalibration\n", 1),
])
def test_malformed_cache_names_line(text: str, line: int) -> None:
    with pytest.raises(InputError, match=f"<cache>:{line}:"):
        parse_trt_cache(text)


def test_json_non_finite_as_strings_and_back() -> None:
    t = parse_trt_cache(TRT10)
    doc = json.loads(t.to_json())
    assert doc["format"] == "quantkit-scales/1"
    assert doc["tensors"][LONG_NAME] == {"amax": "inf", "scale": "inf"}
    back = parse_scales_json(t.to_json())
    assert back.to_trt_cache() == TRT10


def test_hex_encoding_matches_struct() -> None:
    for v in (0.0207925, 1.0, 1e35, 1e-40, np.float32(2.6406) / 127):
        assert float_to_hex(float(np.float32(v))) == _bits(float(np.float32(v)))
    assert float_to_hex(0.0) == "0"


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=True, allow_subnormal=True)
names = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
                min_size=1, max_size=320).filter(lambda s: s.strip() == s and s != "")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, finite32, min_size=1, max_size=8))
def test_cache_json_cache_round_trip(scales: dict[str, float]) -> None:
    table = ScaleTable(scales=scales, algorithm="EntropyCalibration2", trt_version=101300)
    text = table.to_trt_cache()
    parsed = parse_trt_cache(text)
    assert {k: _bits(v) for k, v in parsed.scales.items()} == {k: _bits(v) for k, v in
                                                               scales.items()}
    via_json = parse_scales_json(parsed.to_json())
    assert via_json.to_trt_cache() == text


def test_read_scales_detects_format(tmp_path: Path) -> None:
    (tmp_path / "a.cache").write_text(TRT8)
    table = read_scales(tmp_path / "a.cache")
    table.write(tmp_path / "a.json")
    assert read_scales(tmp_path / "a.json").to_trt_cache() == TRT8
    (tmp_path / "bad.bin").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(InputError, match="bad.bin"):
        read_scales(tmp_path / "bad.bin")
    with pytest.raises(InputError, match="no such file"):
        read_scales(tmp_path / "missing.cache")


@pytest.mark.parametrize("doc, needle", [
    ({"trt_cache": [1]}, '"trt_cache" must be an object'),
    ({"settings": "x"}, '"settings" must be an object'),
    ({"trt_cache": {"version": "ten"}}, "trt_cache.version must be an integer"),
    ({"trt_cache": {"version": True}}, "trt_cache.version must be an integer"),
    ({"tensors": {"a": {"scale": 1e300}}}, "beyond float32's range"),
    ({"tensors": {"a": {"amax": -1e39}}}, "beyond float32's range"),
])
def test_scales_json_structure_errors_are_input_errors(doc: dict, needle: str) -> None:
    from quantkit.calibrators.cache import SCALES_FORMAT, parse_scales_json
    from quantkit.errors import InputError

    full = {"format": SCALES_FORMAT, "tensors": {"a": {"scale": 0.5}}, **doc}
    with pytest.raises(InputError, match=re.escape(needle)):
        parse_scales_json(json.dumps(full), "s.json")
