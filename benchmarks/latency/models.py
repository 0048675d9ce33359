"""Architectures of the published TensorRT measurements, in plain torch, exported to ONNX.

Latency does not depend on weight values, so every model has random weights (fixed seed).
BatchNorm is left out: TensorRT folds it into the preceding convolution, so a conv with a
bias is what the engine runs anyway. Each builder returns an ``nn.Module`` in eval mode plus a
:class:`Spec` (input names, dtypes and the shape of one sample, the dynamic axes);
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


# --------------------------------------------------------------------------- YOLOv8


class _Conv(nn.Module):
    """Conv + (folded BN) + SiLU, ultralytics' ``Conv`` (``act=False``: no SiLU)."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=g)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return nn.functional.silu(y) if self.act else y


class _YoloBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool, e: float = 1.0) -> None:
        super().__init__()
        self.cv1 = _Conv(c, int(c * e), 3)
        self.cv2 = _Conv(int(c * e), c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class _C3k(nn.Module):
    """YOLO11's ``C3k``: a CSP block of ``n`` bottlenecks (e=1.0) on half the channels."""

    def __init__(self, cin: int, cout: int, n: int = 2) -> None:
        super().__init__()
        c = cout // 2
        self.cv1, self.cv2 = _Conv(cin, c), _Conv(cin, c)
        self.m = nn.Sequential(*(_YoloBottleneck(c, True) for _ in range(n)))
        self.cv3 = _Conv(2 * c, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class _C2f(nn.Module):
    """YOLOv8's ``C2f``; with ``c3k`` set, YOLO11's ``C3k2`` (``e`` = hidden fraction)."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool, *,
                 c3k: bool | None = None, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(cout * e)
        self.cv1 = _Conv(cin, 2 * self.c)
        inner: Callable[[], nn.Module]
        if c3k is None:  # C2f: full-width bottlenecks
            inner = lambda: _YoloBottleneck(self.c, shortcut)  # noqa: E731
        elif c3k:
            inner = lambda: _C3k(self.c, self.c)  # noqa: E731
        else:  # C3k2 without C3k: bottlenecks of half width
            inner = lambda: _YoloBottleneck(self.c, shortcut, e=0.5)  # noqa: E731
        self.m = nn.ModuleList(inner() for _ in range(n))
        self.cv2 = _Conv((2 + n) * self.c, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class _SPPF(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        c = cin // 2
        self.cv1 = _Conv(cin, c)
        self.cv2 = _Conv(4 * c, cout)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class _Detect(nn.Module):
    """Ultralytics' ``Detect`` head with the DFL box decode of its ONNX export."""

    def __init__(self, nc: int, ch: Sequence[int], size: int, *, dw_cls: bool = False) -> None:
        super().__init__()
        self.nc, self.reg = nc, 16
        c2, c3 = max(16, ch[0] // 4, 4 * self.reg), max(ch[0], min(nc, 100))
        self.box = nn.ModuleList(nn.Sequential(_Conv(c, c2, 3), _Conv(c2, c2, 3),
                                               nn.Conv2d(c2, 4 * self.reg, 1)) for c in ch)
        if dw_cls:  # YOLO11: depthwise 3x3 + pointwise pairs in the class branch
            self.cls = nn.ModuleList(nn.Sequential(
                _Conv(c, c, 3, g=c), _Conv(c, c3), _Conv(c3, c3, 3, g=c3), _Conv(c3, c3),
                nn.Conv2d(c3, nc, 1)) for c in ch)
        else:
            self.cls = nn.ModuleList(nn.Sequential(_Conv(c, c3, 3), _Conv(c3, c3, 3),
                                                   nn.Conv2d(c3, nc, 1)) for c in ch)
        self.dfl = nn.Conv2d(self.reg, 1, 1, bias=False)
        self.dfl.weight.data[:] = torch.arange(self.reg, dtype=torch.float32).view(1, -1, 1, 1)
        anchors, strides = [], []
        for stride in (8, 16, 32):
            g = size // stride
            ys, xs = torch.meshgrid(torch.arange(g) + 0.5, torch.arange(g) + 0.5, indexing="ij")
            anchors.append(torch.stack((xs, ys), 0).reshape(2, -1))
            strides.append(torch.full((1, g * g), float(stride)))
        self.register_buffer("anchors", torch.cat(anchors, 1).unsqueeze(0))
        self.register_buffer("strides", torch.cat(strides, 1).unsqueeze(0))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        n = feats[0].shape[0]
        x = torch.cat([torch.cat((b(f), c(f)), 1).flatten(2)
                       for f, b, c in zip(feats, self.box, self.cls, strict=True)], 2)
        box, cls = x.split((4 * self.reg, self.nc), 1)
        a = box.shape[2]
        dist = self.dfl(box.view(n, 4, self.reg, a).transpose(2, 1).softmax(1)).view(n, 4, a)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        return torch.cat((xywh, cls.sigmoid()), 1)


class YoloV8(nn.Module):
    """YOLOv8 detection model (ultralytics ``yolov8.yaml``) at a depth/width multiple."""

    def __init__(self, depth: float, width: float, max_ch: int, nc: int = 80,
                 size: int = 640) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return int(math.ceil(min(c, max_ch) * width / 8) * 8)

        def rep(n: int) -> int:
            return max(round(n * depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        self.b0, self.b1 = _Conv(3, c1, 3, 2), _Conv(c1, c2, 3, 2)
        self.b2 = _C2f(c2, c2, rep(3), True)
        self.b3, self.b4 = _Conv(c2, c3, 3, 2), _C2f(c3, c3, rep(6), True)
        self.b5, self.b6 = _Conv(c3, c4, 3, 2), _C2f(c4, c4, rep(6), True)
        self.b7, self.b8 = _Conv(c4, c5, 3, 2), _C2f(c5, c5, rep(3), True)
        self.b9 = _SPPF(c5, c5)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.h12 = _C2f(c5 + c4, c4, rep(3), False)
        self.h15 = _C2f(c4 + c3, c3, rep(3), False)
        self.h16, self.h18 = _Conv(c3, c3, 3, 2), _C2f(c3 + c4, c4, rep(3), False)
        self.h19, self.h21 = _Conv(c4, c4, 3, 2), _C2f(c4 + c5, c5, rep(3), False)
        self.detect = _Detect(nc, (c3, c4, c5), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h12 = self.h12(torch.cat((self.up(p5), p4), 1))
        h15 = self.h15(torch.cat((self.up(h12), p3), 1))
        h18 = self.h18(torch.cat((self.h16(h15), h12), 1))
        h21 = self.h21(torch.cat((self.h19(h18), p5), 1))
        return self.detect([h15, h18, h21])


_YOLOV8_SCALES = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768),
                  "l": (1.00, 1.00, 512), "x": (1.00, 1.25, 512)}


def yolov8(scale: str = "n", size: int = 640) -> tuple[nn.Module, Spec]:
    """YOLOv8{n,s,m,l,x} detection, input ``images`` [N, 3, size, size]."""
    depth, width, max_ch = _YOLOV8_SCALES[scale]
    spec = Spec((InputSpec("images", "float32", (-1, 3, size, size)),), ("output0",),
                {"arch": f"yolov8{scale}", "size": size})
    return YoloV8(depth, width, max_ch, size=size), spec


# --------------------------------------------------------------------------- YOLO11


class _Attention(nn.Module):
    """YOLO11's position-sensitive attention over the H*W positions of a feature map."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.kd = self.hd // 2
        self.qkv = _Conv(dim, dim + 2 * self.kd * heads, act=False)
        self.proj = _Conv(dim, dim, act=False)
        self.pe = _Conv(dim, dim, 3, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.heads, 2 * self.kd + self.hd, h * w).split(
            [self.kd, self.kd, self.hd], dim=2)
        att = ((q.transpose(-2, -1) @ k) * self.kd ** -0.5).softmax(dim=-1)
        y = (v @ att.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(y)


class _C2PSA(nn.Module):
    def __init__(self, c1: int, n: int) -> None:
        super().__init__()
        self.c = c1 // 2
        self.cv1, self.cv2 = _Conv(c1, 2 * self.c), _Conv(2 * self.c, c1)
        self.attn = nn.ModuleList(_Attention(self.c, self.c // 64) for _ in range(n))
        self.ffn = nn.ModuleList(nn.Sequential(_Conv(self.c, 2 * self.c),
                                               _Conv(2 * self.c, self.c, act=False))
                                 for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), 1)
        for attn, ffn in zip(self.attn, self.ffn, strict=True):
            b = b + attn(b)
            b = b + ffn(b)
        return self.cv2(torch.cat((a, b), 1))


class Yolo11(nn.Module):
    """YOLO11 detection model (ultralytics ``yolo11.yaml``) at a depth/width multiple."""

    def __init__(self, depth: float, width: float, max_ch: int, c3k_all: bool, nc: int = 80,
                 size: int = 640) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return int(math.ceil(min(c, max_ch) * width / 8) * 8)

        n = max(round(2 * depth), 1)
        c64, c128, c256, c512, c1024 = ch(64), ch(128), ch(256), ch(512), ch(1024)

        def c3k2(cin: int, cout: int, c3k: bool, e: float = 0.5) -> _C2f:
            return _C2f(cin, cout, n, True, c3k=c3k or c3k_all, e=e)

        self.b0, self.b1 = _Conv(3, c64, 3, 2), _Conv(c64, c128, 3, 2)
        self.b2 = c3k2(c128, c256, False, 0.25)
        self.b3, self.b4 = _Conv(c256, c256, 3, 2), c3k2(c256, c512, False, 0.25)
        self.b5, self.b6 = _Conv(c512, c512, 3, 2), c3k2(c512, c512, True)
        self.b7, self.b8 = _Conv(c512, c1024, 3, 2), c3k2(c1024, c1024, True)
        self.b9, self.b10 = _SPPF(c1024, c1024), _C2PSA(c1024, n)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.h13 = c3k2(c1024 + c512, c512, False)
        self.h16 = c3k2(c512 + c512, c256, False)
        self.h17, self.h19 = _Conv(c256, c256, 3, 2), c3k2(c256 + c512, c512, False)
        self.h20, self.h22 = _Conv(c512, c512, 3, 2), c3k2(c512 + c1024, c1024, True)
        self.detect = _Detect(nc, (c256, c512, c1024), size, dw_cls=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b10(self.b9(self.b8(self.b7(p4))))
        h13 = self.h13(torch.cat((self.up(p5), p4), 1))
        h16 = self.h16(torch.cat((self.up(h13), p3), 1))
        h19 = self.h19(torch.cat((self.h17(h16), h13), 1))
        h22 = self.h22(torch.cat((self.h20(h19), p5), 1))
        return self.detect([h16, h19, h22])


_YOLO11_SCALES = {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512),
                  "l": (1.00, 1.00, 512), "x": (1.00, 1.50, 512)}


def yolo11(scale: str = "n", size: int = 640) -> tuple[nn.Module, Spec]:
    """YOLO11{n,s,m,l,x} detection, input ``images`` [N, 3, size, size]."""
    depth, width, max_ch = _YOLO11_SCALES[scale]
    spec = Spec((InputSpec("images", "float32", (-1, 3, size, size)),), ("output0",),
                {"arch": f"yolo11{scale}", "size": size})
    return Yolo11(depth, width, max_ch, c3k_all=scale in "mlx", size=size), spec


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
    h.update(Path(__file__).read_bytes())
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
