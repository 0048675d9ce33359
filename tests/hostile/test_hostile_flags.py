"""Every numeric flag and environment variable is validated (range, NaN, type): exit 2 with a
message naming it, before any work or output."""

from __future__ import annotations

from pathlib import Path

import pytest
from _hostile_common import cli, project, refused

BAD_FLAGS = [
    ("calibrate", "--batch-size", "0"),
    ("calibrate", "--batch-size", "-5"),
    ("calibrate", "--batch-size", "1000000000000"),
    ("calibrate", "--batch-size", "abc"),
    ("calibrate", "--max-samples", "0"),
    ("calibrate", "--max-samples", "-1"),
    ("calibrate", "--seed", "-1"),
    ("calibrate", "--seed", "1099511627776"),
    ("calibrate", "--seed", "1.5"),
    ("calibrate", "--percentile", "nan"),
    ("calibrate", "--percentile", "inf"),
    ("calibrate", "--checkpoint-every", "0"),
    ("calibrate", "--shards", "0"),
    ("calibrate", "--trt-version", "10.200.0"),
    ("calibrate", "--trt-version", "999999999"),
    ("calibrate", "--trt-version", "0"),
    ("calibrate", "--trt-version", "ten"),
    ("autotune", "--max-accuracy-drop", "nan"),
    ("autotune", "--max-accuracy-drop", "inf"),
    ("autotune", "--max-accuracy-drop", "-1"),
    ("autotune", "--max-evaluations", "-1"),
    ("autotune", "--max-evaluations", "0"),
    ("sweep", "--tolerance", "nan"),
    ("report", "--tolerance", "-inf"),
    ("transform", "--alpha", "nan"),
    ("eval", "--iterations", "-1"),  # 0 is valid: no latency measurement
    ("build", "--workspace", "0"),
]


def _args(command: str, tmp_path: Path) -> list[str]:
    model, data = project(tmp_path)
    out = tmp_path / "out"
    return {
        "calibrate": ["calibrate", model, "--data", data, "--scales", out],
        "autotune": ["autotune", model, "--data", data, "--max-accuracy-drop", "1", "-o", out],
        "sweep": ["sweep", tmp_path / "r.yaml", "-o", out],
        "report": ["report", tmp_path, "-o", out],
        "transform": ["transform", model, "--smoothquant", "-o", out],
        "eval": ["eval", model, "--data", data],
        "build": ["build", model, "-o", out],
    }[command]


@pytest.mark.parametrize("command, flag, value", BAD_FLAGS,
                         ids=[f"{c}{f}={v}" for c, f, v in BAD_FLAGS])
def test_bad_flag_values_exit_2(tmp_path: Path, command: str, flag: str, value: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_args(command, tmp_path), flag, value]
    if flag == "--checkpoint-every":  # only read with a checkpoint
        args += ["--checkpoint", str(tmp_path / "ck.npz")]
    if flag in ("--max-accuracy-drop",):
        i = args.index(flag)
        del args[i:i + 2]
        args += [flag, value]
    code, _, err = cli(args, capsys)
    refused(code, err, flag)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1e3", "5000", "٣"])
def test_bad_update_threads_exit_2(tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QUANTKIT_UPDATE_THREADS", value)
    code, _, err = cli(_args("calibrate", tmp_path), capsys)
    refused(code, err, "QUANTKIT_UPDATE_THREADS", "from 1 to 1024")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["", "1", "3"])
def test_good_update_threads_are_accepted(tmp_path: Path, value: str,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QUANTKIT_UPDATE_THREADS", value)
    code, _, err = cli(_args("calibrate", tmp_path), capsys)
    assert code == 0, err


def test_bounds_are_inclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_args("calibrate", tmp_path), "--max-samples", "8", "--seed", "0",
            "--batch-size", "1000000"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
