"""Crash safety and resumption of sweeps: staging folders, atomic commits, fingerprints.

See :mod:`quantkit.sweep.run` for the guarantees; this module holds the mechanics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

from quantkit._io import write_text_atomic
from quantkit.errors import InputError
from quantkit.sweep.recipe import ConfigSpec, Recipe

logger = logging.getLogger("quantkit.sweep.run")  # messages belong to the sweep


def stage_dir(out: Path, name: str) -> Path:
    return out / "configs" / f".{name}.partial"


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (the renames into it) to disk; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(stage: Path, final: Path) -> None:
    """Rename the complete staging folder to ``final``, replacing an older one (``--force``).

    An existing folder is first renamed aside (``.<name>.old-*``) and removed after the new one
    is in place: a kill in between leaves no ``final`` folder, so the config runs again.
    """
    old: Path | None = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(stage, final)
    fsync_dir(final.parent)
    if old is not None:
        remove_tree(old)


def repoint_sidecar(sidecar: Path, staged: Path, final: Path) -> None:
    """Point the engine sidecar's ``model`` at the final path (it names the staged one).

    Done before the folder is renamed, so the committed sidecar is right from the start.
    """
    try:
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and doc.get("model") == str(staged):
        doc["model"] = str(final)
        write_text_atomic(sidecar, json.dumps(doc, indent=2) + "\n")


def clean_stale(out: Path) -> None:
    """Remove staging / replaced config folders left behind by a killed sweep."""
    configs = out / "configs"
    if not configs.is_dir():
        return
    for entry in configs.iterdir():
        if entry.name.startswith(".") and (entry.name.endswith(".partial")
                                           or ".old-" in entry.name):
            logger.info("removing %s left by an interrupted sweep", entry)
            remove_tree(entry)


def fingerprint(recipe: Recipe, config: ConfigSpec) -> str:
    """A digest of everything in the recipe that a config's result depends on.

    A resumed sweep reuses a finished config only when it was run from the same definition:
    editing the config, the model path, the data, the calibration defaults, the build or the
    latency settings makes it run again.
    """
    import hashlib

    doc = {"config": config.model_dump(mode="json"),
           "recipe": recipe.model_dump(mode="json", exclude={"configs", "name", "report"}),
           "inputs": input_identity(recipe)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def input_identity(recipe: Recipe) -> dict[str, Any]:
    """Size and mtime of the model and of every data/label file (folder listings hashed).

    Replacing a file behind the same path makes the configs that read it run again.
    """
    ids: dict[str, Any] = {"model": _identity(recipe.path(recipe.model))}
    for which in ("calibration", "evaluation"):
        spec = getattr(recipe.data, which)
        if spec is not None:
            ids[which] = _identity(recipe.source(spec.source))
            if spec.labels:
                ids[f"{which}_labels"] = _identity(recipe.path(spec.labels))
    return ids


#: data identities of files already digested in this process, keyed by what the kernel changes
#: on every write (ctime cannot be set by cp -p / rsync -a), so each file is hashed once a sweep
_IDENTITIES: dict[tuple[str, int, int, int, int], dict[str, Any]] = {}


def _identity(source: Any) -> dict[str, Any]:
    from quantkit.capture.checkpoint import data_identity

    try:
        st = os.stat(source)
    except (OSError, TypeError, ValueError):
        return data_identity(source)
    if not stat.S_ISREG(st.st_mode):  # folders: a file inside may change without the folder
        return data_identity(source)
    key = (str(Path(source).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _IDENTITIES:
        if len(_IDENTITIES) > 256:
            _IDENTITIES.clear()
        _IDENTITIES[key] = data_identity(source)
    return dict(_IDENTITIES[key])


def completed(out: Path, name: str, fingerprint: str | None = None) -> dict[str, Any] | None:
    """The row of a config that finished in an earlier run, or ``None`` to run it."""
    result_file = out / "configs" / name / "result.json"
    try:
        doc = json.loads(result_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("%s: unreadable (%s); the config runs again", result_file, err)
        return None
    if not isinstance(doc, dict) or doc.get("config") != name:
        logger.warning("%s: not a result of config %s; the config runs again", result_file, name)
        return None
    recorded = doc.pop("fingerprint", None)
    if fingerprint is not None and recorded is not None and recorded != fingerprint:
        logger.warning("%s: the recipe's definition of %s changed since it ran; it runs again",
                       result_file, name)
        return None
    doc.pop("calibration", None)
    return doc


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_inputs_outside_outputs(recipe: Recipe, recipe_path: Path, out: Path) -> None:
    """Refuse an output folder where the sweep would overwrite one of the recipe's inputs."""
    inputs = [("model", recipe.model)]
    for which in ("calibration", "evaluation"):
        spec = getattr(recipe.data, which)
        if spec is not None:
            inputs.append((f"data.{which}.source", spec.source))
            if spec.labels:
                inputs.append((f"data.{which}.labels", spec.labels))
    for i, cfg in enumerate(recipe.configs):
        if cfg.precision_file:
            inputs.append((f"configs[{i}].precision_file", cfg.precision_file))
    owned = [out / n for n in ("results.csv", "report.html", "summary.md", "environment.json",
                               "autotune.json", "sensitivity.csv")]
    trees = [out / "configs", out / "calibration"]
    root = out.resolve()
    for field_name, value in inputs:
        if value.startswith("hf:"):
            continue
        path = recipe.path(value).resolve()
        clash = any(same_file(path, o) for o in owned) or any(
            path == t.resolve() or t.resolve() in path.parents for t in trees)
        if clash or (path.parent == root and path.name == "recipe.yaml"
                     and not same_file(path, recipe_path)):
            raise InputError(
                f"-o {out}: the recipe's {field_name} ({path}) is a file the sweep writes "
                "there; quantkit never overwrites its inputs. Choose another output folder.")
