"""The three models of ``run.py``, written to ONNX when the benchmark starts (no downloads).

* ``small``: 4 x (Conv 3x3, 32 channels, + ReLU) at 3x32x32, global pool, a 10-way Gemm;
* ``resnet18``: the ResNet-18 topology (torchvision's layout: 7x7/2 stem, max-pool, four stages
  of two basic blocks, BatchNorm, global pool, FC 1000), random weights, exported by
  ``torch.onnx.export`` (BatchNorm folded by the exporter);
* ``vit_b16``: a ViT-B/16-sized encoder (16x16 patches of 224x224, 12 layers, width 768, 12
  heads, MLP 3072, pre-norm, class token, erf GELU), random weights, exported the same way.

torch is needed for the last two (it is not a quantkit dependency; the benchmark skips them
without it). torchvision's own builders are not used: its wheels must match the torch build.
Each function runs in a child process of ``run.py`` so that torch never enters a measured one.
"""

from __future__ import annotations

from pathlib import Path


def small(path: Path) -> None:
    """4 x Conv(32) + ReLU at 3x32x32, built with onnx.helper."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x, cin = [], [], "input", 3
    for i in range(4):
        w = (rng.standard_normal((32, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (rng.standard_normal(32) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}")]
        x, cin = f"relu{i}", 32
    inits += [numpy_helper.from_array((rng.standard_normal((10, 32)) * 0.2).astype(np.float32),
                                      "fc_w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc",
                               transB=1)]
    graph = helper.make_graph(
        nodes, "small4conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _export(module: object, shape: tuple[int, ...], path: Path) -> None:
    import torch

    module.eval()  # type: ignore[attr-defined]
    torch.manual_seed(0)
    with torch.no_grad():
        torch.onnx.export(module, (torch.randn(1, *shape),), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          opset_version=17, do_constant_folding=True)


def resnet18(path: Path) -> None:
    """ResNet-18 (random weights) exported to ONNX."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512)):
        layers += [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    _export(nn.Sequential(*layers), (3, 224, 224), path)


def vit_b16(path: Path) -> None:
    """A ViT-B/16-sized encoder (random weights) exported to ONNX."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    width, heads, depth, tokens = 768, 12, 12, 197

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            q, k, v = self.qkv(x).reshape(n, tokens, 3, heads, width // heads).permute(
                2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-2, -1) * (width // heads) ** -0.5, dim=-1)
            return self.proj((att @ v).transpose(1, 2).reshape(n, tokens, width))

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.att = Attention()
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                     nn.Linear(4 * width, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.att(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, width, 16, 16)
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
            self.layers = nn.Sequential(*[Layer() for _ in range(depth)])
            self.ln = nn.LayerNorm(width)
            self.head = nn.Linear(width, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(self.ln(self.layers(x))[:, 0])

    _export(ViT(), (3, 224, 224), path)


BUILDERS = {"small": small, "resnet18": resnet18, "vit_b16": vit_b16}
