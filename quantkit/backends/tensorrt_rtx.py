"""The ``tensorrt-rtx`` backend: TensorRT-RTX (module ``tensorrt_rtx_bindings``, extra ``rtx``).

Everything is implemented once in :mod:`quantkit.backends._trt_common`; this module only names
the library. TensorRT-RTX is strongly typed only and builds engines ahead of time without a GPU;
with no ``--compute-capability`` the engine is portable across the GPUs it supports (compute
capability 8.0, 8.6, 8.9, 12.x; not 9.0 = H100/H200). Engines only run on such a GPU
(docs/tensorrt_rules.md#running-engines, docs/tensorrt_rules.md#building-on-a-cpu-only-machine).
Timing caches are a no-op in TensorRT-RTX (it compiles kernels for the GPU at run time).
"""

from __future__ import annotations

from quantkit.backends._trt_common import TrtBackendBase

__all__ = ["TensorRTRTXBackend"]


class TensorRTRTXBackend(TrtBackendBase):
    """TensorRT-RTX through the ``tensorrt_rtx_bindings`` Python module."""

    name = "tensorrt-rtx"
    module_name = "tensorrt_rtx_bindings"
    extra = "rtx"
    display_name = "TensorRT-RTX"
    rtx = True
