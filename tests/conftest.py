from __future__ import annotations

import importlib.util
import os

import pytest


def _gpu_available() -> bool:
    if importlib.util.find_spec("cuda") is None and importlib.util.find_spec("pycuda") is None:
        return False
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a driver and cuda-python/pycuda")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
