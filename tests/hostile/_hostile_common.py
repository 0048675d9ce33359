"""Shared helpers of the hostile-input battery: a tiny project and the CLI's verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit.cli.main import main
from tests.builders.cnn import small_cnn


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the ``quantkit`` command in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, *needles: str) -> None:
    """An input error: exit 2, one ``error:`` paragraph naming the needles, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "error:" in err, err
    # warnings may come first; the error is the last paragraph
    flat = " ".join(err[err.index("error:"):].split())
    for needle in needles:
        assert needle in flat, (needle, err)


def project(folder: Path, samples: int = 8) -> tuple[Path, Path]:
    """A small CNN (input x: [N, 3, 8, 8]) and calibration data for it; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    model = small_cnn(folder / "m.onnx")
    data = folder / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((samples, 3, 8, 8))
            .astype(np.float32))
    return model, data


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``folder``: (mode, size, bytes of small regular files)."""
    import os
    import stat

    out = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        body = p.read_bytes() if stat.S_ISREG(st.st_mode) and st.st_size < 1 << 20 else b""
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, body)
    return out
