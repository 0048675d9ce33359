"""The ``tensorrt`` backend: NVIDIA TensorRT 10 and 11 (module ``tensorrt``, extra ``tensorrt``).

Everything is implemented once in :mod:`quantkit.backends._trt_common`; this module only names
the library and recognises a fake install. Building needs an NVIDIA GPU and driver
(docs/tensorrt_rules.md#building-on-a-cpu-only-machine). TensorRT 10 networks are created
strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``); TensorRT 11 is strongly typed
always.
"""

from __future__ import annotations

import types

from quantkit.backends._trt_common import TrtBackendBase
from quantkit.errors import InputError

__all__ = ["TensorRTBackend"]


class TensorRTBackend(TrtBackendBase):
    """TensorRT 10/11 through the ``tensorrt`` Python module."""

    name = "tensorrt"
    module_name = "tensorrt"
    extra = "tensorrt"
    display_name = "TensorRT"
    rtx = False
    namespace_hint = ("(The 'tensorrt' found is only a folder without the library, e.g. "
                      "tensorrt-stubs.) Or build with TensorRT-RTX, which installs from PyPI: "
                      "pip install 'quantkit[rtx]' and backend='tensorrt-rtx'.")

    def check_module(self, module: types.ModuleType) -> None:
        """Reject a ``tensorrt`` without ``Builder`` (type stubs only) and TensorRT < 10."""
        if not hasattr(module, "Builder"):
            raise self._missing(namespace=True)
        version = str(getattr(module, "__version__", "0"))
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < 10:
            raise InputError(f"quantkit build needs TensorRT 10 or newer; {version} is "
                             "installed. Upgrade: pip install 'quantkit[tensorrt]'.")
