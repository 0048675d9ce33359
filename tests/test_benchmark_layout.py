"""The benchmarks' layout: every quoted command names a module that exists, and the harness.

``benchmarks/README.md`` and ``benchmarks/RESULTS.md`` quote the commands that produced each
figure (``python -m benchmarks.<study>.<script> ...``); a study moved or renamed without its
commands leaves readers with a command that fails. The shared harness's child-process runner
is exercised for real on a tiny worker module written here.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import _harness as harness

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python3? -m (benchmarks(?:\.\w+)+)")


def _quoted_modules() -> set[str]:
    found: set[str] = set()
    for doc in ("benchmarks/README.md", "benchmarks/RESULTS.md", "README.md"):
        found |= set(COMMAND.findall((ROOT / doc).read_text(encoding="utf-8")))
    return found


def test_quoted_benchmark_commands_name_existing_modules() -> None:
    modules = _quoted_modules()
    assert len(modules) >= 10  # every study is quoted somewhere
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"commands quote modules that do not exist: {missing}"


def test_no_study_file_left_flat_in_benchmarks() -> None:
    flat = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                  if p.name not in ("__init__.py", "_harness.py"))
    assert not flat, f"studies belong in their own folder: {flat}"


def test_a_study_command_runs_from_the_repository_root() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.calibration.run", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--only" in out.stdout


def test_run_worker_collects_the_childs_result_and_failure(tmp_path: Path) -> None:
    pkg = tmp_path / "qk_bench_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "work.py").write_text(textwrap.dedent('''
        import argparse
        from benchmarks._harness import serve

        def double(p):
            if p["x"] < 0:
                raise ValueError("negative x")
            return {"y": 2 * p["x"], "time_s": 0.0}

        ap = argparse.ArgumentParser()
        for flag in ("--worker", "--params", "--result"):
            ap.add_argument(flag)
        a = ap.parse_args()
        serve({"double": double}, a.worker, a.params, a.result)
    '''))
    env = {"PYTHONPATH": str(tmp_path)}
    ok = harness.run_worker("qk_bench_probe.work", "double", {"x": 21},
                            result=tmp_path / "r.json", log_file=tmp_path / "logs" / "ok.log",
                            cwd=tmp_path, env_extra=env, keep_pythonpath=True, timeout=120)
    assert ok["ok"] and ok["y"] == 42 and ok["returncode"] == 0 and not ok["timed_out"]
    assert ok["peak_rss_mb"] > 1 and ok["cpu_s"] > 0 and len(ok["loadavg_1min"]) == 2
    bad = harness.run_worker("qk_bench_probe.work", "double", {"x": -1},
                             result=tmp_path / "r.json", log_file=tmp_path / "logs" / "bad.log",
                             cwd=tmp_path, env_extra=env, keep_pythonpath=True, timeout=120)
    assert not bad["ok"] and bad["returncode"] != 0
    assert bad["error"] == "ValueError: negative x"


@pytest.mark.parametrize(("header", "rows", "want"), [
    (["a", "b"], [[1, "x"]], ["| a | b |", "|---|---|", "| 1 | x |"]),
    (["only"], [], ["| only |", "|---|"]),
])
def test_markdown_table(header: list[str], rows: list[list[object]], want: list[str]) -> None:
    assert harness.markdown_table(header, rows) == want
