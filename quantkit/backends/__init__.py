"""Engine backends: TensorRT 10/11 (``tensorrt``) and TensorRT-RTX (``tensorrt-rtx``).

Importing this package imports neither library; a backend imports its library the first time it
is used::

    from quantkit.backends import BuildOptions, get_backend

    backend = get_backend("tensorrt-rtx")
    result = backend.build("model.qdq.onnx", "model.engine",
                           BuildOptions(shapes={"x": (8, 3, 224, 224)}))
    result.sidecar["layers"]       # per-layer precision of the parsed network

See ``docs/backends.md``.
"""

from __future__ import annotations

from quantkit.backends.base import (
    Backend,
    BuildOptions,
    BuildResult,
    LatencyStats,
    NoBackendError,
    Runner,
    ShapeRange,
    backend_names,
    default_backend_name,
    get_backend,
    parse_shapes,
    register_backend,
    resolve_profile,
)
from quantkit.backends.sidecar import read_sidecar, sidecar_path

__all__ = [
    "Backend",
    "BuildOptions",
    "BuildResult",
    "LatencyStats",
    "NoBackendError",
    "Runner",
    "ShapeRange",
    "backend_names",
    "default_backend_name",
    "get_backend",
    "parse_shapes",
    "read_sidecar",
    "register_backend",
    "resolve_profile",
    "sidecar_path",
]
