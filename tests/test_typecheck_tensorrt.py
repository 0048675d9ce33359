"""Type-check the TensorRT-facing code against `tensorrt-stubs` (PyPI) with mypy --strict.

The stubs package installs `tensorrt/` and `tensorrt_bindings/` .pyi files without a
`py.typed` marker (so mypy would silently treat `tensorrt` as untyped) and with a few
generated signatures that are not valid Python (a parameter named `in`, a required parameter
after defaulted ones). This test copies them into a stub folder, repairs only those syntax
errors, and runs mypy with that folder on MYPYPATH, so the stubs' real types are checked.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ["quantkit/calibrators/tensorrt.py", "quantkit/calibrators/_trt_feed.py",
         "quantkit/calibrators/device.py", "quantkit/backends"]


def _stub_dirs() -> list[Path]:
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    site = Path(next(iter(spec.submodule_search_locations))).parent
    dirs = [site / "tensorrt", site / "tensorrt_bindings"]
    if not all((d / "__init__.pyi").exists() for d in dirs):
        pytest.skip("tensorrt-stubs layout not recognised")
    return dirs


def _repair_line(line: str) -> str:
    line = re.sub(r"(?<=[(,\s])in(?=\s*:)", "in_", line)
    m = re.match(r"(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not m:
        return line
    params, seen_default = [], False
    for p in re.split(r",\s*(?![^\[]*\])", m.group(2)):
        if "=" in p:
            seen_default = True
        elif seen_default and ":" in p and not p.strip().startswith("*"):
            p = p + " = ..."
        params.append(p)
    return m.group(1) + ", ".join(params) + m.group(3)


def _repair(text: str) -> tuple[str, int]:
    lines = text.splitlines()
    fixed = 0
    for _ in range(1000):
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines) + "\n", fixed
        except SyntaxError as err:
            assert err.lineno is not None
            new = _repair_line(lines[err.lineno - 1])
            if new == lines[err.lineno - 1]:
                raise
            lines[err.lineno - 1] = new
            fixed += 1
    raise AssertionError("too many syntax errors in the stubs")


def test_tensorrt_code_type_checks_against_tensorrt_stubs(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    for src in _stub_dirs():
        dest = tmp_path / "stubs" / src.name
        dest.mkdir(parents=True)
        for pyi in src.glob("*.pyi"):
            text, _ = _repair(pyi.read_text(encoding="utf-8"))
            (dest / pyi.name).write_text(text, encoding="utf-8")
    env = dict(os.environ, MYPYPATH=str(tmp_path / "stubs"))
    cache = tmp_path / "mypy_cache"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(cache), *FILES],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    # the generated stubs have errors of their own (e.g. a class attribute named `bool`);
    # only findings in quantkit's files count
    ours = [ln for ln in proc.stdout.splitlines()
            if ": error:" in ln and ln.startswith("quantkit")]
    assert not ours, "\n".join(ours)
    assert "source files" in proc.stdout, proc.stdout + proc.stderr
    # the stubs really were used: a deliberate misuse of the TensorRT API must be caught
    bad = tmp_path / "misuse.py"
    bad.write_text("import tensorrt as trt\n\ndef f(b: trt.Builder) -> int:\n"
                   "    return b.create_network('strongly typed')\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
                           str(bad)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    misuse = [ln for ln in proc.stdout.splitlines() if ln.startswith("misuse.py")]
    assert any("create_network" in ln for ln in misuse), proc.stdout
    shutil.rmtree(cache, ignore_errors=True)
