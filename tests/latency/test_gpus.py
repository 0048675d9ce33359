"""The GPU table: schema, units, citations, names, precision features per architecture."""

from __future__ import annotations

import math

import pytest

from quantkit.errors import InputError
from quantkit.latency import get_gpu, list_gpus
from quantkit.latency.gpus import BUILD_TARGETS

REQUIRED = ("H100-SXM", "H100-PCIe", "H200", "A100-SXM", "A100-PCIe", "L40S", "L4", "A10", "T4",
            "RTX-4090", "RTX-5090", "Jetson-AGX-Orin", "Jetson-Orin-Nano")
#: first SM with FP8 / TF32+BF16 tensor math
FP8_FROM, TF32_FROM = 89, 80


def _sm(gpu_sm: str) -> int:
    return int(gpu_sm[2:])


def test_required_rows_present() -> None:
    names = {g.name for g in list_gpus()}
    assert set(REQUIRED) <= names


def test_every_row_complete_and_positive() -> None:
    for g in list_gpus():
        for field in ("fp32_tflops", "fp16_tflops", "int8_tops", "bandwidth_gbs"):
            value = getattr(g, field)
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (g.name, field)
        for field in ("tf32_tflops", "bf16_tflops", "fp8_tflops"):
            value = getattr(g, field)
            assert value is None or value > 0, (g.name, field)
        assert g.url.startswith("https://") and "nvidia.com" in g.url, g.name
        assert g.citation and g.notes, g.name
        assert g.source == "datasheet"
        # a measured cap says where it was measured; rows without one use the model's default
        assert (g.efficiency_source == "default") == (g.memory_efficiency is None), g.name
        assert g.memory_efficiency is None or 0.5 < g.memory_efficiency <= 1, g.name
        assert g.sm in BUILD_TARGETS, g.name
        # every tensor-core generation listed: INT8 at least the FP16 rate, FP16 tensor math
        # faster than the CUDA cores' FP32
        assert g.int8_tops >= g.fp16_tflops > g.fp32_tflops, g.name


def test_precision_features_follow_the_architecture() -> None:
    for g in list_gpus():
        sm = _sm(g.sm)
        assert (g.fp8_tflops is not None) == (sm >= FP8_FROM), g.name
        assert (g.tf32_tflops is not None) == (sm >= TF32_FROM), g.name
        assert (g.bf16_tflops is not None) == (sm >= TF32_FROM), g.name
        assert g.supports("int8") and g.supports("fp16") and g.supports("fp32")
        assert g.supports("fp8") == (sm >= FP8_FROM)


def test_names_unique_case_insensitively_and_aliases_resolve() -> None:
    keys = [g.name.lower() for g in list_gpus()]
    assert len(keys) == len(set(keys))
    for g in list_gpus():
        assert get_gpu(g.name.upper()) is g and get_gpu(g.name.lower()) is g
        for alias in g.aliases:
            assert get_gpu(alias) is g
    assert get_gpu("h100").name == "H100-SXM"
    assert get_gpu("H100 SXM5").name == "H100-SXM"
    assert get_gpu("rtx4090").name == "RTX-4090"
    assert get_gpu("a100_pcie").name == "A100-PCIe"


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(InputError) as err:
        get_gpu("V100")
    assert "V100" in str(err.value) and "H100-SXM" in str(err.value) and "L4" in str(err.value)


def test_datasheet_figures_spot_checks() -> None:
    """A few figures read off the vendor documents by hand (dense = sparse / 2)."""
    h100 = get_gpu("H100-SXM")
    assert (h100.fp16_tflops, h100.int8_tops, h100.bandwidth_gbs) == (1979 / 2, 3958 / 2, 3350)
    l4 = get_gpu("L4")
    assert (l4.fp16_tflops, l4.fp8_tflops, l4.bandwidth_gbs) == (242 / 2, 485 / 2, 300)
    a100 = get_gpu("A100-SXM")
    assert (a100.tf32_tflops, a100.fp16_tflops, a100.int8_tops) == (156, 312, 624)
    t4 = get_gpu("T4")
    assert (t4.fp16_tflops, t4.int8_tops, t4.bandwidth_gbs) == (65, 130, 320)
    orin = get_gpu("Jetson-AGX-Orin")
    assert orin.int8_tops == 170 / 2 and orin.bandwidth_gbs == 204.8


def test_tensor_peak_per_precision() -> None:
    a100, t4 = get_gpu("A100-SXM"), get_gpu("T4")
    assert a100.tensor_peak_tflops("fp32") == 156  # TF32 tensor cores
    assert a100.tensor_peak_tflops("fp32", tf32=False) == 19.5
    assert t4.tensor_peak_tflops("fp32") == 8.1  # no TF32 on Turing
    assert a100.tensor_peak_tflops("fp8") is None
    assert get_gpu("L4").tensor_peak_tflops("fp8") == 242.5


def test_build_targets_are_tensorrt_rtx_targets() -> None:
    targets = {t for ts in BUILD_TARGETS.values() for t in ts}
    assert targets <= {"SM75", "SM80", "SM86", "SM89", "SM120", "SM121"}
    assert get_gpu("H100").build_targets == ("SM89",)  # FP8-capable, SM90 not targetable
    assert get_gpu("Jetson-AGX-Orin").build_targets == ("SM86",)
    # every target keeps the GPU's FP8 feature: no FP8 GPU builds for a pre-Ada target
    for g in list_gpus():
        for t in g.build_targets:
            assert (_sm(t) >= FP8_FROM) == (g.fp8_tflops is not None), (g.name, t)
