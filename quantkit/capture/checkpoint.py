"""Resumable calibration: the calibrator's mergeable state saved every N batches.

A checkpoint is an ``.npz`` file (written atomically, read with ``allow_pickle=False``) holding

* ``meta.json``: format tag, the run's fingerprint, batches and samples done, the digest of the
  first batch, and the calibrator state with every array replaced by a member name;
* one member per array of the calibrator state (histogram counts).

Resuming restores the state, reads and discards the batches already done (without running the
model) and goes on; histograms are integer counts and every tensor is updated in the same batch
order, so the scales are bit-identical to an uninterrupted run. A checkpoint whose fingerprint
(model bytes, data identity, method and settings, batch size, sample limit, seed, data options)
or first batch differs from the current run is refused with an error saying what differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantkit._io import write_bytes_atomic
from quantkit.calibrators.base import Calibrator
from quantkit.errors import InputError

logger = logging.getLogger(__name__)

FORMAT = "quantkit-calibration-checkpoint/1"
_META = "meta.json"


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_identity(data: Any) -> dict[str, Any]:
    """What identifies a data argument: a file's size and mtime, a folder's file listing."""
    if isinstance(data, str | os.PathLike) and Path(data).exists():
        p = Path(data).resolve()
        if p.is_file():
            st = p.stat()
            return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        listing = hashlib.sha256()
        count = 0
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            st = f.stat()
            listing.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
        return {"path": str(p), "files": count, "listing_sha256": listing.hexdigest()}
    if isinstance(data, str | os.PathLike):
        return {"source": str(data)}  # hf:NAME... (the first batch's digest checks content)
    return {"source": type(data).__name__}


def batch_digest(batch: Mapping[str, np.ndarray]) -> str:
    """sha256 over a batch's input names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(batch):
        arr = np.ascontiguousarray(batch[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass
class Progress:
    """A restored checkpoint: the state and where the run stopped."""

    calibrator: Calibrator
    batches: int
    samples: int
    first_batch: str | None


class Checkpoint:
    """Saves and restores a calibration run's progress in ``path``.

    Args:
        path: the checkpoint file.
        fingerprint: JSON-serialisable description of the run; a checkpoint is only resumed
            by a run with the same fingerprint.
        every: save after every ``every`` batches.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any],
                 every: int = 10) -> None:
        if every < 1:
            raise InputError(f"--checkpoint-every {every}: must be a positive integer.")
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), sort_keys=True))
        self.every = every
        self.first_batch: str | None = None

    # -- writing ----------------------------------------------------------------------------
    def save(self, calibrator: Calibrator, batches: int, samples: int) -> None:
        """Write the state after ``batches`` complete batches (atomically)."""
        arrays: dict[str, np.ndarray] = {}
        state = _extract_arrays(calibrator.state(), arrays)
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "batches": batches,
                "samples": samples, "first_batch_sha256": self.first_batch, "state": state}
        # not sort_keys: the tensors' first-seen order is part of the state
        members = {_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}
        members.update(arrays)
        buf = io.BytesIO()
        np.savez(buf, **members)  # type: ignore[arg-type]
        write_bytes_atomic(self.path, buf.getvalue())
        logger.debug("checkpoint %s: %d batches, %d samples", self.path, batches, samples)

    def remove(self) -> None:
        """Delete the checkpoint (the run finished and its outputs are written).

        Also deletes temporary files of saves that a kill -9 cut short.
        """
        self.path.unlink(missing_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------
    def load(self) -> Progress | None:
        """The saved progress, ``None`` if there is no checkpoint file yet.

        Raises:
            InputError: the file is not a quantkit checkpoint, or it was made by a run with
                different inputs or settings.
        """
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                meta = json.loads(bytes(npz[_META]).decode())
                arrays = {k: npz[k] for k in npz.files if k != _META}
        except (OSError, ValueError, KeyError, UnicodeDecodeError, EOFError) as err:
            raise InputError(
                f"--checkpoint {self.path}: not a readable quantkit checkpoint ({err}). Delete "
                "it to start over, or give another path."
            ) from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"--checkpoint {self.path}: not a quantkit calibration checkpoint "
                             f"(format {meta.get('format') if isinstance(meta, dict) else '?'}).")
        saved = meta.get("fingerprint", {})
        if saved != self.fingerprint:
            diffs = sorted(k for k in set(saved) | set(self.fingerprint)
                           if saved.get(k) != self.fingerprint.get(k))
            detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {self.fingerprint.get(k)!r}"
                               for k in diffs[:4])
            raise InputError(
                f"--checkpoint {self.path} was made by a different run ({detail}). Resume with "
                "the same model, data and settings, or delete the checkpoint to start over."
            )
        try:
            calibrator = Calibrator.from_state(_restore_arrays(meta["state"], arrays))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"--checkpoint {self.path}: corrupt calibrator state ({err}). "
                             "Delete it to start over.") from err
        self.first_batch = meta.get("first_batch_sha256")
        return Progress(calibrator, int(meta["batches"]), int(meta["samples"]), self.first_batch)

    def check_first_batch(self, digest: str) -> None:
        """Record the first batch's digest, or compare it with the checkpoint's."""
        if self.first_batch is None:
            self.first_batch = digest
        elif self.first_batch != digest:
            raise InputError(
                f"--checkpoint {self.path}: the data changed since the checkpoint was written "
                "(its first batch differs). Delete the checkpoint to start over."
            )


def _extract_arrays(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, Mapping):
        return {str(k): _extract_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_extract_arrays(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _restore_arrays(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _restore_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_arrays(v, arrays) for v in value]
    return value
