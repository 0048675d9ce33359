"""Resumable calibration runs: the hooks of ``ActivationCapture.run`` and their checkpoint.

:func:`open_checkpoint` opens a run's checkpoint (:mod:`quantkit.capture.checkpoint`),
restores the calibrator of an interrupted run and returns the :class:`Resume` hooks that
skip the batches already done and save progress every few batches and on Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantkit._io import check_output_path
from quantkit.calibrators.base import Calibrator
from quantkit.capture.checkpoint import Checkpoint, batch_digest, data_identity, file_digest

logger = logging.getLogger(__name__)


@dataclass
class Resume:
    """Hooks of :meth:`ActivationCapture.run` for resumable runs.

    Attributes:
        batches: batches already done (read and skipped, not run).
        samples: samples in those batches.
        first_batch: called with every batch read, in order (checks it against a checkpoint).
        after_batch: called with ``(batches done, samples done)`` after each batch.
        interrupted: like ``after_batch``, on Ctrl-C when the statistics are consistent.
    """

    batches: int = 0
    samples: int = 0
    first_batch: Callable[[Mapping[str, np.ndarray]], None] | None = None
    after_batch: Callable[[int, int], None] | None = None
    interrupted: Callable[[int, int], None] | None = None

    @property
    def hooked(self) -> bool:
        """Whether a checkpoint watches the run (batch order and progress matter)."""
        return bool(self.batches or self.first_batch or self.after_batch or self.interrupted)


def open_checkpoint(path: str | os.PathLike[str], every: int, cal: Calibrator,
                    model: str | os.PathLike[str], data: Any, **settings: Any,
                    ) -> tuple[Checkpoint, Resume, Calibrator]:
    """Open ``path`` as the run's checkpoint; restore its calibrator if it has one."""
    check_output_path(path, model, data if isinstance(data, str | os.PathLike) else None,
                      flag="--checkpoint")
    fingerprint = {
        "model_sha256": file_digest(model),
        "data": data_identity(data),
        "method": cal.method,
        "method_settings": cal.settings(),
        "allow_nonfinite": cal.allow_nonfinite,
        **{k: json.loads(json.dumps(v, default=str)) for k, v in settings.items()},
    }
    ckpt = Checkpoint(path, fingerprint, every)
    progress = ckpt.load()
    done = Resume(first_batch=lambda b: ckpt.check_first_batch(batch_digest(b)))
    if progress is not None:
        cal = progress.calibrator
        done.batches, done.samples = progress.batches, progress.samples
        logger.info("resuming from %s: %d batches (%d samples) already done", path,
                    progress.batches, progress.samples)

    def save(batches: int, samples: int) -> None:
        ckpt.save(cal, batches, samples)

    def periodic(batches: int, samples: int) -> None:
        if batches % ckpt.every == 0:
            save(batches, samples)

    done.after_batch, done.interrupted = periodic, save
    return ckpt, done, cal
