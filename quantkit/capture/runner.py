"""Activation capture with ONNX Runtime and the one-call :func:`calibrate`.

The model is copied in memory with every activation tensor added as a graph output, run one
batch at a time, and each batch's activations are handed to a sink (the calibrators) and then
dropped: peak memory is the model plus one batch of activations, whatever the number of
samples.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantkit._log import track
from quantkit.calibrators import KERNEL_PRELOAD_PER_SAMPLE, preload_kernel
from quantkit.calibrators.base import DEFAULT_METHOD, Calibrator, create_calibrator
from quantkit.calibrators.cache import DEFAULT_TRT_VERSION, ScaleTable
from quantkit.calibrators.methods import HistogramCalibrator
from quantkit.capture.pipeline import check_inputs, run_overlapped
from quantkit.capture.resume import Resume, open_checkpoint
from quantkit.capture.select import quantized_activations
from quantkit.capture.staged import (
    STAGE_SHARE,
    StagedRunner,
    check_sample_fits,
    default_memory_budget,
    parse_memory,
    plan_stages,
    sample_bytes,
)
from quantkit.data.base import (
    DataSource,
    InputLayout,
    InputSpec,
    batch_samples,
    check_batch_args,
    static_batch_chunks,
    validate_batch,
)
from quantkit.data.rows import ReaderSource
from quantkit.errors import InputError, PipelineError
from quantkit.graph.passes import name_nodes
from quantkit.model import (
    ActivationInfo,
    activation_tensors,
    check_not_quantized,
    input_specs,
    load_model,
    subgraph_nodes,
)

logger = logging.getLogger(__name__)

Sink = Callable[[Mapping[str, np.ndarray]], None]
#: ONNX element types of the FP8 formats (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ)
FP8_TYPES = frozenset({17, 18, 19, 20})


def warn_uncalibrated_bodies(model: Any, path: str | os.PathLike[str]) -> list[str]:
    """Warn that the activations inside If/Loop/Scan bodies are not calibrated.

    ONNX Runtime returns main-graph tensors only (a body's scope is not visible there), so
    calibration sees the control-flow node's inputs and outputs; the writer keeps bodies float.

    Returns:
        The names of the control-flow nodes whose bodies hold nodes (empty: nothing skipped).
    """
    bodies = subgraph_nodes(model)
    if bodies:
        named = ", ".join(f"{n} ({c} node(s))" for n, c in list(bodies.items())[:5])
        logger.warning(
            "%s: %d node(s) inside If/Loop/Scan bodies are not calibrated: %s%s. ONNX Runtime "
            "exposes main-graph tensors only, so only the inputs and outputs of these nodes "
            "get scales, and the bodies stay in float when quantized.", path,
            sum(bodies.values()), named, " ..." if len(bodies) > 5 else "")
    return list(bodies)


class ActivationCapture:
    """Runs an ONNX model with its floating-point activations exposed as outputs.

    Args:
        model_path: the FP32 ONNX model.
        tensors: activation names to capture (default: every float activation).
        providers: ONNX Runtime execution providers (default: CUDA when available, else CPU).
        threads: intra-op threads for ONNX Runtime (default: ONNX Runtime's choice).
        histograms: the activations will be histogrammed: with large inputs, load the binning
            kernel (:func:`quantkit.calibrators.preload_kernel`) in the background now.
        layout: batch axes and constant inputs (default: detected from the model's shapes).
        calibrating: for calibration: refuse an already-quantized model (check_not_quantized),
            warn about If/Loop/Scan bodies, which are not exposed (warn_uncalibrated_bodies).
        memory_budget: bytes the captured activations may take: inputs whose one sample
            cannot fit are refused at once, and when a chunk's activations would not fit,
            :meth:`run` runs the model in stages (:mod:`quantkit.capture.staged`) and calls
            the sink once per stage with that stage's tensors (same values, same order of
            batches per tensor: per-tensor statistics are identical). ``None``: one pass.
        expose_all: with ``tensors``, still make every float activation a graph output (only
            ``tensors`` reach the sink): ONNX Runtime then runs the very graph a capture of
            every tensor runs, so the captured values are bit for bit the same (fewer
            outputs would let it fuse nodes, e.g. an erf-GELU, whose outputs differ in the
            last bits).
        quantized_only: without ``tensors``, capture only the activations that quantized ops
            read (:func:`quantkit.capture.select.quantized_activations`; all of them when none
            does), exposing every one (``expose_all``).
    """

    def __init__(self, model_path: str | os.PathLike[str], tensors: Sequence[str] | None = None,
                 *, providers: Sequence[str] | None = None, threads: int | None = None,
                 histograms: bool = False, calibrating: bool = False,
                 layout: InputLayout | None = None, memory_budget: int | None = None,
                 expose_all: bool = False, quantized_only: bool = False) -> None:
        import onnx

        self.model_path = Path(model_path)
        model = load_model(self.model_path)
        name_nodes(model)  # ONNX Runtime refuses duplicate node names; tensors keep theirs
        if calibrating:
            check_not_quantized(model, self.model_path, "calibrated")
            warn_uncalibrated_bodies(model, self.model_path)
        self.inputs: list[InputSpec] = input_specs(model, layout)
        self.memory_budget = memory_budget
        if memory_budget is not None:
            check_sample_fits(self.inputs, memory_budget)
        if histograms and any(math.prod(d for d in s.sample_shape if isinstance(d, int))
                              >= KERNEL_PRELOAD_PER_SAMPLE for s in self.inputs):
            preload_kernel()  # large activations ahead: load the binning kernel meanwhile
        acts = exposed = activation_tensors(model)
        if tensors is not None:
            known = {a.name: a for a in acts}
            unknown = [t for t in tensors if t not in known]
            if unknown:
                raise InputError(f"{self.model_path}: no activation tensor named "
                                 f"{', '.join(repr(t) for t in unknown[:5])}.")
            acts = [known[t] for t in tensors]
        elif quantized_only:
            acts = quantized_activations(model, acts) or acts
            expose_all = True
            logger.info("capturing the %d of %d activations that quantized ops read",
                        len(acts), len(exposed))
        self.activations: list[ActivationInfo] = acts
        self._exposed = [a.name for a in (exposed if expose_all else acts)]
        #: samples in the chunk :meth:`run` last handed to its sink (for per-sample weighting)
        self.chunk_samples = 0
        existing = {o.name for o in model.graph.output}
        for name in self._exposed:
            if name not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        self._providers, self._threads = providers, threads
        self._model: Any = model
        self._session: Any = None
        self._staged: StagedRunner | None = None
        self._planned = memory_budget is None
        if memory_budget is None:
            self._open()

    def _open(self) -> None:
        """Create the one-pass session (every captured activation is an output)."""
        self._session = _make_session(self._model, self._providers, self._threads,
                                      self.model_path)
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._model = None  # the session has it: free the proto's copy of the weights

    @property
    def providers(self) -> list[str]:
        """Execution providers in use (requested ones until the first batch, with a budget)."""
        if self._session is None:
            from quantkit._ort import default_providers

            return list(self._providers or default_providers())
        return list(self._session.get_providers())

    def _plan(self, chunk: Mapping[str, np.ndarray]) -> None:
        """Decide on the first chunk whether its activations fit the budget in one pass."""
        assert self.memory_budget is not None
        self._planned = True
        rows = batch_samples(chunk, self.inputs, fed=True)
        sizes = {k: v * rows for k, v in sample_bytes(self._model, self.inputs, chunk).items()}
        names = set(self._exposed)
        limit = int(self.memory_budget * STAGE_SHARE)
        outs = [[o for o in n.output if o in names] for n in self._model.graph.node]
        ranges = plan_stages(outs, {k: v for k, v in sizes.items() if k in names}, limit)
        if len(ranges) == 1:
            self._open()
            return
        providers, threads, path = self._providers, self._threads, self.model_path
        self._staged = StagedRunner(
            self._model, list(self._exposed), ranges,
            lambda m: _make_session(m, providers, threads, path, staged=True))
        self._model = None  # the staged runner holds it until its sessions exist
        total = sum(sizes.get(n, 0) for n in names)
        logger.info("capturing in %d stages: the activations of a batch of %d (about %.2f "
                    "GiB) exceed the memory budget of %.2f GiB", len(self._staged.stages),
                    rows, total / 2**30, self.memory_budget / 2**30)

    @property
    def threads(self) -> int | None:
        """ONNX Runtime's intra-op threads (None: its default, one per CPU)."""
        return self._threads

    @property
    def staged(self) -> bool:
        """Whether the model runs in stages (known after the first chunk)."""
        return self._staged is not None

    def parts(self, chunk: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """The chunk's activations: one mapping, or one per stage under a memory budget."""
        if not self._planned:
            self._plan(chunk)
        if self._staged is None:
            yield self.run_batch(chunk)
            return
        for part in self._staged.run(chunk):
            yield {a.name: part[a.name] for a in self.activations
                   if isinstance(part.get(a.name), np.ndarray) and part[a.name].dtype.kind == "f"}

    def run_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch in the model's layout, in one pass; return ``{activation: array}``.

        ``batch`` is what the model takes: one chunk of
        :func:`~quantkit.data.static_batch_chunks` (samples on each input's batch axis, at
        most a static batch size). Graph inputs are returned as given. :meth:`run` validates
        and chunks the data itself, and keeps to the memory budget.
        """
        feeds = {s.name: batch[s.name] for s in self.inputs}
        if self._session is None:
            self._open()
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
            description: str = "calibrating", resume: Resume | None = None,
            overlap: bool = False) -> int:
        """Validate, run and hand every batch's activations to ``sink``.

        Args:
            batches: the data, batch by batch (samples first).
            sink: receives each chunk's ``{activation: array}``; under a memory budget, once
                per stage, each activation once per chunk, in graph order.
            source: the data's description for messages.
            allow_nonfinite: let NaN/Inf inputs through.
            total: number of batches, for the progress bar.
            description: progress bar label.
            resume: skip batches done by an earlier run and report progress (checkpoints).
            overlap: read batch N+2 and fold batch N into the statistics while ONNX Runtime
                runs batch N+1 (:mod:`quantkit.capture.pipeline`; same statistics). The sink
                is then called as ``sink(part, threads=n)`` from another thread, and every
                batch must be a new array. Runs under a checkpoint (``resume``) stay plain.

        Returns:
            The number of samples processed (with ``resume``: including the earlier run's).

        Raises:
            InputError: empty data, a batch that does not match the model's inputs, or
                non-finite input values (unless ``allow_nonfinite``).
        """
        resume = resume or Resume()
        if overlap and not resume.hooked:
            samples = run_overlapped(self, batches, sink, source=source, total=total,
                                     allow_nonfinite=allow_nonfinite, description=description)
            if samples == 0:
                raise InputError(f"data {source}: contains no samples. Give at least one "
                                 "sample.")
            return samples
        samples, done, in_sink = resume.samples, resume.batches, False
        try:
            for index, raw in enumerate(track(batches, total=total, description=description)):
                batch = validate_batch(raw, self.inputs, source)
                if resume.first_batch is not None:  # every batch: checkpoints chain them
                    resume.first_batch(batch)
                if index < resume.batches:
                    continue  # done before the checkpoint: read, not run
                check_inputs(batch, source, allow_nonfinite, samples)
                in_sink = True
                for chunk in static_batch_chunks(batch, self.inputs):
                    self.chunk_samples = batch_samples(chunk, self.inputs, fed=True)
                    for part in self.parts(chunk):
                        sink(part)
                    samples += self.chunk_samples
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


def _make_session(model: Any, providers: Sequence[str] | None, threads: int | None,
                  path: Path, staged: bool = False) -> Any:
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
        fp8 = any(t.data_type in FP8_TYPES for t in model.graph.initializer)
        return session(payload, providers=providers, threads=threads, spin=False,
                       layout_transforms=False, arena=not staged, fp8=fp8)
    except Exception as err:
        raise InputError(f"{path}: ONNX Runtime cannot load the model: {err}") from err


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
              keep_checkpoint: bool = False, allow_cast: bool = False,
              memory_budget: int | str | None = None,
              quantized_only: bool = False) -> CalibrationResult:
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
        allow_cast: cast integer data for float inputs instead of refusing it (refused by
            default: usually unnormalised pixels, which give scales 255x too large).
        memory_budget: bytes (or ``"4GiB"``) one batch's captured activations may take; above
            it the model runs in stages with identical scales (:mod:`quantkit.capture.staged`).
            Default: 25 % of the available memory, at most 512 MiB.
        quantized_only: calibrate only the activations a Q/DQ plan can quantize -- the
            activation inputs of Conv, ConvTranspose, Gemm, MatMul and of residual Adds
            (:mod:`quantkit.capture.select`) -- and skip the rest, whose scales no plan uses
            (what ``quantkit calibrate`` does unless ``--all-tensors``). A model where no op
            reads one is calibrated whole. The scales of the tensors calibrated either way
            are identical; a TensorRT cache for implicit quantization needs every tensor.

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
                          checkpoint_every=checkpoint_every, keep_checkpoint=keep_checkpoint,
                          memory_budget=memory_budget, quantized_only=quantized_only)


def _calibrate(model: str | os.PathLike[str], data: Any, *, method: str, batch_size: int,
               max_samples: int | None, calibrator: Calibrator | None, allow_nonfinite: bool,
               method_options: Mapping[str, Any] | None,
               data_options: Mapping[str, Any] | None, providers: Sequence[str] | None,
               trt_version: int, checkpoint: str | os.PathLike[str] | None,
               checkpoint_every: int, keep_checkpoint: bool,
               memory_budget: int | str | None, quantized_only: bool) -> CalibrationResult:
    from quantkit.data import open_source

    check_batch_args(batch_size, max_samples)
    cal = calibrator or create_calibrator(method, allow_nonfinite=allow_nonfinite,
                                          **dict(method_options or {}))
    # overlapped runs fold batch N while batch N+1 is read: every batch needs its own arrays;
    # they load the binning kernel at their first batch, when the run's size is known
    overlap = checkpoint is None and type(cal).update_many is Calibrator.update_many
    capture = ActivationCapture(model, providers=providers, calibrating=True,
                                histograms=isinstance(cal, HistogramCalibrator) and not overlap,
                                layout=InputLayout.from_options(data_options),
                                memory_budget=default_memory_budget() if memory_budget is None
                                else parse_memory(memory_budget),
                                quantized_only=quantized_only)
    source = open_source(data, capture.inputs, **dict(data_options or {}))
    desc = source.description if isinstance(source, DataSource) else str(data)
    ckpt, resume = None, Resume()
    if checkpoint is not None:
        ckpt, resume, cal = open_checkpoint(checkpoint, checkpoint_every, cal, model, data,
                                            batch_size=batch_size, max_samples=max_samples,
                                            data_options=data_options,
                                            **({"quantized_only": True} if quantized_only
                                               else {}))
    # Plain runs consume each batch before the next is read: array sources reuse one buffer.
    batches = (source.batches(batch_size, max_samples, reuse_buffers=not overlap)
               if isinstance(source, ReaderSource) else source.batches(batch_size, max_samples))
    n = capture.run(
        batches, cal.update_many, source=desc, resume=resume, overlap=overlap,
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
