"""`quantkit cache show` / `cache convert`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantkit.cli.main import main

CACHE = ("TRT-8601-EntropyCalibration2\ninput: 3c010204\nname: with: colons: 3caa54fc\n"
         "dead: 0\nbig: 7b8c9d0e\nnever: 7f800000\n")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_show_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.cache").write_text(CACHE)
    code, out, _ = run(["cache", "show", str(tmp_path / "c.cache")], capsys)
    assert code == 0 and "TRT-8601-EntropyCalibration2" in out and "5 tensors" in out
    assert "3caa54fc" in out and "name: with: colons" in out
    code, out, _ = run(["cache", "show", str(tmp_path / "c.cache"), "--json"], capsys)
    doc = json.loads(out)
    assert doc["tensors"]["never"] == {"amax": "inf", "scale": "inf"}
    assert doc["tensors"]["dead"] == {"amax": 0.0, "scale": 0.0}


def test_convert_round_trip_is_lossless(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.cache").write_text(CACHE)
    assert run(["cache", "convert", str(tmp_path / "c.cache"), "-o",
                str(tmp_path / "c.json")], capsys)[0] == 0
    assert run(["cache", "convert", str(tmp_path / "c.json"), "-o",
                str(tmp_path / "back.cache")], capsys)[0] == 0
    assert (tmp_path / "back.cache").read_text() == CACHE


@pytest.mark.parametrize("content, needle", [
    ("TRT-8601-EntropyCalibration2\ninput: 3c010204\nbroken\n", "c.cache:3: malformed line"),
    ("hello\n", "neither a TensorRT calibration cache"),
    ('{"format": "other"}', "not a quantkit scales file"),
    ('{"format": "quantkit-scales/1", "tensors": {"a": {"scale": "big"}}}', "tensors['a']"),
])
def test_bad_cache_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                         needle: str) -> None:
    (tmp_path / "c.cache").write_text(content)
    for args in (["cache", "show", str(tmp_path / "c.cache")],
                 ["cache", "convert", str(tmp_path / "c.cache"), "-o", str(tmp_path / "o.json")]):
        code, _, err = run(args, capsys)
        assert code == 2 and needle in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "o.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cache"]


def test_convert_refuses_to_overwrite_input(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.cache").write_text(CACHE)
    code, _, err = run(["cache", "convert", str(tmp_path / "c.cache"), "-o",
                        str(tmp_path / "c.cache")], capsys)
    assert code == 2 and "same file as the input" in err
    assert (tmp_path / "c.cache").read_text() == CACHE
