"""Architectures of the published TensorRT measurements, in plain torch, exported to ONNX.

Latency does not depend on weight values, so every model has random weights (fixed seed).
BatchNorm is left out: TensorRT folds it into the preceding convolution, so a conv with a
bias is what the engine runs anyway. The YOLO architectures are in ``yolo.py``. Each builder
returns an ``nn.Module`` in eval mode plus a :class:`Spec` (input names, dtypes and the shape
of one sample, the dynamic axes);
:func:`export` writes the opset-17 ONNX file once per definition (the file name carries a
fingerprint of the architecture arguments) and reuses it afterwards.

torch is a dev dependency: this file lives in ``benchmarks/``, never in ``quantkit/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # run from benchmarks/latency (validate.py, the tests' loader) ...
    from yolo import YOLO11_SCALES, YOLOV8_SCALES, Yolo11, YoloV7, YoloV8
except ModuleNotFoundError:  # ... or imported as benchmarks.latency.models (benchmarks.memory)
    from benchmarks.latency.yolo import YOLO11_SCALES, YOLOV8_SCALES, Yolo11, YoloV7, YoloV8

OPSET = 17


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype name, shape with ``-1`` for dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    #: integer inputs: values are drawn from [0, high)
    high: int = 0


@dataclass(frozen=True)
class Spec:
    """What :func:`export` needs to trace a model and what the driver needs to feed it."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    #: architecture arguments, part of the cache file name
    args: dict[str, Any] = field(default_factory=dict)

    def shapes(self, batch: int, seq: int | None = None) -> dict[str, list[int]]:
        """Concrete input shapes: ``-1`` in axis 0 -> ``batch``, in axis 1 -> ``seq``."""
        out = {}
        for inp in self.inputs:
            dims = [batch if (i == 0 and d == -1) else d for i, d in enumerate(inp.shape)]
            if seq is not None:
                dims = [seq if (i == 1 and d == -1) else d for i, d in enumerate(dims)]
            if any(d == -1 for d in dims):
                raise ValueError(f"input {inp.name}: give a sequence length for {inp.shape}")
            out[inp.name] = dims
        return out


# --------------------------------------------------------------------------- ResNet-50


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * 4
        self.c1 = nn.Conv2d(cin, mid, 1)
        self.c2 = nn.Conv2d(mid, mid, 3, stride, 1)
        self.c3 = nn.Conv2d(mid, cout, 1)
        self.down = (nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout
                     else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y))
        y = self.c3(y)
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
    """torchvision's ResNet-50 v1.5 layout (stride in the 3x3 conv), BN folded."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, 2, 3)
        self.pool = nn.MaxPool2d(3, 2, 1)
        blocks: list[nn.Module] = []
        cin = 64
        for i, n in enumerate(layers):
            mid = 64 * 2 ** i
            for j in range(n):
                blocks.append(_Bottleneck(cin, mid, 2 if (j == 0 and i > 0) else 1))
                cin = mid * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet50(size: int = 224) -> tuple[nn.Module, Spec]:
    """ResNet-50, input ``input`` [N, 3, size, size]."""
    spec = Spec((InputSpec("input", "float32", (-1, 3, size, size)),), ("logits",),
                {"arch": "resnet50", "size": size})
    return ResNet(), spec


# --------------------------------------------------------------------------- BERT


class _EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, hidden = x.shape
        d = hidden // self.heads
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(n, length, hidden)
        x = self.ln1(x + self.out(ctx))
        return self.ln2(x + self.fc2(nn.functional.gelu(self.fc1(x))))


class Bert(nn.Module):
    """BERT encoder with a SQuAD head (start/end logits), the model of NVIDIA's demoBERT."""

    def __init__(self, layers: int, hidden: int, heads: int, vocab: int = 30522,
                 max_len: int = 512) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_len, hidden)
        self.seg = nn.Embedding(2, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(_EncoderLayer(hidden, heads, 4 * hidden)
                                    for _ in range(layers))
        self.qa = nn.Linear(hidden, 2)

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor,
                input_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        pos = torch.arange(length, device=input_ids.device).unsqueeze(0)
        x = self.ln(self.word(input_ids) + self.pos(pos) + self.seg(segment_ids))
        bias = (1.0 - input_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return self.qa(x)


def _bert(name: str, layers: int, hidden: int, heads: int) -> tuple[nn.Module, Spec]:
    spec = Spec((InputSpec("input_ids", "int64", (-1, -1), 30522),
                 InputSpec("segment_ids", "int64", (-1, -1), 2),
                 InputSpec("input_mask", "int64", (-1, -1), 2)),
                ("logits",), {"arch": name, "layers": layers, "hidden": hidden})
    return Bert(layers, hidden, heads), spec


def bert_base() -> tuple[nn.Module, Spec]:
    """BERT-base: 12 layers, hidden 768, 12 heads; inputs [N, L] int64."""
    return _bert("bert_base", 12, 768, 12)


def bert_large() -> tuple[nn.Module, Spec]:
    """BERT-large: 24 layers, hidden 1024, 16 heads; inputs [N, L] int64."""
    return _bert("bert_large", 24, 1024, 16)


# --------------------------------------------------------------------------- YOLO

def yolov8(scale: str = "n", size: int = 640) -> tuple[nn.Module, Spec]:
    """YOLOv8{n,s,m,l,x} detection, input ``images`` [N, 3, size, size]."""
    depth, width, max_ch = YOLOV8_SCALES[scale]
    spec = Spec((InputSpec("images", "float32", (-1, 3, size, size)),), ("output0",),
                {"arch": f"yolov8{scale}", "size": size})
    return YoloV8(depth, width, max_ch, size=size), spec

def yolo11(scale: str = "n", size: int = 640) -> tuple[nn.Module, Spec]:
    """YOLO11{n,s,m,l,x} detection, input ``images`` [N, 3, size, size]."""
    depth, width, max_ch = YOLO11_SCALES[scale]
    spec = Spec((InputSpec("images", "float32", (-1, 3, size, size)),), ("output0",),
                {"arch": f"yolo11{scale}", "size": size})
    return Yolo11(depth, width, max_ch, c3k_all=scale in "mlx", size=size), spec



def yolov7(size: int = 640) -> tuple[nn.Module, Spec]:
    """YOLOv7 detection (deployed form), input ``images`` [N, 3, size, size]."""
    spec = Spec((InputSpec("images", "float32", (-1, 3, size, size)),), ("output0",),
                {"arch": "yolov7", "size": size})
    return YoloV7(), spec


# --------------------------------------------------------------------------- registry

BUILDERS: dict[str, Callable[[], tuple[nn.Module, Spec]]] = {
    "resnet50": resnet50,
    "bert_base": bert_base,
    "bert_large": bert_large,
    "yolov8n": lambda: yolov8("n"),
    "yolov8s": lambda: yolov8("s"),
    "yolo11n": lambda: yolo11("n"),
    "yolo11s": lambda: yolo11("s"),
    "yolo11m": lambda: yolo11("m"),
    "yolo11l": lambda: yolo11("l"),
    "yolov7": yolov7,
}


def build(name: str) -> tuple[nn.Module, Spec]:
    """The random-weight model ``name`` (a key of :data:`BUILDERS`) in eval mode."""
    if name not in BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(BUILDERS))}")
    torch.manual_seed(0)
    model, spec = BUILDERS[name]()
    return model.eval(), spec


def fingerprint(name: str, spec: Spec) -> str:
    """Short hash of the architecture arguments and this file (a changed builder re-exports)."""
    h = hashlib.sha256(json.dumps([name, asdict(spec), OPSET], sort_keys=True).encode())
    for source in (Path(__file__), Path(__file__).with_name("yolo.py")):
        h.update(source.read_bytes())
    return h.hexdigest()[:10]


def export(name: str, cache_dir: str | os.PathLike[str], *, batch: int = 1,
           seq: int = 16) -> tuple[Path, Spec]:
    """Export model ``name`` to ``cache_dir/<name>-<fingerprint>.onnx`` unless it exists.

    Axis 0 (batch) and, for sequence models, axis 1 are dynamic; ``batch`` / ``seq`` only
    size the tracing sample. The file is written under a temporary name and renamed.
    """
    model, spec = build(name)
    path = Path(cache_dir) / f"{name}-{fingerprint(name, spec)}.onnx"
    if not path.exists():
        export_module(model, spec, path, batch=batch, seq=seq)
    return path, spec


def export_module(model: nn.Module, spec: Spec, path: Path, *, batch: int = 1,
                  seq: int = 16) -> None:
    """Trace ``model`` with zero inputs of ``spec`` and write ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = spec.shapes(batch, seq)
    args = tuple(torch.zeros(shapes[i.name], dtype=getattr(torch, i.dtype))
                 for i in spec.inputs)
    axes: dict[str, dict[int, str]] = {}
    for inp in spec.inputs:
        axes[inp.name] = {i: ("N" if i == 0 else "L") for i, d in enumerate(inp.shape) if d == -1}
    for out in spec.outputs:
        axes[out] = {0: "N"}
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, args, str(tmp), input_names=[i.name for i in spec.inputs],
                          output_names=list(spec.outputs), opset_version=OPSET,
                          dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)
