"""Cached ONNX exports of the recipes' torch models.

An export is keyed by a fingerprint of the defining module and the weights file, written once
under a temporary name, its constant arithmetic folded with ONNX Runtime's basic (standard-ONNX)
optimisations, and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path


def export_fingerprint(module_file: str, weights: Path, tag: str) -> str:
    """Cache key of an export: changes with the weights file or the defining module."""
    h = hashlib.sha256()
    h.update(Path(module_file).read_bytes())
    h.update(f"{weights.stat().st_size}:{tag}".encode())
    return h.hexdigest()[:16]


def export_once(out: Path, trace: Callable[[Path], None]) -> Path:
    """Return ``out``, exporting it first if it is missing.

    ``trace(raw)`` writes the exporter's model, whose constants are then folded
    (:func:`fold_constants`). The file is written under a temporary name and renamed, so an
    interrupted export never leaves a truncated model behind.
    """
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(f".{os.getpid()}.raw.onnx")
    tmp = out.with_suffix(f".{os.getpid()}.tmp.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            trace(raw)
        fold_constants(raw, tmp)
        os.replace(tmp, out)
    finally:
        for leftover in (raw, tmp):
            leftover.unlink(missing_ok=True)
    return out


def fold_constants(src: Path, dst: Path) -> None:
    """Fold the exporter's constant ``pads`` arithmetic into initializers.

    The TorchScript exporter cannot fold the reversed pad list it builds for each ``Pad``
    (``Slice`` with step -1, ~7 nodes per Pad). ONNX Runtime's *basic* graph optimisations
    are standard-ONNX rewrites (constant folding, redundant node removal; no fusions into
    contrib ops), so its output is a plain opset-17 model: ``Conv``, ``Clip`` (ReLU6),
    ``Pad``, ``Add``, ``GlobalAveragePool``, ``Flatten``, ``Gemm``. The opset imports that
    ONNX Runtime adds for its own domains are dropped again.
    """
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    model = onnx.load(str(dst))
    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.producer_name = "quantkit-recipes (torch.onnx + constant folding)"
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


__all__ = ["export_fingerprint", "export_once", "fold_constants"]
