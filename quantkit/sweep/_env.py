"""Things a sweep records besides its results: environment.json and calibration warnings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantkit.errors import QuantkitError
from quantkit.sweep.recipe import Recipe


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def warnings_of(name: str) -> Iterator[list[str]]:
    """Collect the warnings logger ``name`` (and its children) logs inside the block."""
    log = logging.getLogger(name)
    handler = _Collect()
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)


def environment(recipe: Recipe, path: Path) -> dict[str, Any]:
    """environment.json: versions, backend, device, the recipe, the model, the time (UTC)."""
    import onnxruntime

    from quantkit.backends.onnxruntime import OrtRunner
    from quantkit.evaluate.run import environment as base

    env = base(OrtRunner(recipe.path(recipe.model)).describe())
    env.update({"onnxruntime": onnxruntime.__version__, "recipe": str(path),
                "model": str(recipe.path(recipe.model)),
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    try:
        from quantkit.backends import get_backend

        rtx = get_backend("tensorrt-rtx")
        env["tensorrt_rtx"] = rtx.version() if rtx.available() else None
    except QuantkitError:
        env["tensorrt_rtx"] = None
    return env
