"""Atomic, non-destructive file output.

Every file quantkit writes goes through :func:`atomic_write`: the content is written to a
temporary file in the destination folder, flushed and fsync'ed, then renamed over the target
with :func:`os.replace`. A run that fails midway leaves no partial output behind.

Only a regular file (or a missing path) is ever replaced. An output path that is a device,
FIFO, socket or a symlink to one is refused (``/dev/null`` and ``/dev/stdout`` stay what they
are); a symlink to a regular file is written through: its target is replaced atomically and the
link is kept. Temporary names are shortened so they fit the file system's 255-byte name limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from quantkit.errors import InputError

_UMASK = os.umask(0o022)  # read the process umask once (setting it back right away)
os.umask(_UMASK)


#: longest file name (bytes) the usual file systems accept
NAME_MAX = 255


def temp_prefix(name: str) -> str:
    """A prefix for a temporary file or folder next to ``name`` that keeps the name short.

    ``tempfile`` appends 8 random characters and the caller a suffix; the result stays within
    :data:`NAME_MAX` even for a legal 255-byte output name.
    """
    if len(os.fsencode(name)) <= 200:
        return f".{name}."
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    short = os.fsencode(name)[:150].decode("utf-8", "ignore")
    return f".{short}.{digest}."


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def resolve_output(output: str | os.PathLike[str], flag: str = "output") -> Path:
    """The file an output actually replaces: ``output`` itself, or a symlink's final target.

    Raises:
        InputError: ``output`` is (or links to) a device, FIFO, socket or folder, or is a
            dangling or looping symlink.
    """
    out = Path(output)
    try:
        lst = os.lstat(out)
    except FileNotFoundError:
        return out
    except OSError as err:
        raise InputError(f"{flag} {out}: cannot check the output path: "
                         f"{err.strerror or err}.") from err
    target = out
    if stat.S_ISLNK(lst.st_mode):
        try:
            st = os.stat(out)
        except FileNotFoundError:
            raise InputError(f"{flag} {out}: is a symlink to a missing file "
                             f"({os.readlink(out)}); remove the link or give another path.") \
                from None
        except OSError as err:
            raise InputError(f"{flag} {out}: is a symlink that cannot be followed "
                             f"({err.strerror or err}); remove it or give another path.") \
                from err
        target = Path(os.path.realpath(out))
        mode, via = st.st_mode, f" (a symlink to {target})"
    else:
        mode, via = lst.st_mode, ""
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{flag} {out}: is {_kind(mode)}{via}; quantkit only replaces regular files, so it "
            "never turns a device, pipe or folder into a file. Give a path to a regular file.")
    return target


def check_output_path(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None,
                      flag: str = "-o") -> Path:
    """Validate an output path before any work starts.

    Refuses an output that is one of the inputs, an output whose folder does not exist, and
    an output that is not a regular file (see :func:`resolve_output`).
    """
    out = Path(output)
    if len(os.fsencode(out.name)) > NAME_MAX:
        raise InputError(f"{flag} {str(out)[:120]}...: the file name is "
                         f"{len(os.fsencode(out.name))} bytes, longer than the {NAME_MAX} the "
                         "file system allows. Choose a shorter name.")
    for inp in inputs:
        if inp is None:
            continue
        with contextlib.suppress(OSError):
            if Path(inp).exists() and out.exists() and os.path.samefile(inp, out):
                raise InputError(
                    f"{flag} {out}: the output is the same file as the input {inp}; "
                    "quantkit never overwrites its inputs. Choose another output path."
                )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            f"{flag} {out}: the folder {parent} does not exist. Create it first or choose "
            "another output path."
        )
    if out.is_dir():
        raise InputError(f"{flag} {out}: is a folder; give a file path.")
    resolve_output(out, flag)
    return out


@contextlib.contextmanager
def naming_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an :class:`OSError` that names no file, or a temporary one, with ``path``.

    ``write()`` on a full disk (ENOSPC) or past the file-size limit (EFBIG) names no file;
    the command line reports the destination instead.
    """
    prefix = temp_prefix(Path(path).name)
    try:
        yield
    except OSError as err:
        named = str(err.filename) if err.filename is not None else ""
        if err.errno is None or (named and not any(part.startswith(prefix)
                                                   for part in Path(named).parts)):
            raise  # an error about another file keeps its name
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w",
                 encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success move it over ``path`` atomically.

    A symlink to a regular file is written through (its target is replaced, the link kept).

    Args:
        path: the final destination.
        mode: ``"w"`` for text or ``"wb"`` for bytes.
        encoding: text encoding (ignored in binary mode).

    Raises:
        InputError: ``path`` is a device, FIFO, socket, folder or a symlink to one.
    """
    dest = resolve_output(path)
    with naming_errors(dest), _atomic(dest, mode, encoding) as fh:
        yield fh


@contextlib.contextmanager
def _atomic(dest: Path, mode: str, encoding: str | None) -> Iterator[IO[Any]]:
    folder = dest.parent if str(dest.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest.name), suffix=".tmp", dir=folder)
    try:
        # mkstemp creates 0600 files; outputs get the usual permissions (0666 minus the umask)
        os.chmod(tmp, 0o666 & ~_UMASK)
        if "b" in mode:
            fh: IO[Any] = os.fdopen(fd, mode)
        else:
            fh = os.fdopen(fd, mode, encoding=encoding, newline="")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


# -- one writer per output folder -----------------------------------------------------------

#: name of the lock file an output folder's writer holds
LOCK_NAME = ".quantkit.lock"


class OutputLock:
    """An exclusive lock on an output folder (sweeps, sensitivity, autotune, demo).

    The lock is ``flock`` on a file in the folder holding the holder's pid, host, start time
    and command. The kernel drops an ``flock`` when its process dies, so a lock left by a
    killed run (``kill -9``, power loss) is recovered by the next run without guessing from
    pids; the recorded holder only serves the message a refused second writer gets.

    Args:
        folder: the output folder (created if missing).
        what: how errors name the folder, e.g. ``"-o out/"``.
        name: the lock file's name inside ``folder``.

    Raises:
        InputError: on entering, another live process holds the lock; the message names it.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "output folder",
                 name: str = LOCK_NAME) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`InputError` naming the live holder."""
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked
            return
        import json
        import socket
        import sys
        import time

        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise InputError(
                    f"{self.what} {self.folder}: another quantkit run is writing there "
                    f"({holder}). Wait for it to finish, stop it, or choose another output "
                    "folder.") from None
            except OSError as err:  # no flock on this file system (some network mounts)
                os.close(fd)
                logging.getLogger(__name__).warning(
                    "%s: cannot lock %s (%s); running without the one-writer check",
                    self.folder, self.path, err.strerror or err)
                return
            except BaseException:
                os.close(fd)
                raise
            # the previous holder may have removed the file between our open and flock:
            # only the lock on the file that is still at the path counts
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = _read_holder(fd, raw=True)
            if stale:
                logging.getLogger(__name__).info(
                    "%s: recovered the lock of a run that ended without releasing it (%s)",
                    self.folder, stale)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "command": " ".join(sys.argv[:4])[:200]}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            self._fd = fd
            return
        raise InputError(f"{self.what} {self.folder}: could not take the lock {self.path} "
                         "(it keeps being replaced). Check for other quantkit runs.")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: a waiting opener retries on a new file
        os.close(self._fd)
        self._fd = None
        if self._created:  # a run that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                self.folder.rmdir()


def _read_holder(fd: int, raw: bool = False) -> str:
    """Describe the process recorded in a lock file (pid, host, start time)."""
    import json

    try:
        data = os.pread(fd, 4096, 0)
        rec = json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, ValueError):
        rec = None
    if not isinstance(rec, dict):
        return "" if raw else "holder unknown"
    text = (f"pid {rec.get('pid')!s:.12} on host {rec.get('host')!s:.64}, started "
            f"{rec.get('started_utc')!s:.32}")
    if rec.get("command"):
        text += f": {rec.get('command')!s:.200}"
    return text
