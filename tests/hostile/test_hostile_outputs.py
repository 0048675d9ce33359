"""Outputs never replace anything but a regular file; OS errors are input errors (exit 2);
SIGTERM cleans up like Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _hostile_common import cli, project, refused

from quantkit._io import atomic_write, temp_prefix, write_text_atomic
from quantkit.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _calibrate(tmp_path: Path, *out: str) -> list[str]:
    model, data = project(tmp_path / "p")
    return ["calibrate", str(model), "--data", str(data), *out]


# -- special files -------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--cache", "--scales"])
def test_dev_null_output_is_refused_and_kept(tmp_path: Path, flag: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = os.stat("/dev/null")
    code, _, err = cli(_calibrate(tmp_path, flag, "/dev/null"), capsys)
    refused(code, err, "/dev/null", "character device")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_symlink_to_a_device_is_refused_and_kept(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "out.json"
    os.symlink("/dev/null", link)
    code, _, err = cli(_calibrate(tmp_path, "--scales", str(link)), capsys)
    refused(code, err, str(link), "character device", "symlink to /dev/null")
    assert os.path.islink(link) and os.readlink(link) == "/dev/null"


def test_fifo_output_is_refused_without_blocking(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "out.cache"
    os.mkfifo(fifo)
    code, _, err = cli(_calibrate(tmp_path, "--cache", str(fifo)), capsys)
    refused(code, err, str(fifo), "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_socket_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        code, _, err = cli(_calibrate(tmp_path, "--scales", str(path)), capsys)
        refused(code, err, str(path), "socket")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        sock.close()


def test_symlink_to_a_regular_file_is_written_through(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    os.symlink(target, link)
    code, _, err = cli(_calibrate(tmp_path, "--scales", str(link)), capsys)
    assert code == 0, err
    assert os.path.islink(link) and Path(os.readlink(link)) == target
    assert json.loads(target.read_text())["format"] == "quantkit-scales/1"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("kind, needle", [("dangling", "symlink to a missing file"),
                                          ("loop", "cannot be followed")])
def test_broken_symlink_output_is_refused(tmp_path: Path, kind: str, needle: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "out.json"
    if kind == "dangling":
        os.symlink(tmp_path / "nowhere.json", link)
    else:
        os.symlink(link, link)
    code, _, err = cli(_calibrate(tmp_path, "--scales", str(link)), capsys)
    refused(code, err, str(link), needle)
    assert os.path.islink(link)


@pytest.mark.parametrize("special", ["/dev/null", "fifo"])
def test_library_atomic_write_refuses_special_files(tmp_path: Path, special: str) -> None:
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "f"
        os.mkfifo(path)
    with pytest.raises(InputError, match="only replaces regular files"), \
            atomic_write(path) as fh:
        fh.write("x")
    assert not stat.S_ISREG(os.stat(path).st_mode)


def test_a_folder_as_output_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.json").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_text_atomic(tmp_path / "d.json", "x")
    assert (tmp_path / "d.json").is_dir()


# -- names ---------------------------------------------------------------------------------


def test_temp_prefix_fits_the_name_limit() -> None:
    for name in ("a.json", "x" * 200, "y" * 250, "é" * 127):
        # mkstemp adds 8 characters, atomic_write the suffix ".tmp"
        assert len(os.fsencode(temp_prefix(name))) + 8 + 4 <= 255, name


@pytest.mark.parametrize("length", [240, 250, 255])
def test_a_legal_long_output_name_works(tmp_path: Path, length: int,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    name = "s" * (length - 5) + ".json"
    code, _, err = cli(_calibrate(tmp_path, "--scales", str(tmp_path / name)), capsys)
    assert code == 0, err
    assert (tmp_path / name).is_file() and not list(tmp_path.glob(".*tmp"))


def test_a_long_quantize_output_name_works(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    out = tmp_path / ("q" * 245 + ".onnx")
    code, _, err = cli(["quantize", model, "--data", data, "-o", out], capsys)
    assert code == 0, err
    assert out.is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_name_over_255_bytes_is_an_input_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / ("n" * 300 + ".json")
    code, _, err = cli(_calibrate(tmp_path, "--scales", str(out)), capsys)
    refused(code, err, "longer than the 255")


# -- operating-system errors through the command line --------------------------------------


def _quantkit(args: list[str], *, preexec: object = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "quantkit.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=300,
                          preexec_fn=preexec, cwd=REPO)  # type: ignore[arg-type]


def _file_size_limit() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


def test_file_size_limit_is_exit_2(tmp_path: Path) -> None:
    model, data = project(tmp_path)
    out = tmp_path / "q.onnx"
    res = _quantkit(["quantize", model, "--data", data, "-o", out], preexec=_file_size_limit)
    refused(res.returncode, res.stderr, "EFBIG", "ulimit")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_disk_is_exit_2_and_leaves_nothing(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path / "p")
    with _tmpfs(tmp_path / "full", "size=64k") as full:
        filler = full / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            fh.write(b"\0" * (64 * 1024))
        before = sorted(p.name for p in full.iterdir())
        code, _, err = cli(["quantize", model, "--data", data, "-o", full / "q.onnx"], capsys)
        refused(code, err, "ENOSPC", str(full))
        assert sorted(p.name for p in full.iterdir()) == before


def test_read_only_file_system_is_exit_2(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        code, _, err = cli(_calibrate(tmp_path, "--scales", ro / "s.json"), capsys)
        refused(code, err, "EROFS", str(ro))


_AS_NOBODY = """
import os, sys
import numpy, onnx, onnxruntime, pydantic  # loaded while still root: the user cannot read /root
import quantkit.capture, quantkit.calibrators.cache, quantkit.data.npy, quantkit.cli.calibrate
import quantkit.capture.calibration, quantkit.options, quantkit.workflows  # lazily loaded
from quantkit.cli.main import main
os.setgid(65534)
os.setuid(65534)
sys.exit(main(sys.argv[1:]))
"""


def test_permission_denied_is_exit_2(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    model, data = project(tmp_path / "p")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    for p in (tmp_path, tmp_path / "p"):
        p.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
           "NUMBA_DISABLE_JIT": os.environ.get("NUMBA_DISABLE_JIT", "0")}
    res = subprocess.run([sys.executable, "-c", _AS_NOBODY, "calibrate", str(model), "--data",
                          str(data), "--scales", str(locked / "s.json")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    if "Traceback" in res.stderr and "PermissionError" in res.stderr:
        pytest.skip("the unprivileged user cannot load a lazily imported module here")
    refused(res.returncode, res.stderr, "EACCES", str(locked))


def test_a_looping_symlink_as_data_is_exit_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = project(tmp_path)
    loop = tmp_path / "loop.npy"
    os.symlink(loop, loop)
    code, _, err = cli(["calibrate", model, "--data", loop, "--scales", tmp_path / "s.json"],
                       capsys)
    refused(code, err, "loop.npy")


@pytest.mark.parametrize("kind, needle", [("long", "ENAMETOOLONG"), ("notdir", "x.npy/y.npy")])
def test_bad_input_paths_are_exit_2(tmp_path: Path, kind: str, needle: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    model, data = project(tmp_path)
    path = tmp_path / ("d" * 300 + ".npy") if kind == "long" else data / "y.npy"
    code, _, err = cli(["calibrate", model, "--data", path, "--scales", tmp_path / "s.json"],
                       capsys)
    refused(code, err, needle)
    assert not (tmp_path / "s.json").exists()


# -- SIGTERM -------------------------------------------------------------------------------

_HOLD = """
import sys, tempfile, time
from pathlib import Path
from quantkit._io import atomic_write
from quantkit.cli.main import _sigterm_as_interrupt, Terminated
out = Path(sys.argv[1])
try:
    with _sigterm_as_interrupt():
        with tempfile.TemporaryDirectory(prefix=".model.", dir=out.parent), \\
                atomic_write(out) as fh:
            fh.write("partial")
            print("ready", flush=True)
            time.sleep(60)
except Terminated:
    sys.exit(143)
"""


def test_sigterm_removes_temporary_files_and_folders(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert len(list(tmp_path.iterdir())) == 2  # the temporary file and folder
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.iterdir()) == []


def test_sigterm_of_a_blocked_command_exits_143(tmp_path: Path) -> None:
    model, data = project(tmp_path)
    fifo = tmp_path / "pre.yaml"
    os.mkfifo(fifo)  # reading it blocks until a writer comes: it never does
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "quantkit.cli.main", "calibrate", str(model),
                             "--data", str(data), "--preprocess", str(fifo), "--scales",
                             str(tmp_path / "s.json")],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        time.sleep(5)  # the command is now blocked opening the FIFO
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert "terminated" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "s.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_text_atomic_leaves_no_temp_on_error(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), atomic_write(tmp_path / "a.txt") as fh:
        fh.write("x")
        raise Boom
    write_text_atomic(tmp_path / "b.txt", "ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]
