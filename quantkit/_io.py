"""Atomic, non-destructive file output.

Every file quantkit writes goes through :func:`atomic_write`: the content is written to a
temporary file in the destination folder, flushed and fsync'ed, then renamed over the target
with :func:`os.replace`. A run that fails midway leaves no partial output behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from quantkit.errors import InputError

_UMASK = os.umask(0o022)  # read the process umask once (setting it back right away)
os.umask(_UMASK)


def check_output_path(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None,
                      flag: str = "-o") -> Path:
    """Validate an output path before any work starts.

    Refuses an output that is one of the inputs and an output whose folder does not exist.
    """
    out = Path(output)
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
    return out


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w",
                 encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success move it over ``path`` atomically.

    Args:
        path: the final destination.
        mode: ``"w"`` for text or ``"wb"`` for bytes.
        encoding: text encoding (ignored in binary mode).
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 minus the umask)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
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
