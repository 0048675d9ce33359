"""The roofline latency model: its constants, options and result types.

A kernel's time on a GPU is (the engine's time is :func:`timeline_seconds` of its kernels)

    t = max(t_compute, t_memory) + launch

    t_compute = ideal_c / eff(ideal_c, COMPUTE_EFFICIENCY)
    ideal_c   = matrix_flops / tensor_peak(precision) + vector_flops / fp32_peak
    t_memory  = ideal_m / eff(ideal_m, MEMORY_EFFICIENCY)
    ideal_m   = bytes / bandwidth
    eff(x, cap) = cap * x / (x + RAMP)

``eff`` is the achieved fraction of peak. It rises with the work a kernel has (its ideal time at
peak, ``x``) up to ``cap``: a kernel that would take ``RAMP`` at peak reaches half of ``cap``.
That is the physics of a small kernel: it does not fill every SM, and its prologue, epilogue and
last partial wave cost about the same however little it computes. Algebraically ``x / eff`` is
``(x + RAMP) / cap``, i.e. a fixed ramp of ``RAMP / cap`` per kernel on top of the streaming time.
Expressing it against ideal time (rather than raw FLOPs) makes one constant serve every GPU: the
half-efficiency size scales with the GPU's peak.

The constants below are the only ones the model has. They are chosen from general GPU behaviour
(stated next to each), not fitted to any published TensorRT measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Fraction of the dense datasheet peak that large tensor-core GEMMs/convolutions sustain:
#: cuBLAS/cuDNN-class kernels reach roughly 70-80% (clocks under load sit below the boost clock
#: the datasheet assumes; tile edges waste work).
COMPUTE_EFFICIENCY = 0.70
#: Fraction of the datasheet DRAM bandwidth that streaming kernels sustain (copy-style
#: benchmarks reach roughly 80-90%).
MEMORY_EFFICIENCY = 0.80
#: Work (as ideal time at peak) at which a kernel reaches half of its efficiency cap, seconds:
#: of the order of one DRAM round trip plus a kernel's prologue/epilogue (~1 microsecond).
RAMP_S = 1.0e-6
#: GPU time between back-to-back kernels of one stream (launch and scheduling), seconds:
#: typically 2-3 microseconds when kernels are enqueued without CUDA graphs.
LAUNCH_S = 2.0e-6


@dataclass(frozen=True)
class EstimateOptions:
    """Knobs of the latency model (defaults: the module constants).

    Attributes:
        compute_efficiency: cap of the achieved fraction of peak FLOPs.
        memory_efficiency: cap of the achieved fraction of peak bandwidth.
        ramp_s: work (ideal seconds at peak) at which a kernel reaches half its cap.
        launch_s: per-kernel launch/scheduling cost, seconds.
        tf32: count FP32 matrix math at the TF32 tensor rate where the GPU has one (TensorRT's
            default); False counts it at the CUDA-core FP32 rate.
        opt_level: TensorRT-RTX builder optimisation level for the estimate's build (None: the
            library default).
        fuse_epilogues: fold the separate epilogue kernel TensorRT-RTX compiles after each
            INT8/FP8 convolution/GEMM into it, as TensorRT fuses them
            (:mod:`quantkit.latency.fusion`); False estimates the kernel list as built.
        fold_constant_kernels: count a kernel that reads only weights (TensorRT-RTX's run-time
            dequantization and rearrangement of an INT8 weight) as build-time work, its reader
            reading the quantized weight, as TensorRT prepares weights when it builds
            (:func:`quantkit.latency.fusion.fold_constant_kernels`); False times it as built.
    """

    compute_efficiency: float = COMPUTE_EFFICIENCY
    memory_efficiency: float = MEMORY_EFFICIENCY
    ramp_s: float = RAMP_S
    launch_s: float = LAUNCH_S
    tf32: bool = True
    opt_level: int | None = None
    fuse_epilogues: bool = True
    fold_constant_kernels: bool = True

    def __post_init__(self) -> None:
        from quantkit.errors import InputError

        for name in ("compute_efficiency", "memory_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InputError(f"estimate option {name}={value}: give a fraction in (0, 1].")
        for name in ("ramp_s", "launch_s"):
            if getattr(self, name) < 0:
                raise InputError(f"estimate option {name}={getattr(self, name)}: must be >= 0 "
                                 "seconds.")

    def for_gpu(self, memory_efficiency: float | None) -> EstimateOptions:
        """These options with a GPU row's measured DRAM cap, where they keep the default.

        A row measured on real hardware (``GPU.memory_efficiency``) replaces the general
        default; a value the caller set explicitly (anything but the default) wins.
        """
        if memory_efficiency is None or self.memory_efficiency != MEMORY_EFFICIENCY:
            return self
        return replace(self, memory_efficiency=memory_efficiency)

    def describe(self) -> str:
        """One line for an estimate's ``method``."""
        return (f"roofline per kernel, efficiency cap {self.compute_efficiency:.2f} of peak "
                f"FLOPs and {self.memory_efficiency:.2f} of peak bandwidth, half-efficiency at "
                f"{self.ramp_s * 1e6:g} us of ideal work, launch cost {self.launch_s * 1e6:g} us "
                f"per kernel, FP32 matrix math at the {'TF32' if self.tf32 else 'FP32'} rate"
                + ("" if self.fuse_epilogues else ", kernels as TensorRT-RTX built them")
                + ("" if self.fold_constant_kernels else ", run-time weight kernels kept"))


def efficiency(ideal_s: float, cap: float, ramp_s: float) -> float:
    """Achieved fraction of peak for a kernel whose work takes ``ideal_s`` at peak."""
    if ideal_s <= 0:
        return cap
    return cap * ideal_s / (ideal_s + ramp_s)


def kernel_seconds(matrix_flops: float, vector_flops: float, nbytes: float, *,
                   tensor_tflops: float, vector_tflops: float, bandwidth_gbs: float,
                   options: EstimateOptions) -> tuple[float, str]:
    """Roofline time of one kernel (seconds) and what bounds it.

    Returns:
        ``(seconds, bound)`` with ``bound`` ``"compute"``, ``"memory"`` or ``"empty"`` (a kernel
        that neither computes nor moves data, e.g. a host-side shape call: 0 s, no launch).
    """
    ideal_c = matrix_flops / (tensor_tflops * 1e12) + vector_flops / (vector_tflops * 1e12)
    ideal_m = nbytes / (bandwidth_gbs * 1e9)
    if ideal_c <= 0 and ideal_m <= 0:
        return 0.0, "empty"
    t_c = ideal_c / efficiency(ideal_c, options.compute_efficiency, options.ramp_s) \
        if ideal_c > 0 else 0.0
    t_m = ideal_m / efficiency(ideal_m, options.memory_efficiency, options.ramp_s) \
        if ideal_m > 0 else 0.0
    bound = "compute" if t_c >= t_m else "memory"
    return max(t_c, t_m) + options.launch_s, bound


def timeline_seconds(kernels: Sequence[tuple[int, str, int | None, float]]) -> float:
    """End-to-end time of kernels on several streams, in engine order.

    Each entry is ``(stream, type, event, seconds)``. A stream runs its kernels one after
    another; a ``signal`` entry records its stream's time under its event id, a ``wait`` entry
    holds its stream until that time. The engine is done when its last stream is. Kernels that
    overlap are assumed not to slow each other (the builder puts small kernels on auxiliary
    streams, where the GPU has room).
    """
    clock: dict[int, float] = {}
    events: dict[int, float] = {}
    for stream, kind, event, seconds in kernels:
        t = clock.get(stream, 0.0)
        if kind == "wait" and event is not None:
            t = max(t, events.get(event, 0.0))
        t += seconds
        if kind == "signal" and event is not None:
            events[event] = t
        clock[stream] = t
    return max(clock.values(), default=0.0)


@dataclass(frozen=True)
class KernelEstimate:
    """One compiled kernel's estimate.

    Attributes:
        name: the kernel's name in the engine.
        type: its layer type in the builder log (``correlation``, ``gemm``, ``kgen``...).
        precision: the type of its first input (``int8``, ``fp16``, ``fp32``, ``fp8``...).
        flops: matrix + vector FLOPs of the ONNX nodes counted in this kernel.
        matrix_flops: the tensor-core part of ``flops``.
        bytes: bytes of its inputs, constants (weights, once) and outputs.
        ms: estimated time, launch cost included.
        bound: ``"compute"``, ``"memory"`` or ``"empty"``.
        onnx_layers: the ONNX nodes the kernel names.
        fused: kernels of the build folded into this one (see :mod:`quantkit.latency.fusion`).
        stream: the stream the engine runs it on (0 unless the builder uses several).
        event: the event id of a ``signal``/``wait`` entry, else None.
    """

    name: str
    type: str
    precision: str
    flops: float
    matrix_flops: float
    bytes: int
    ms: float
    bound: str
    onnx_layers: tuple[str, ...] = ()
    fused: tuple[str, ...] = ()
    stream: int = 0
    event: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The kernel as a JSON-able dict."""
        doc = asdict(self)
        doc["onnx_layers"] = list(self.onnx_layers)
        doc["fused"] = list(self.fused)
        return doc


@dataclass(frozen=True)
class Estimate:
    """The estimated TensorRT latency of one engine on one GPU.

    Attributes:
        gpu: canonical GPU name.
        latency_ms: the kernels' times along the engine's streams (their sum when the engine
            uses one stream).
        by_precision: kernel milliseconds per kernel precision (their sum exceeds
            ``latency_ms`` by ``overlap_ms``).
        kernels: per-kernel estimates, in engine order.
        method: how the figure was obtained (build target, constants, efficiency source).
        batch_size: the first dimension of the first input, if it has one.
        shapes: the input shapes the engine was estimated at.
        build_target: the TensorRT-RTX compute capability whose kernel list was used
            (``"default"`` for a portable build).
        source: always ``"estimated"`` (a latency model, not a measurement).
        overlap_ms: kernel time hidden by running on several streams at once.
    """

    gpu: str
    latency_ms: float
    by_precision: dict[str, float]
    kernels: tuple[KernelEstimate, ...]
    method: str
    batch_size: int | None
    shapes: dict[str, list[int]]
    build_target: str = ""
    source: str = field(default="estimated")
    overlap_ms: float = 0.0

    @property
    def throughput(self) -> float | None:
        """Samples per second at ``latency_ms`` (None without a batch dimension)."""
        if self.batch_size is None or self.latency_ms <= 0:
            return None
        return self.batch_size / (self.latency_ms / 1e3)

    @property
    def label(self) -> str:
        """E.g. ``"estimated, L4, batch 1"``: what every latency figure must say."""
        batch = f", batch {self.batch_size}" if self.batch_size is not None else ""
        return f"{self.source}, {self.gpu}{batch}"

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict: gpu, latency_ms, by_precision, kernels, method, batch_size, shapes."""
        return {
            "gpu": self.gpu, "latency_ms": self.latency_ms,
            "by_precision": dict(self.by_precision),
            "kernels": [k.to_json() for k in self.kernels], "method": self.method,
            "batch_size": self.batch_size,
            "shapes": {name: list(dims) for name, dims in self.shapes.items()},
            "build_target": self.build_target, "source": self.source, "label": self.label,
            "overlap_ms": self.overlap_ms, "throughput": self.throughput,
        }
