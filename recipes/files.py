"""Atomic writes and manifests for the prepared recipe data (``recipes/_data``).

Every file is written to a temporary name in its folder and renamed, so an interrupted
``prepare`` never leaves a truncated file behind; a folder's ``manifest.json`` records the
settings it was written with, and a folder whose manifest matches is left as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np


def save_npy(array: np.ndarray, path: Path) -> None:
    """Write ``array`` to ``path`` (``.npy``) atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def save_text(text: str, path: Path) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def up_to_date(folder: Path, settings: dict[str, Any]) -> bool:
    """Whether ``folder``'s manifest has these settings and all its files exist."""
    try:
        doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and doc.get("settings") == settings
            and all((folder / f).is_file() for f in doc.get("files", {})))


def manifest(folder: Path, settings: dict[str, Any], files: dict[str, str]) -> None:
    """Write ``folder/manifest.json``: the settings and a description of each file."""
    doc = {"settings": settings, "files": files,
           "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_text(json.dumps(doc, indent=2) + "\n", folder / "manifest.json")


__all__ = ["copy", "manifest", "save_npy", "save_text", "up_to_date"]
