"""Entry point of the ``quantkit`` command.

Errors: a :class:`~quantkit.errors.QuantkitError` becomes one paragraph on stderr and exit code
2 (input) or 1 (run-time); an operating-system error on a file (permission, read-only or full
file system, file-size limit, name too long, ...) is exit 2 with the path and the system's
reason; running out of memory is exit 1 with advice; anything else is a bug and says so.
``--debug`` shows tracebacks. SIGTERM is handled like Ctrl-C: temporary files and folders are
removed and the exit code is 143 (130 for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

import click

from quantkit import __version__
from quantkit._log import set_progress
from quantkit.errors import InputError, QuantkitError

_state = {"debug": False}


#: subcommand -> (module, attribute): a command's module (and what it imports: ONNX, pydantic,
#: report and sweep code) is imported only when that command runs or help lists the commands
_COMMANDS = {
    "build": ("quantkit.cli.build", "build_cmd"),
    "calibrate": ("quantkit.cli.calibrate", "calibrate_cmd"),
    "cache": ("quantkit.cli.cache", "cache_group"),
    "demo": ("quantkit.cli.demo", "demo_cmd"),
    "inspect": ("quantkit.cli.inspect", "inspect_cmd"),
    "quantize": ("quantkit.cli.quantize", "quantize_cmd"),
    "eval": ("quantkit.cli.eval", "eval_cmd"),
    "report": ("quantkit.cli.report", "report_cmd"),
    "sweep": ("quantkit.cli.sweep", "sweep_cmd"),
    "sensitivity": ("quantkit.cli.sweep", "sensitivity_cmd"),
    "autotune": ("quantkit.cli.sweep", "autotune_cmd"),
    "transform": ("quantkit.cli.transform", "transform_cmd"),  # issue 10: model transforms
    "estimate": ("quantkit.cli.estimate", "estimate_cmd"),  # issue 15: estimated latency
}


class LazyGroup(click.Group):
    """A group whose subcommands in :data:`_COMMANDS` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand's name, loaded or not."""
        return sorted(set(self.commands) | set(_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand ``cmd_name``, importing its module the first time."""
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            import importlib

            module, attr = _COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="quantkit")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (INFO level).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings and errors only.")
def cli(debug: bool, verbose: bool, quiet: bool) -> None:
    """quantkit: INT8 calibration, mixed FP16/INT8 Q/DQ models and reports for TensorRT.

    \b
    Examples:
      quantkit calibrate model.onnx --data calib.npz --cache model.cache --scales model.json
      quantkit cache show model.cache
      quantkit cache convert model.cache -o model.json
      quantkit demo -o demo-out
    """
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    set_progress(not quiet)


#: a word of an error message longer than this is a value from the input, shown shortened
_LONG_WORD = 320
#: the most an error paragraph may take (a hostile file must not flood the terminal)
_MAX_ERROR = 4000


def _shorten(word: str) -> str:
    if len(word) <= _LONG_WORD:
        return word
    return f"{word[:120]}...({len(word) - 150:,} characters not shown)...{word[-30:]}"


def _error(message: str) -> None:
    text = " ".join(_shorten(w) for w in message.split())
    if len(text) > _MAX_ERROR:
        text = f"{text[:_MAX_ERROR]} ...({len(text) - _MAX_ERROR:,} characters not shown)"
    click.echo(textwrap.fill(f"error: {text}", width=100, break_on_hyphens=False,
                             break_long_words=False), err=True)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: environment variables quantkit reads: name -> (smallest allowed value, what it sets)
_INT_ENV = {"QUANTKIT_UPDATE_THREADS": (1, "the number of threads that update calibration "
                                           "statistics")}


def check_environment(env: dict[str, str] | None = None) -> None:
    """Refuse malformed quantkit environment variables instead of silently ignoring them.

    Raises:
        InputError: a variable is set to something other than an integer in its range.
    """
    env = dict(os.environ) if env is None else env
    for name, (low, what) in _INT_ENV.items():
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or int(text) < low or int(text) > 1024:
            shown = text if len(text) <= 20 else text[:20] + "..."
            raise InputError(f"environment variable {name}={shown!r}: expected an integer from "
                             f"{low} to 1024 ({what}). Set it to such a number or unset it.")


#: errno values that describe the user's files or system, not a bug
_OS_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "the file is larger than the file-size limit allows",
    errno.ENAMETOOLONG: "a file name is too long for the file system",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it already exists",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.EIO: "input/output error",
    errno.ENXIO: "no such device or address",
    errno.ETXTBSY: "the file is busy",
    errno.EBUSY: "the device or resource is busy",
    errno.ENOTEMPTY: "the folder is not empty",
    errno.EXDEV: "the paths are on different file systems",
    errno.ESTALE: "stale network file handle",
}


def _os_error_message(err: OSError) -> str | None:
    """One paragraph for an OS error on a file, or ``None`` if it does not look like one."""
    if err.errno not in _OS_REASONS:
        return None
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    where = " -> ".join(p if len(p) <= 200 else p[:200] + "..." for p in paths)
    reason = err.strerror or _OS_REASONS[err.errno]
    hint = {
        errno.EACCES: "Check the permissions, or choose another path.",
        errno.EPERM: "Check the permissions, or choose another path.",
        errno.EROFS: "Write the output to a writable folder.",
        errno.ENOSPC: "Free some space or write the output elsewhere.",
        errno.EDQUOT: "Free some space or write the output elsewhere.",
        errno.EFBIG: "Raise the limit (ulimit -f) or write a smaller output.",
        errno.ENAMETOOLONG: "Choose a shorter file name.",
    }.get(err.errno, "Check the path and try again.")
    return (f"{where + ': ' if where else ''}{reason} ({errno.errorcode.get(err.errno, '?')}). "
            f"{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code (used by the console script)."""
    try:
        with _sigterm_as_interrupt():
            check_environment()
            code = cli.main(args=list(argv) if argv is not None else None, prog_name="quantkit",
                            standalone_mode=False)
    except click.exceptions.Exit as ex:
        return ex.exit_code
    except Terminated:
        click.echo("terminated (SIGTERM); temporary files removed", err=True)
        return 143
    except click.exceptions.Abort as ex:
        # click turns Ctrl-C (and our SIGTERM) into Abort; every output is written atomically,
        # so what exists is complete
        if isinstance(ex.__cause__, Terminated):
            click.echo("terminated (SIGTERM); temporary files removed", err=True)
            return 143
        click.echo("interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        # click turns Ctrl-C into Abort; every output is written atomically, so what exists
        # is complete
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as ex:
        ex.show()
        return ex.exit_code
    except QuantkitError as err:
        if _state["debug"]:
            raise
        _error(str(err))
        return err.exit_code
    except MemoryError:
        if _state["debug"]:
            raise
        _error("out of memory. Lower --batch-size or --max-samples, or use smaller inputs; "
               "the sizes a file or flag asks for may exceed this machine's memory.")
        return 1
    except OSError as err:
        message = _os_error_message(err)
        if message is None or _state["debug"]:
            if _state["debug"]:
                raise
            _error(f"internal error ({type(err).__name__}: {err}). This is a bug in quantkit; "
                   "re-run with --debug for the traceback and report it.")
            return 1
        _error(message)
        return 2
    except Exception as err:  # a bug: say so, keep the traceback behind --debug
        if _state["debug"]:
            raise
        _error(f"internal error ({type(err).__name__}: {err}). This is a bug in quantkit; "
               "re-run with --debug for the traceback and report it.")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
