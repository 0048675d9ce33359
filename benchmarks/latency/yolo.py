"""YOLO detection architectures (ultralytics YOLOv8 / YOLO11, YOLOv7) in plain torch.

As deployed: BatchNorm folded into the convolutions (a conv with a bias), YOLOv7's RepConv
fused to one 3x3 conv; random weights. Parameter counts match the reference model summaries to
within the folded BatchNorm parameters (tests/latency/test_published_points.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

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

    anchors: torch.Tensor  # buffers registered in __init__
    strides: torch.Tensor

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
        box, cls = torch.split(x, [4 * self.reg, self.nc], dim=1)
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


YOLOV8_SCALES = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768),
                  "l": (1.00, 1.00, 512), "x": (1.00, 1.25, 512)}




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


YOLO11_SCALES = {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512),
                  "l": (1.00, 1.00, 512), "x": (1.00, 1.50, 512)}


# --------------------------------------------------------------------------- YOLOv7


class _ELAN(nn.Module):
    """YOLOv7's ELAN block: two 1x1 branches, a chain of 3x3 convs, concat of taps, 1x1 out.

    ``taps`` are the chain outputs concatenated (by index, 0 = the first 1x1 branch output
    after its convs ... as in yolov7.yaml's ``[-1, -3, -5, -6]`` / ``[-1, -2, ..., -6]``).
    """

    def __init__(self, cin: int, c1x1: int, c3x3: int, cout: int, wide: bool) -> None:
        super().__init__()
        self.a, self.b = _Conv(cin, c1x1), _Conv(cin, c1x1)
        self.chain = nn.ModuleList(_Conv(c1x1 if i == 0 else c3x3, c3x3, 3) for i in range(4))
        self.wide = wide  # head ELAN: every chain output is concatenated
        taps = 2 * c1x1 + (4 if wide else 2) * c3x3
        self.out = _Conv(taps, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        ys = [b]
        for conv in self.chain:
            ys.append(conv(ys[-1]))
        # backbone: [-1, -3, -5, -6] = chain[3], chain[1], b, a; head: all six
        picked = ys[::-1] if self.wide else [ys[4], ys[2], ys[0]]
        return self.out(torch.cat([*picked, a], 1))


class _MPDown(nn.Module):
    """YOLOv7's downsample: maxpool + 1x1 branch concatenated with a 1x1 + strided 3x3 branch."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.pool_conv, self.conv1 = _Conv(cin, c), _Conv(cin, c)
        self.conv2 = _Conv(c, c, 3, 2)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.conv2(self.conv1(x)), self.pool_conv(self.pool(x))]
        return torch.cat(parts + ([extra] if extra is not None else []), 1)


class _SPPCSPC(nn.Module):
    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = _Conv(cin, c), _Conv(cin, c)
        self.cv3, self.cv4 = _Conv(c, c, 3), _Conv(c, c)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv5, self.cv6, self.cv7 = _Conv(4 * c, c), _Conv(c, c, 3), _Conv(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1, *(p(x1) for p in self.pools)], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class YoloV7(nn.Module):
    """YOLOv7 (``yolov7.yaml``) as deployed: RepConv fused to one 3x3 conv, BN folded."""

    def __init__(self, nc: int = 80, anchors: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(_Conv(3, 32, 3), _Conv(32, 64, 3, 2), _Conv(64, 64, 3),
                                  _Conv(64, 128, 3, 2))
        self.e1 = _ELAN(128, 64, 64, 256, False)
        self.d2, self.e2 = _MPDown(256, 128), _ELAN(256, 128, 128, 512, False)
        self.d3, self.e3 = _MPDown(512, 256), _ELAN(512, 256, 256, 1024, False)
        self.d4, self.e4 = _MPDown(1024, 512), _ELAN(1024, 256, 256, 1024, False)
        self.spp = _SPPCSPC(1024, 512)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.l52, self.l54 = _Conv(512, 256), _Conv(1024, 256)
        self.h63 = _ELAN(512, 256, 128, 256, True)
        self.l64, self.l66 = _Conv(256, 128), _Conv(512, 128)
        self.h75 = _ELAN(256, 128, 64, 128, True)
        self.d76, self.h88 = _MPDown(128, 128), _ELAN(512, 256, 128, 256, True)
        self.d89, self.h101 = _MPDown(256, 256), _ELAN(1024, 512, 256, 512, True)
        self.rep = nn.ModuleList(_Conv(c, 2 * c, 3) for c in (128, 256, 512))
        self.heads = nn.ModuleList(nn.Conv2d(2 * c, anchors * (nc + 5), 1) for c in (128, 256, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.e2(self.d2(self.e1(self.stem(x))))
        p4 = self.e3(self.d3(p3))
        p5 = self.spp(self.e4(self.d4(p4)))
        h63 = self.h63(torch.cat((self.l54(p4), self.up(self.l52(p5))), 1))
        h75 = self.h75(torch.cat((self.l66(p3), self.up(self.l64(h63))), 1))
        h88 = self.h88(self.d76(h75, h63))
        h101 = self.h101(self.d89(h88, p5))
        outs = [head(rep(f)).flatten(2) for f, rep, head in
                zip((h75, h88, h101), self.rep, self.heads, strict=True)]
        return torch.cat(outs, 2).sigmoid()
