"""Activation capture with ONNX Runtime and the one-call :func:`calibrate`.

The model is copied in memory with every activation tensor added as a graph output, run one
batch at a time, and each batch's activations are handed to a sink (the calibrators) and then
dropped: peak memory is the model plus one batch of activations, whatever the number of
samples.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantkit._io import check_output_path
from quantkit._log import track
from quantkit.calibrators import KERNEL_PRELOAD_PER_SAMPLE, preload_kernel
from quantkit.calibrators.base import DEFAULT_METHOD, Calibrator, create_calibrator
from quantkit.calibrators.cache import DEFAULT_TRT_VERSION, ScaleTable
from quantkit.calibrators.methods import HistogramCalibrator
from quantkit.capture.checkpoint import Checkpoint, batch_digest, data_identity, file_digest
from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch
from quantkit.data.rows import ReaderSource
from quantkit.errors import InputError, PipelineError
from quantkit.model import ActivationInfo, activation_tensors, input_specs, load_model

logger = logging.getLogger(__name__)

Sink = Callable[[Mapping[str, np.ndarray]], None]


class ActivationCapture:
    """Runs an ONNX model with its floating-point activations exposed as outputs.

    Args:
        model_path: the FP32 ONNX model.
        tensors: activation names to capture (default: every float activation).
        providers: ONNX Runtime execution providers (default: CUDA when available, else CPU).
        threads: intra-op threads for ONNX Runtime (default: ONNX Runtime's choice).
        histograms: the activations will be histogrammed: with large inputs, start loading the
            compiled binning kernel (:func:`quantkit.calibrators.preload_kernel`) in the
            background now.
    """

    def __init__(self, model_path: str | os.PathLike[str], tensors: Sequence[str] | None = None,
                 *, providers: Sequence[str] | None = None, threads: int | None = None,
                 histograms: bool = False) -> None:
        import onnx

        self.model_path = Path(model_path)
        model = load_model(self.model_path)
        self.inputs: list[InputSpec] = input_specs(model)
        if histograms and any(math.prod(d for d in s.shape[1:] if isinstance(d, int))
                              >= KERNEL_PRELOAD_PER_SAMPLE for s in self.inputs):
            preload_kernel()  # large activations ahead: load the binning kernel meanwhile
        acts = activation_tensors(model)
        if tensors is not None:
            known = {a.name: a for a in acts}
            unknown = [t for t in tensors if t not in known]
            if unknown:
                raise InputError(f"{self.model_path}: no activation tensor named "
                                 f"{', '.join(repr(t) for t in unknown[:5])}.")
            acts = [known[t] for t in tensors]
        self.activations: list[ActivationInfo] = acts
        existing = {o.name for o in model.graph.output}
        for a in acts:
            if a.name not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=a.name))
        self._session = _make_session(model, providers, threads, self.model_path)
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """Execution providers in use."""
        return list(self._session.get_providers())

    def run_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (validated) batch; return ``{activation name: array}``.

        Graph inputs are returned as given. Models whose batch axis is static are fed in
        chunks of that size.
        """
        feeds = {s.name: batch[s.name] for s in self.inputs}
        try:
            values = self._session.run(self._outputs, feeds)
        except Exception as err:
            raise PipelineError(
                f"{self.model_path}: ONNX Runtime failed on a batch of shapes "
                f"{ {k: tuple(v.shape) for k, v in feeds.items()} }: {err}"
            ) from err
        produced = dict(zip(self._outputs, values, strict=True))
        produced.update(feeds)
        # graph order, so that a NaN is reported at the first tensor that has it
        result: dict[str, np.ndarray] = {}
        for a in self.activations:
            value = produced.get(a.name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                result[a.name] = value
        return result

    def run(self, batches: Iterable[Mapping[str, np.ndarray]], sink: Sink, *,
            source: str = "<data>", allow_nonfinite: bool = False, total: int | None = None,
            description: str = "calibrating", resume: Resume | None = None) -> int:
        """Validate, run and hand every batch's activations to ``sink``.

        Args:
            batches: the data, batch by batch.
            sink: receives each batch's ``{activation: array}``.
            source: the data's description for messages.
            allow_nonfinite: let NaN/Inf inputs through.
            total: number of batches, for the progress bar.
            description: progress bar label.
            resume: skip batches done by an earlier run and report progress (checkpoints).

        Returns:
            The number of samples processed (with ``resume``: including the earlier run's).

        Raises:
            InputError: empty data, a batch that does not match the model's inputs, or
                non-finite input values (unless ``allow_nonfinite``).
        """
        resume = resume or Resume()
        samples, done, in_sink = resume.samples, resume.batches, False
        try:
            for index, raw in enumerate(track(batches, total=total, description=description)):
                batch = validate_batch(raw, self.inputs, source)
                if resume.first_batch is not None:  # every batch: checkpoints chain them
                    resume.first_batch(batch)
                if index < resume.batches:
                    continue  # done before the checkpoint: read, not run
                for name, arr in batch.items():
                    if arr.dtype.kind == "f" and not allow_nonfinite \
                            and not np.isfinite(arr).all():
                        raise InputError(
                            f"data {source}: input '{name}' contains NaN or Inf values (after "
                            f"{samples} good samples). Clean the data, or pass "
                            "--allow-nonfinite to skip non-finite values during calibration."
                        )
                in_sink = True
                for chunk in static_batch_chunks(batch, self.inputs):
                    sink(self.run_batch(chunk))
                    samples += len(next(iter(chunk.values())))
                in_sink = False
                done = index + 1
                if resume.after_batch is not None:
                    resume.after_batch(done, samples)
        except KeyboardInterrupt:
            # the statistics are consistent unless the interrupt hit a sink call
            if not in_sink and resume.interrupted is not None:
                resume.interrupted(done, samples)
            raise
        if samples == 0:
            raise InputError(f"data {source}: contains no samples. Give at least one sample.")
        return samples


def static_batch_chunks(batch: Batch, inputs: Sequence[InputSpec]) -> Iterator[Batch]:
    """``batch`` as the model takes it: whole, or in chunks of a static batch axis.

    A remainder smaller than the static size is dropped, with a warning.
    """
    static = {s.shape[0] for s in inputs if isinstance(s.shape[0], int) and s.shape[0] > 0}
    if not static:
        yield batch
        return
    size = min(static)
    n = len(next(iter(batch.values())))
    for lo in range(0, n - size + 1, size):
        yield {k: v[lo: lo + size] for k, v in batch.items()}
    if n % size:
        logger.warning("dropping %d samples: the model's batch axis is fixed at %d",
                       n % size, size)


@dataclass
class Resume:
    """Hooks of :meth:`ActivationCapture.run` for resumable runs.

    Attributes:
        batches: batches already done (read and skipped, not run).
        samples: samples in those batches.
        first_batch: called with every batch read, in order (to check the data did not
            change since a checkpoint).
        after_batch: called with ``(batches done, samples done)`` after each batch.
        interrupted: called like ``after_batch`` on Ctrl-C, when the statistics are consistent.
    """

    batches: int = 0
    samples: int = 0
    first_batch: Callable[[Mapping[str, np.ndarray]], None] | None = None
    after_batch: Callable[[int, int], None] | None = None
    interrupted: Callable[[int, int], None] | None = None


def _make_session(model: Any, providers: Sequence[str] | None, threads: int | None,
                  path: Path) -> Any:
    from quantkit._ort import session

    try:
        try:
            payload: Any = model.SerializeToString()
        except ValueError:  # > 2 GB: go through a temporary copy with external data
            import onnx

            tmp = tempfile.mkdtemp(prefix="quantkit-capture-")
            payload = os.path.join(tmp, "model.onnx")
            onnx.save(model, payload, save_as_external_data=True, location="weights.bin")
        # no spin-waiting: between runs the calibrators' threads need the CPUs
        return session(payload, providers=providers, threads=threads, spin=False)
    except Exception as err:
        raise InputError(f"{path}: ONNX Runtime cannot load the model: {err}") from err


def _resume(path: str | os.PathLike[str], every: int, cal: Calibrator,
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


#: entropy amax below this share of the tensor's range, with ...
CLIP_RATIO = 0.25
#: ... at least this share of its values clipped, is reported (a warning, not an error).
CLIP_FRACTION = 1e-3


def warn_heavy_clipping(cal: Calibrator, amax: Mapping[str, float]) -> list[str]:
    """Log a warning for tensors that entropy calibration clipped hard; return their names.

    TensorRT's KL threshold can sit far below a tensor's range when most values are small:
    right for CNN activations with rare outliers, destructive where the tail carries signal
    (PP-OCRv4 rec: one Add clipped to 1/10 of its range, 2.3% of values, empties every line;
    benchmarks/RESULTS.md). The warning names the worst tensors and the alternatives.
    """
    from quantkit.calibrators.methods import EntropyCalibrator

    if not isinstance(cal, EntropyCalibrator):
        return []
    heavy = {n: c for n, c in cal.clipping(amax).items()
             if c[0] < CLIP_RATIO and c[1] >= CLIP_FRACTION}
    if heavy:
        worst = sorted(heavy.items(), key=lambda kv: -kv[1][1])[:3]
        examples = "; ".join(f"{n}: amax {amax[n]:.4g} = {r:.0%} of its range, {f:.2%} of values "
                             "clipped" for n, (r, f) in worst)
        logger.warning(
            "entropy calibration clipped %d tensor(s) to under %d%% of their range (%s). If "
            "INT8 accuracy suffers, compare --method percentile / mse, or keep the layers that "
            "read them in FP16 (quantkit sensitivity shows which).",
            len(heavy), int(CLIP_RATIO * 100), examples)
    return sorted(heavy)


@dataclass
class CalibrationResult:
    """What :func:`calibrate` produced."""

    scales: ScaleTable
    calibrator: Calibrator
    num_samples: int
    tensors: list[str] = field(default_factory=list)


def calibrate(model: str | os.PathLike[str], data: Any, *, method: str = DEFAULT_METHOD,
              batch_size: int = 32, max_samples: int | None = None,
              calibrator: Calibrator | None = None, allow_nonfinite: bool = False,
              method_options: Mapping[str, Any] | None = None,
              data_options: Mapping[str, Any] | None = None,
              providers: Sequence[str] | None = None,
              trt_version: int = DEFAULT_TRT_VERSION,
              checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
              keep_checkpoint: bool = False, allow_cast: bool = False) -> CalibrationResult:
    """Calibrate every floating-point activation of ``model`` on ``data``.

    Args:
        model: path of the FP32 ONNX model.
        data: anything :func:`quantkit.data.open_source` accepts (a path, ``hf:...``, a
            :class:`~quantkit.data.DataSource`, an iterable of batches).
        method: ``auto`` (default, ``docs/calibration_methods.md``), ``entropy``, ``minmax``,
            ``percentile``, ``mse`` or a plugin's name (case-insensitive).
        batch_size: samples per batch.
        max_samples: stop after this many samples.
        calibrator: use this calibrator instead of creating one from ``method``.
        allow_nonfinite: skip NaN/Inf values instead of failing.
        method_options: options for the method (e.g. ``{"percentile": 99.9}``).
        data_options: options for ``open_source`` (``preprocess``, ``columns``, ``seed``...).
        providers: ONNX Runtime execution providers.
        trt_version: version number written in the TensorRT cache header.
        checkpoint: save the statistics to this file every ``checkpoint_every`` batches (and
            on Ctrl-C); if it exists, resume from it. The scales are bit-identical to an
            uninterrupted run. A checkpoint of a run with another model, data or settings is
            refused (:mod:`quantkit.capture.checkpoint`).
        checkpoint_every: batches between checkpoint saves.
        keep_checkpoint: keep the checkpoint file after success (the CLI removes it once its
            outputs are written); by default it is deleted before returning.
        allow_cast: cast integer data for floating-point inputs instead of refusing it (it is
            refused by default: usually unnormalised pixels, which would give scales 255x too
            large).

    Returns:
        The scales (TensorRT cache / JSON ready) and the calibrator with its statistics.
    """
    from quantkit.data import allow_cast as allowing_cast

    with allowing_cast(allow_cast):
        return _calibrate(model, data, method=method, batch_size=batch_size,
                          max_samples=max_samples, calibrator=calibrator,
                          allow_nonfinite=allow_nonfinite, method_options=method_options,
                          data_options=data_options, providers=providers,
                          trt_version=trt_version, checkpoint=checkpoint,
                          checkpoint_every=checkpoint_every, keep_checkpoint=keep_checkpoint)


def _calibrate(model: str | os.PathLike[str], data: Any, *, method: str, batch_size: int,
               max_samples: int | None, calibrator: Calibrator | None, allow_nonfinite: bool,
               method_options: Mapping[str, Any] | None,
               data_options: Mapping[str, Any] | None, providers: Sequence[str] | None,
               trt_version: int, checkpoint: str | os.PathLike[str] | None,
               checkpoint_every: int, keep_checkpoint: bool) -> CalibrationResult:
    from quantkit.data import open_source

    check_batch_args(batch_size, max_samples)
    cal = calibrator or create_calibrator(method, allow_nonfinite=allow_nonfinite,
                                          **dict(method_options or {}))
    capture = ActivationCapture(model, providers=providers,
                                histograms=isinstance(cal, HistogramCalibrator))
    source = open_source(data, capture.inputs, **dict(data_options or {}))
    desc = source.description if isinstance(source, DataSource) else str(data)
    ckpt, resume = None, Resume()
    if checkpoint is not None:
        ckpt, resume, cal = _resume(checkpoint, checkpoint_every, cal, model, data,
                                    batch_size=batch_size, max_samples=max_samples,
                                    data_options=data_options)
    # Each batch is consumed before the next is read: arrays sources can reuse one buffer.
    batches = (source.batches(batch_size, max_samples, reuse_buffers=True)
               if isinstance(source, ReaderSource) else source.batches(batch_size, max_samples))
    n = capture.run(
        batches, cal.update_many, source=desc, resume=resume,
        allow_nonfinite=allow_nonfinite, total=source.num_batches(batch_size, max_samples),
    )
    if ckpt is not None:
        ckpt.check_complete()  # a checkpoint claiming more batches than the data holds
    amax = cal.compute_amax()
    if ckpt is not None and not keep_checkpoint:
        ckpt.remove()
    warn_heavy_clipping(cal, amax)
    choice_counts = getattr(cal, "choice_counts", None)
    if callable(choice_counts) and amax:
        logger.info("auto calibration: %s", ", ".join(
            f"{n} tensor(s) took the {c} threshold" for c, n in choice_counts().items()))
    table = ScaleTable.from_amax(
        amax, method=cal.method, model=str(model), num_samples=n,
        algorithm=cal.cache_algorithm, trt_version=trt_version,
        settings={k: v for k, v in cal.settings().items() if k != "num_bins"},
    )
    return CalibrationResult(table, cal, n, list(amax))
