"""The GPU table of the latency estimator: dense peak throughput and memory bandwidth.

Every row is a vendor datasheet (or architecture whitepaper) figure, cited with its document name
and URL. Vendors quote tensor-core throughput "with sparsity" (2:4 structured sparsity) for
Ampere and later; TensorRT engines of ordinary (dense) models cannot use it, so those figures are
halved here and the row's ``notes`` say so. Turing (T4) has no sparsity: its figures are dense.

* ``fp32_tflops`` is the CUDA-core (non-tensor) FP32 rate, used for element-wise math.
* ``tf32_tflops`` ... ``int8_tops`` are dense tensor-core rates. ``None`` means the GPU has no
  such tensor math (FP8 before Ada / SM89, TF32 and BF16 before Ampere / SM80).
* GeForce cards (RTX 4090, RTX 5090) run FP16/BF16/FP8 tensor math with FP32 accumulation at
  half the FP16-accumulation rate; their rows give the FP32-accumulate figures.
* Jetson modules publish INT8 TOPS only; their FP16/BF16/TF32 rates follow the Ampere tensor-core
  ratios (INT8 : FP16 : TF32 = 4 : 2 : 1) and the row says it is derived.

``source`` is ``"datasheet"`` for every row and ``efficiency_source`` is ``"default"``: the
achieved fraction of these peaks comes from :mod:`quantkit.latency.model`'s default curve until a
measured curve for that GPU is plugged in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from quantkit.errors import InputError

#: TensorRT-RTX 1.7 builds for SM75, SM80, SM86, SM89, SM120 and SM121. A GPU whose SM it cannot
#: target is estimated from a build for the closest target with the same precision features,
#: tried in this order (the first that builds is used). Turing (T4) is estimated from an SM80
#: build: TensorRT-RTX 1.7.1's SM75 builds refuse FP32 GEMMs ("FP32 GEMM is not supported") and
#: run INT8 Q/DQ convolutions as FP32 convolutions between Quantize/Dequantize kernels, unlike
#: TensorRT on a T4, which runs them on INT8 tensor cores as on Ampere.
BUILD_TARGETS: dict[str, tuple[str, ...]] = {
    "SM75": ("SM80",),
    "SM80": ("SM80",),
    "SM86": ("SM86",),
    "SM87": ("SM86",),   # Jetson Orin (Ampere, no FP8): SM86 has the same tensor precisions
    "SM89": ("SM89",),
    "SM90": ("SM89",),   # Hopper: SM89 is the closest target with FP8, INT8, FP16, BF16, TF32
    "SM120": ("SM120",),
}

_H100_DS = ("NVIDIA H100 Tensor Core GPU Datasheet",
            "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet")
_A100_DS = ("NVIDIA A100 Tensor Core GPU Datasheet",
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
            "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_ORIN_DS = ("NVIDIA Jetson AGX Orin Series Technical Brief",
            "https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/"
            "nvidia-jetson-agx-orin-technical-brief.pdf")
_HALVED = "tensor figures are the datasheet's 'with sparsity' values halved (dense)"
_ORIN_DERIVED = ("GPU only (DLA excluded); INT8 is the published sparse GPU figure halved; "
                 "FP16/BF16 = INT8/2 and TF32 = INT8/4 (Ampere tensor-core ratios)")


@dataclass(frozen=True)
class GPU:
    """One row of the GPU table (throughput in dense TFLOPS/TOPS, bandwidth in GB/s).

    Attributes:
        name: canonical name, e.g. ``"H100-SXM"``.
        aliases: other accepted spellings (matched case-insensitively, ignoring ``-``/``_``/
            spaces).
        sm: compute capability as ``"SM90"``.
        architecture: ``"Hopper"``, ``"Ampere"``...
        fp32_tflops: CUDA-core FP32 rate (element-wise math).
        tf32_tflops: dense TF32 tensor rate, or None.
        fp16_tflops: dense FP16 tensor rate.
        bf16_tflops: dense BF16 tensor rate, or None.
        fp8_tflops: dense FP8 tensor rate, or None (no FP8 before SM89).
        int8_tops: dense INT8 tensor rate.
        bandwidth_gbs: DRAM bandwidth.
        citation: the vendor document the figures come from.
        url: where to read it.
        notes: how the figures were read (sparse halved, accumulate type, derived rates).
        source: ``"datasheet"`` (peaks from the vendor).
        efficiency_source: ``"default"`` (the model's default efficiency curve) or where the
            row's measured caps come from.
        memory_efficiency: measured fraction of ``bandwidth_gbs`` that streaming copies sustain
            on this GPU (``None``: the model's default); used by estimates whose options keep
            the default (:meth:`quantkit.latency.EstimateOptions.for_gpu`).
    """

    name: str
    aliases: tuple[str, ...]
    sm: str
    architecture: str
    fp32_tflops: float
    tf32_tflops: float | None
    fp16_tflops: float
    bf16_tflops: float | None
    fp8_tflops: float | None
    int8_tops: float
    bandwidth_gbs: float
    citation: str
    url: str
    notes: str = ""
    source: str = "datasheet"
    efficiency_source: str = "default"
    memory_efficiency: float | None = None

    @property
    def compute_capability(self) -> str:
        """``"9.0"`` for ``SM90``, ``"12.0"`` for ``SM120``."""
        digits = self.sm[2:]
        return f"{digits[:-1]}.{digits[-1]}"

    @property
    def build_targets(self) -> tuple[str, ...]:
        """TensorRT-RTX compute capabilities to build for, in order of preference."""
        return BUILD_TARGETS[self.sm]

    def supports(self, precision: str) -> bool:
        """Whether the GPU has tensor math for ``precision`` (fp32 always: CUDA cores)."""
        return self.tensor_peak_tflops(precision) is not None

    def tensor_peak_tflops(self, precision: str, *, tf32: bool = True) -> float | None:
        """Dense peak for matrix math (convolutions, GEMMs) in ``precision``.

        ``fp32`` uses the TF32 tensor rate where the GPU has one and ``tf32`` is set (TensorRT
        runs FP32 convolutions and GEMMs on TF32 tensor cores by default), else the CUDA-core
        FP32 rate. ``int4``/``fp4`` are counted at the INT8/FP8 rate (a conservative floor).
        """
        if precision == "fp32":
            return self.tf32_tflops if tf32 and self.tf32_tflops else self.fp32_tflops
        table: dict[str, float | None] = {
            "tf32": self.tf32_tflops, "fp16": self.fp16_tflops, "bf16": self.bf16_tflops,
            "fp8": self.fp8_tflops, "int8": self.int8_tops, "int4": self.int8_tops,
            "fp4": self.fp8_tflops,
        }
        if precision in table:
            return table[precision]
        return self.fp32_tflops  # integer/bool kernels (shape math) run on CUDA cores

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-able dict (with ``compute_capability``)."""
        doc = asdict(self)
        doc["aliases"] = list(self.aliases)
        doc["compute_capability"] = self.compute_capability
        return doc


def _row(name: str, aliases: tuple[str, ...], sm: str, arch: str, fp32: float,
         tf32: float | None, fp16: float, bf16: float | None, fp8: float | None, int8: float,
         bw: float, doc: tuple[str, str], notes: str) -> GPU:
    return GPU(name=name, aliases=aliases, sm=sm, architecture=arch, fp32_tflops=fp32,
               tf32_tflops=tf32, fp16_tflops=fp16, bf16_tflops=bf16, fp8_tflops=fp8,
               int8_tops=int8, bandwidth_gbs=bw, citation=doc[0], url=doc[1], notes=notes)


_TABLE: tuple[GPU, ...] = (
    replace(_row("H100-SXM", ("h100", "h100-sxm5", "h100sxm"), "SM90", "Hopper",
                 67.0, 494.5, 989.5, 989.5, 1979.0, 1979.0, 3350.0, _H100_DS,
                 f"H100 SXM5 80GB; {_HALVED} (TF32 989, FP16/BF16 1979, FP8/INT8 3958)"),
            # measured on an H100 80GB HBM3 SXM (benchmarks/latency/results/h100_sxm_gemm.json):
            # device copies of 512 MiB-2 GiB at 2965-2999 GB/s; the tensor-core GEMMs' 0.69-0.73
            # of peak match the default compute cap, which stays
            memory_efficiency=0.89,
            efficiency_source="measured DRAM cap 0.89 (benchmarks/latency/results/"
                              "h100_sxm_gemm.json); compute cap default, confirmed 0.69-0.73"),
    _row("H100-PCIe", ("h100-pcie", "h100pcie"), "SM90", "Hopper",
         51.0, 378.0, 756.5, 756.5, 1513.0, 1513.0, 2000.0, _H100_DS,
         f"H100 PCIe 80GB; {_HALVED} (TF32 756, FP16/BF16 1513, FP8/INT8 3026)"),
    _row("H200", ("h200-sxm", "h200sxm"), "SM90", "Hopper",
         67.0, 494.5, 989.5, 989.5, 1979.0, 1979.0, 4800.0,
         ("NVIDIA H200 Tensor Core GPU Datasheet", "https://www.nvidia.com/en-us/data-center/h200/"),
         f"H200 SXM 141GB; {_HALVED} (TF32 989, FP16/BF16 1979, FP8/INT8 3958)"),
    _row("A100-SXM", ("a100", "a100-sxm4", "a100sxm", "a100-80gb"), "SM80", "Ampere",
         19.5, 156.0, 312.0, 312.0, None, 624.0, 2039.0, _A100_DS,
         "A100 SXM4 80GB; the datasheet's dense figures (sparse values are twice these)"),
    _row("A100-SXM-40GB", ("a100-40gb", "a100-sxm4-40gb"), "SM80", "Ampere",
         19.5, 156.0, 312.0, 312.0, None, 624.0, 1555.0, _A100_DS,
         "A100 SXM4 40GB: the 80GB card's compute, HBM2 at 1555 GB/s; the datasheet's dense "
         "figures (sparse values are twice these)"),
    _row("A100-PCIe", ("a100-pcie", "a100pcie"), "SM80", "Ampere",
         19.5, 156.0, 312.0, 312.0, None, 624.0, 1935.0, _A100_DS,
         "A100 PCIe 80GB; the datasheet's dense figures (sparse values are twice these)"),
    _row("L40S", ("l40s",), "SM89", "Ada Lovelace",
         91.6, 183.0, 362.05, 362.05, 733.0, 733.0, 864.0,
         ("NVIDIA L40S GPU Datasheet", "https://www.nvidia.com/en-us/data-center/l40s/"),
         "the datasheet's dense figures (sparse values are twice these)"),
    _row("L4", ("l4",), "SM89", "Ada Lovelace",
         30.3, 60.0, 121.0, 121.0, 242.5, 242.5, 300.0,
         ("NVIDIA L4 Tensor Core GPU Datasheet", "https://www.nvidia.com/en-us/data-center/l4/"),
         f"{_HALVED} (TF32 120, FP16/BF16 242, FP8/INT8 485)"),
    _row("A10", ("a10",), "SM86", "Ampere",
         31.2, 62.5, 125.0, 125.0, None, 250.0, 600.0,
         ("NVIDIA A10 Tensor Core GPU Datasheet",
          "https://www.nvidia.com/en-us/data-center/products/a10-gpu/"),
         "the datasheet's dense figures (sparse values are twice these)"),
    _row("T4", ("t4", "tesla-t4"), "SM75", "Turing",
         8.1, None, 65.0, None, None, 130.0, 320.0,
         ("NVIDIA T4 Tensor Core GPU Datasheet",
          "https://www.nvidia.com/en-us/data-center/tesla-t4/"),
         "Turing has no structured sparsity: figures are dense; FP16 is the mixed-precision "
         "(FP16/FP32) tensor rate; no TF32, BF16 or FP8 tensor math"),
    _row("RTX-4090", ("rtx4090", "4090", "geforce-rtx-4090"), "SM89", "Ada Lovelace",
         82.6, 82.6, 165.2, 165.2, 330.3, 660.6, 1008.0,
         ("NVIDIA Ada GPU Architecture whitepaper, appendix A (GeForce RTX 4090)",
          "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/"
          "nvidia-ada-gpu-architecture.pdf"),
         "dense figures; FP16/BF16/FP8 with FP32 accumulate (half the FP16-accumulate rate on "
         "GeForce)"),
    _row("RTX-5090", ("rtx5090", "5090", "geforce-rtx-5090"), "SM120", "Blackwell",
         104.8, 104.8, 209.5, 209.5, 419.0, 838.0, 1792.0,
         ("NVIDIA RTX Blackwell GPU Architecture whitepaper (GeForce RTX 5090)",
          "https://images.nvidia.com/aem-dam/Solutions/geforce/blackwell/"
          "nvidia-rtx-blackwell-gpu-architecture.pdf"),
         "dense figures (sparse FP16 838, FP8/INT8 1676 halved); FP16/BF16/FP8 with FP32 "
         "accumulate, taken as half the FP16-accumulate rate as on the RTX 4090"),
    _row("Jetson-AGX-Orin", ("agx-orin", "orin", "jetson-agx-orin-64gb", "agx-orin-64gb"),
         "SM87", "Ampere",
         5.3, 21.25, 42.5, 42.5, None, 85.0, 204.8, _ORIN_DS,
         f"AGX Orin 64GB at MAXN; {_ORIN_DERIVED} (170 sparse INT8 TOPS)"),
    _row("Jetson-Orin-Nano", ("orin-nano", "orin-nano-super", "jetson-orin-nano-super"),
         "SM87", "Ampere",
         2.09, 8.375, 16.75, 16.75, None, 33.5, 102.0,
         ("NVIDIA Jetson Orin Nano Super Developer Kit datasheet",
          "https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/jetson-orin/"
          "nano-super-developer-kit/"),
         f"Orin Nano 8GB in the 25 W 'Super' mode (JetPack 6.1+); {_ORIN_DERIVED} (67 sparse "
         "INT8 TOPS); FP32 = 1024 CUDA cores x 2 x 1.02 GHz"),
    _row("Jetson-Orin-Nano-15W", ("orin-nano-15w", "orin-nano-original"), "SM87", "Ampere",
         1.28, 5.0, 10.0, 10.0, None, 20.0, 68.0,
         ("NVIDIA Jetson Orin modules: technical specifications (Jetson Orin Nano 8GB)",
          "https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/jetson-orin/"),
         f"Orin Nano 8GB in the original 15 W mode; {_ORIN_DERIVED} (40 sparse INT8 TOPS); "
         "FP32 = 1024 CUDA cores x 2 x 0.625 GHz"),
)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_BY_KEY: dict[str, GPU] = {}
for _gpu in _TABLE:
    for _alias in (_gpu.name, *_gpu.aliases):
        if _key(_alias) in _BY_KEY and _BY_KEY[_key(_alias)] is not _gpu:
            raise RuntimeError(f"GPU alias {_alias!r} is ambiguous")  # a bug in the table
        _BY_KEY[_key(_alias)] = _gpu


def list_gpus() -> list[GPU]:
    """Every row of the GPU table, in table order."""
    return list(_TABLE)


def get_gpu(name: str) -> GPU:
    """The table row for ``name`` (case-insensitive; ``-``, ``_`` and spaces ignored).

    Raises:
        InputError: unknown name; the message lists the known names.
    """
    gpu = _BY_KEY.get(_key(name))
    if gpu is None:
        known = ", ".join(g.name for g in _TABLE)
        raise InputError(f"GPU '{name}': not in quantkit's GPU table. Known GPUs: {known} "
                         "(case-insensitive; aliases such as h100 or rtx4090 work too).")
    return gpu
