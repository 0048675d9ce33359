"""ONNX Runtime backend: runs FP32, FP16 and Q/DQ models (Q/DQ as fake quantisation).

There is no build step: the ``.onnx`` file is what runs. On CPU this gives accuracy for every
precision configuration and CPU latency; the CUDA execution provider is used when present.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.backends.base import BuildOptions, BuildResult, LatencyStats, StatusCallback
from quantkit.errors import InputError, PipelineError


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class OrtRunner:
    """An ONNX Runtime session with the :class:`~quantkit.backends.base.Runner` interface.

    Args:
        model: path of the ONNX model, or the serialized model (bytes).
        providers: execution providers (default: CUDA when available, else CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
        name: how messages name the model (default: its path; ``the model`` for bytes).
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, *,
                 providers: Sequence[str] | None = None, threads: int | None = None,
                 name: str | None = None) -> None:
        from quantkit._ort import session

        payload: str | bytes
        if isinstance(model, bytes):
            self.model, payload = Path("<in memory>"), model
        else:
            self.model = Path(model)
            payload = str(self.model)
        #: how messages name the model
        self.name = name or ("the model" if isinstance(model, bytes) else str(self.model))
        try:
            self._session = session(payload, providers=providers, threads=threads)
        except Exception as err:
            raise InputError(f"{self.name}: ONNX Runtime cannot load the model: {err}") from err
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """Execution providers in use."""
        return list(self._session.get_providers())

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns ``{output name: array}``."""
        try:
            values = self._session.run(self.output_names,
                                       {n: feeds[n] for n in self.input_names})
        except KeyError as err:
            raise InputError(f"{self.name}: no data for input {err}.") from None
        except Exception as err:
            raise PipelineError(f"{self.name}: ONNX Runtime failed: {err}") from err
        return dict(zip(self.output_names, values, strict=True))

    __call__ = infer

    def latency(self, feeds: Mapping[str, np.ndarray], *, warmup: int = 10,
                iterations: int = 100) -> LatencyStats:
        """Host-timed latency of :meth:`infer` (``time.perf_counter``)."""
        from quantkit.backends.timing import measure

        batch = max((int(a.shape[0]) for a in feeds.values() if a.ndim), default=1)
        return measure(lambda: self.infer(feeds), batch_size=batch, warmup=warmup,
                       iterations=iterations)

    def close(self) -> None:
        """Drop the session."""
        self._session = None

    def describe(self) -> dict[str, Any]:
        """Backend, version, providers and device."""
        import onnxruntime as ort

        gpu = "CUDAExecutionProvider" in self.providers
        return {"backend": "onnxruntime", "backend_version": ort.__version__,
                "providers": self.providers,
                "device": "CUDA GPU" if gpu else f"CPU: {cpu_name()} ({os.cpu_count()} cores)"}


class OnnxRuntimeBackend:
    """The ``onnxruntime`` backend (no build step)."""

    name = "onnxruntime"

    def available(self) -> bool:
        """ONNX Runtime is a core dependency: always true when quantkit is installed."""
        import importlib.util

        return importlib.util.find_spec("onnxruntime") is not None

    def version(self) -> str | None:
        """ONNX Runtime's version."""
        import onnxruntime as ort

        return str(ort.__version__)

    def build(self, model: str | os.PathLike[str], output: str | os.PathLike[str],
              options: BuildOptions | None = None, *,
              status: StatusCallback | None = None) -> BuildResult:
        """ONNX Runtime runs the ``.onnx`` directly; there is nothing to build."""
        raise InputError("backend='onnxruntime' has no build step: run the .onnx model "
                         "directly (OrtRunner, or quantkit eval MODEL.onnx).")

    def runner(self, engine: str | os.PathLike[str], **kwargs: Any) -> OrtRunner:
        """An :class:`OrtRunner` for the ``.onnx`` file ``engine``."""
        return OrtRunner(engine, **kwargs)

    def describe(self) -> dict[str, Any]:
        """Name, version and available providers."""
        import onnxruntime as ort

        return {"name": self.name, "module": "onnxruntime", "available": True,
                "version": ort.__version__, "providers": ort.get_available_providers()}
