"""TensorRT's process-wide logger, message capture and Ctrl-C handling around TensorRT calls.

Shared by the builders (:mod:`._trt_common`) and the runner (:mod:`.runner`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import types
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("quantkit.backends._trt_common")

_NO_DRIVER = "cudaError 35"  # "CUDA driver version is insufficient": no GPU driver present

# ---------------------------------------------------------------------------------------------
# logging: TensorRT keeps the FIRST logger a process registers (a later Builder/Runtime logger is
# ignored with a warning, measured on TensorRT-RTX 1.7), so there is one logger per library
# module, and a build captures its messages by pointing that logger's sink at a list.

_loggers: dict[str, Any] = {}
_lock = threading.RLock()  # one build / load at a time per process: the logger is shared


@contextlib.contextmanager
def defer_sigint() -> Iterator[None]:
    """Hold Ctrl-C during TensorRT calls and raise it once they return.

    TensorRT swallows exceptions raised in its Python callbacks (the logger), so a
    KeyboardInterrupt delivered there would be lost and the build would go on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda *_: hits.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if hits:
        raise KeyboardInterrupt


def logger_for(trt_mod: types.ModuleType) -> Any:
    """The process-wide ``ILogger`` quantkit uses with ``trt_mod``."""
    key = trt_mod.__name__
    if key not in _loggers:
        base = trt_mod.ILogger

        class _Logger(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                base.__init__(self)
                self.sink: list[tuple[int, str]] | None = None

            def log(self, severity: Any, msg: str) -> None:
                sev = int(severity)
                if self.sink is not None:
                    self.sink.append((sev, msg))
                if sev <= 1:
                    logger.log(logging.DEBUG if self.sink is not None else logging.WARNING,
                               "TensorRT: %s", msg)
                elif sev == 2:
                    logger.info("TensorRT: %s", msg)
                elif sev == 3:
                    logger.debug("TensorRT: %s", msg)

        _loggers[key] = _Logger()
    return _loggers[key]


@contextlib.contextmanager
def capturing(trt_logger: Any) -> Iterator[list[tuple[int, str]]]:
    """Collect ``(severity, message)`` of everything TensorRT logs inside the block."""
    with _lock:
        sink: list[tuple[int, str]] = []
        previous, trt_logger.sink = trt_logger.sink, sink
        try:
            yield sink
        finally:
            trt_logger.sink = previous


def error_lines(sink: list[tuple[int, str]], limit: int = 6) -> list[str]:
    """The distinct error messages of a capture.

    Lines about the missing CUDA driver (noise on a machine without a GPU) are dropped when
    there is anything else to say.
    """
    lines: list[str] = []
    for sev, msg in sink:
        text = " ".join(msg.split())
        if sev <= 1 and text not in lines:
            lines.append(text)
    real = [s for s in lines if _NO_DRIVER not in s]
    return (real or lines)[:limit]


# ---------------------------------------------------------------------------------------------
