"""One writer per output folder: a second run is refused naming the first; a lock left by a
killed run is recovered."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _hostile_common import cli, project, refused, snapshot

from quantkit._io import LOCK_NAME, OutputLock, temp_prefix
from quantkit.errors import InputError

REPO = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys, time
from quantkit._io import OutputLock
lock = OutputLock(sys.argv[1], name=sys.argv[2])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder() -> Iterator[object]:
    """Start a process that holds the lock of a folder; yields a function to start it."""
    procs: list[subprocess.Popen[str]] = []

    def start(folder: Path, name: str = LOCK_NAME) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), name],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_lock_in_one_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with OutputLock(tmp_path / "out", "-o"):
        with pytest.raises(InputError) as err:
            OutputLock(tmp_path / "out", "-o").acquire()
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "started" in msg
    assert not (tmp_path / "out").exists()  # created for the run, removed as it wrote nothing


def test_lock_file_is_removed_on_release(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with OutputLock(tmp_path) as lock:
        assert lock.path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_lock_of_a_killed_run_is_recovered(tmp_path: Path, holder: object) -> None:
    proc = holder(tmp_path)  # type: ignore[operator]
    with pytest.raises(InputError, match=f"pid {proc.pid}"):
        OutputLock(tmp_path).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the dead run's lock file is still there
    with OutputLock(tmp_path) as lock:
        assert f'"pid": {os.getpid()}' in lock.path.read_text()


def _recipe(folder: Path) -> Path:
    model, data = project(folder)
    np.save(folder / "labels.npy", np.zeros(8, np.int64))
    recipe = folder / "r.yaml"
    recipe.write_text(f"model: {model.name}\ndata:\n  calibration: {{source: {data.name}}}\n"
                      f"  evaluation: {{source: {data.name}, labels: labels.npy}}\n"
                      "configs:\n  - {name: fp32, precision: fp32}\n")
    return recipe


def test_a_second_sweep_into_the_same_folder_is_refused(
        tmp_path: Path, holder: object, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path / "p")
    out = tmp_path / "out"
    (out / "configs" / "fp32").mkdir(parents=True)
    (out / "configs" / ".other.partial").mkdir()  # the running sweep's staging folder
    proc = holder(out)  # type: ignore[operator]
    before = snapshot(out)
    code, _, err = cli(["sweep", recipe, "-o", out], capsys)
    refused(code, err, f"pid {proc.pid}", "another quantkit run is writing there")
    assert snapshot(out) == before


def test_sensitivity_into_a_locked_folder_is_refused(
        tmp_path: Path, holder: object, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path / "p")
    out = tmp_path / "sens"
    proc = holder(out)  # type: ignore[operator]
    code, _, err = cli(["sensitivity", model, "--data", data, "-o", out], capsys)
    refused(code, err, f"pid {proc.pid}")
    assert not (out / "sensitivity.csv").exists()


def test_autotune_onto_a_locked_output_is_refused(
        tmp_path: Path, holder: object, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path / "p")
    out = tmp_path / "p.yaml"
    proc = holder(tmp_path, temp_prefix(out.name) + "lock")  # type: ignore[operator]
    code, _, err = cli(["autotune", model, "--data", data, "--max-accuracy-drop", "1", "-o",
                        out], capsys)
    refused(code, err, f"pid {proc.pid}")
    assert not out.exists()


def test_demo_into_a_locked_folder_is_refused(tmp_path: Path, holder: object) -> None:
    from quantkit.demo import run_demo

    proc = holder(tmp_path / "demo")  # type: ignore[operator]
    with pytest.raises(InputError, match=f"pid {proc.pid}"):
        run_demo(tmp_path / "demo")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [LOCK_NAME]
