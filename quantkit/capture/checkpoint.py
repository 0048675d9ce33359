"""Resumable calibration: the calibrator's mergeable state saved every N batches.

A checkpoint is an ``.npz`` file (written atomically, read with ``allow_pickle=False``) holding

* ``meta.json``: format tag, the run's fingerprint, batches and samples done, the digest of the
  first batch, a digest chain over every batch done, the sha256 of every array member, and the
  calibrator state with every array replaced by a member name;
* one member per array of the calibrator state (histogram counts).

Resuming restores the state, reads the batches already done (without running the model),
checks that they are the batches the checkpoint was made from, and goes on; histograms are
integer counts and every tensor is updated in the same batch order, so the scales are
bit-identical to an uninterrupted run. A checkpoint whose fingerprint (model bytes, data
identity with a content digest, method and settings, batch size, sample limit, seed, data
options) differs from the current run is refused with an error saying what differs.

A checkpoint is verified before it is trusted: the archive must read cleanly, every member must
match its recorded sha256, the metadata must have the expected schema, the counts must be
non-negative and consistent (each batch holds 1 to ``batch_size`` samples, no more samples than
``max_samples``), and the re-read batches must hash to the recorded chain; a data source that
ends before the recorded number of batches is refused. Anything else -- a bit flip, a
truncated file, a missing member, forged counts, data rewritten in place with the same size and
mtime -- is refused with the way forward: delete the checkpoint or give another path.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantkit._io import write_bytes_atomic
from quantkit.calibrators.base import Calibrator
from quantkit.errors import InputError

logger = logging.getLogger(__name__)

FORMAT = "quantkit-calibration-checkpoint/2"
_META = "meta.json"
#: files up to this size are digested whole in a data identity; larger ones are sampled
FULL_DIGEST_BYTES = 64 * 1024 * 1024
_SAMPLE_BLOCKS, _BLOCK = 64, 64 * 1024
#: most files of a folder listed in a data identity
MAX_LISTED_FILES = 2_000_000
_FIX = "Delete the checkpoint to start over, or give another checkpoint= path."


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(path: str | os.PathLike[str], size: int | None = None,
                   full_limit: int = FULL_DIGEST_BYTES, blocks: int = _SAMPLE_BLOCKS) -> str:
    """A digest of a file's content that copying with preserved times cannot fake.

    Files up to ``full_limit`` bytes are hashed whole; larger ones by ``blocks`` blocks of 64
    KiB at evenly spaced offsets (the first and the last included) plus the size, so a rewrite
    of a large file is caught where it touches a sampled block (the batch digests of a resumed
    calibration check the rest).
    """
    size = os.stat(path).st_size if size is None else size
    if size <= full_limit:
        return file_digest(path)
    h = hashlib.sha256(f"sampled\0{size}\0".encode())
    last = max(size - _BLOCK, 0)
    with open(path, "rb") as fp:
        for i in range(blocks):
            fp.seek(last * i // max(blocks - 1, 1))
            h.update(fp.read(_BLOCK))
    return h.hexdigest()


def data_identity(data: Any) -> dict[str, Any]:
    """What identifies a data argument (see :func:`content_digest`).

    A file: its size, mtime and content digest. A folder: its listing (names, sizes, mtimes)
    and a digest of each file's first and last 64 KiB.
    """
    if isinstance(data, str | os.PathLike) and Path(data).exists():
        p = Path(data).resolve()
        if p.is_file():
            st = p.stat()
            return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                    "content": content_digest(p, st.st_size)}
        listing = hashlib.sha256()
        count = 0
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            st = f.stat()
            listing.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            try:
                listing.update(content_digest(f, st.st_size, full_limit=8192, blocks=2).encode())
            except OSError:
                listing.update(b"unreadable")
            listing.update(b"\n")
            count += 1
            if count > MAX_LISTED_FILES:
                raise InputError(f"data {p}: more than {MAX_LISTED_FILES:,} files; give a "
                                 "smaller folder.")
        return {"path": str(p), "files": count, "listing_sha256": listing.hexdigest()}
    if isinstance(data, str | os.PathLike):
        return {"source": str(data)}  # hf:NAME... (the batch digests check content)
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


def _chain(previous: str, digest: str) -> str:
    return hashlib.sha256(f"{previous}\0{digest}".encode()).hexdigest()


def _member_digest(arr: np.ndarray) -> str:
    h = hashlib.sha256(f"{arr.dtype.str}\0{arr.shape}\0".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


_HEX64 = frozenset("0123456789abcdef")


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


class Checkpoint:
    """Saves and restores a calibration run's progress in ``path``.

    Args:
        path: the checkpoint file.
        fingerprint: JSON-serialisable description of the run; a checkpoint is only resumed
            by a run with the same fingerprint (``batch_size`` and ``max_samples`` in it also
            bound the recorded counts).
        every: save after every ``every`` batches.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any],
                 every: int = 10) -> None:
        if every < 1:
            raise InputError(f"checkpoint_every={every}: must be a positive integer.")
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), sort_keys=True))
        self.every = every
        self.first_batch: str | None = None
        self._seen = 0                      # batches whose digest entered the chain
        self._chains: dict[int, str] = {0: ""}  # chain value after k batches (last few)
        self._resume_batches = 0            # batches the loaded checkpoint recorded
        self._resume_chain: str | None = None

    # -- writing ----------------------------------------------------------------------------
    def save(self, calibrator: Calibrator, batches: int, samples: int) -> None:
        """Write the state after ``batches`` complete batches (atomically)."""
        arrays: dict[str, np.ndarray] = {}
        state = _extract_arrays(calibrator.state(), arrays)
        chain = self._chains.get(batches)
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "batches": batches,
                "samples": samples, "first_batch_sha256": self.first_batch,
                "batches_chain_sha256": chain,
                "members": {k: _member_digest(v) for k, v in arrays.items()}, "state": state}
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
    def _refuse(self, what: str) -> InputError:
        return InputError(f"checkpoint={str(self.path)!r}: {what}. {_FIX}")

    def load(self) -> Progress | None:
        """The saved progress, ``None`` if there is no checkpoint file yet.

        Raises:
            InputError: the file is not a readable quantkit checkpoint, fails its checksums or
                consistency checks, or was made by a run with different inputs or settings.
        """
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                names = list(npz.files)
                if _META not in names:
                    raise self._refuse("not a quantkit checkpoint (no meta.json member)")
                meta = json.loads(bytes(npz[_META]).decode("utf-8"))
                arrays = {k: npz[k] for k in names if k != _META}
        except InputError:
            raise
        except (OSError, ValueError, KeyError, UnicodeDecodeError, EOFError, RecursionError,
                zipfile.BadZipFile, zlib.error, NotImplementedError) as err:
            raise self._refuse(f"not a readable quantkit checkpoint ({type(err).__name__}: "
                               f"{str(err)[:200]}); it may be truncated or corrupt") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise self._refuse(f"not a quantkit calibration checkpoint of this version (format "
                               f"{str(fmt)[:60]!r}, expected {FORMAT!r})")
        self._check_schema(meta, arrays)
        saved = meta["fingerprint"]
        if saved != self.fingerprint:
            diffs = sorted(k for k in set(saved) | set(self.fingerprint)
                           if saved.get(k) != self.fingerprint.get(k))
            detail = "; ".join(f"{k}: checkpoint {str(saved.get(k))[:120]!r}, now "
                               f"{str(self.fingerprint.get(k))[:120]!r}" for k in diffs[:4])
            raise InputError(
                f"checkpoint={str(self.path)!r} was made by a different run ({detail}). Resume "
                "with the same model, data and settings, or delete the checkpoint to start over."
            )
        batches, samples = meta["batches"], meta["samples"]
        try:
            state = _restore_arrays(meta["state"], arrays)
            _check_counts(state)
            calibrator = Calibrator.from_state(state)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise self._refuse(f"corrupt calibrator state ({type(err).__name__}: "
                               f"{str(err)[:200]})") from err
        self.first_batch = meta["first_batch_sha256"]
        self._resume_batches, self._resume_chain = batches, meta["batches_chain_sha256"]
        return Progress(calibrator, batches, samples, self.first_batch)

    def _check_schema(self, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Types, member checksums and count consistency of a checkpoint's metadata."""
        expected = {"fingerprint": dict, "batches": int, "samples": int, "members": dict,
                    "state": dict}
        for key, kind in expected.items():
            value = meta.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                what = "an integer" if kind is int else "an object"
                raise self._refuse(f"meta.json: {key} is missing or not {what}")
        for key in ("first_batch_sha256", "batches_chain_sha256"):
            if meta.get(key) is not None and not _is_digest(meta.get(key)):
                raise self._refuse(f"meta.json: {key} is not a sha256 digest")
        members = meta["members"]
        if set(members) != set(arrays):
            missing = sorted(set(members) - set(arrays))[:3]
            extra = sorted(set(arrays) - set(members))[:3]
            raise self._refuse(f"its members do not match its index (missing {missing}, "
                               f"unexpected {extra})")
        for name, arr in arrays.items():
            if _member_digest(arr) != members[name]:
                raise self._refuse(f"member {name} fails its checksum (the file was changed or "
                                   "damaged)")
        batches, samples = meta["batches"], meta["samples"]
        batch_size = self.fingerprint.get("batch_size")
        max_samples = self.fingerprint.get("max_samples")
        problems = []
        if batches < 0 or samples < 0:
            problems.append("negative counts")
        elif (batches == 0) != (samples == 0) or samples < batches:
            problems.append("every batch holds at least one sample")
        elif isinstance(batch_size, int) and samples > batches * batch_size:
            problems.append(f"{batches} batches of at most {batch_size} cannot hold {samples}")
        elif isinstance(max_samples, int) and samples > max_samples:
            problems.append(f"more samples than the limit of {max_samples}")
        if batches > 0 and (meta.get("first_batch_sha256") is None
                            or meta.get("batches_chain_sha256") is None):
            problems.append("batch digests missing")
        if problems:
            raise self._refuse(f"inconsistent progress ({batches} batches, {samples} samples: "
                               f"{problems[0]})")

    def check_first_batch(self, digest: str) -> None:
        """Feed the digest of the next batch read (every batch, in order).

        The first one is recorded or compared with the checkpoint's; when a resumed run has
        re-read as many batches as the checkpoint recorded, their chained digests must match.

        Raises:
            InputError: the data differs from the data the checkpoint was made from.
        """
        if self._seen == 0:
            if self.first_batch is None:
                self.first_batch = digest
            elif self.first_batch != digest:
                raise InputError(
                    f"checkpoint={str(self.path)!r}: the data changed since the checkpoint was "
                    f"written (its first batch differs). {_FIX}")
        chain = _chain(self._chains[self._seen], digest)
        self._seen += 1
        self._chains = {k: v for k, v in self._chains.items() if k >= self._seen - 2}
        self._chains[self._seen] = chain
        if self._resume_chain is not None and self._seen == self._resume_batches \
                and chain != self._resume_chain:
            raise InputError(
                f"checkpoint={str(self.path)!r}: the data changed since the checkpoint was written "
                f"(the {self._resume_batches} batches it covers read differently now, although "
                f"the files look the same). {_FIX}")

    def check_complete(self) -> None:
        """After the data ran out: it must have covered the batches the checkpoint recorded.

        Raises:
            InputError: the data holds fewer batches than the checkpoint claims.
        """
        if self._seen < self._resume_batches:
            raise InputError(
                f"checkpoint={str(self.path)!r}: it records {self._resume_batches} batches done "
                f"but the data holds only {self._seen}; the checkpoint does not belong to this "
                f"data or was altered. {_FIX}")


def _check_counts(value: Any, key: str = "") -> None:
    """Counts in a calibrator state are non-negative (forged or damaged states are not)."""
    if isinstance(value, Mapping):  # keys are paths: "nonfinite_counts.<tensor>" is a count
        for k, v in value.items():
            _check_counts(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            _check_counts(v, key)
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "iu" and value.size and int(value.min()) < 0:
            raise ValueError(f"{key} holds negative counts")
        if value.dtype.kind not in "iuf":
            raise ValueError(f"{key} has the element type {value.dtype}")
    elif isinstance(value, int) and not isinstance(value, bool) and value < 0 \
            and ("count" in key or "zeros" in key or "bins" in key or "coarsen" in key
                 or key == ""):
        raise ValueError(f"{key or 'a count'} is negative ({value})")


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
            return arrays[str(value["__array__"])]
        return {k: _restore_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_arrays(v, arrays) for v in value]
    return value
