"""Models and data for ``benchmarks/calibration/run.py``, built in code (no binary blobs).

* :func:`resnet18` -- the ResNet-18 topology (conv1 7x7/2, max-pool, 4 stages of 2 basic
  blocks, global average pool, FC 1000) with BatchNorm folded into the convolutions, as a
  torchvision export with constant folding looks, and random He-initialised weights. The batch
  axis is dynamic.
* :func:`small_cnn` -- a few cheap convolutions for the memory benchmarks.
* :func:`write_smooth_images` -- "random but structured" images: low-resolution noise upsampled
  bilinearly (smooth colour blobs), a little pixel noise, ImageNet mean/std normalisation,
  written to a ``.npy`` in chunks through ``np.lib.format.open_memmap`` so that writing a
  multi-GB file needs only one chunk of memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

OPSET = 17
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


class _Graph:
    """Tiny helper that accumulates nodes and initializers with unique names."""

    def __init__(self, seed: int) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.rng = np.random.default_rng(seed)
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def init(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1,
             gain: float = 2.0) -> str:
        from onnx import helper

        # He init keeps activations O(1) through the ReLU stack; the bias stands for a folded BN.
        w = self.rng.normal(0.0, np.sqrt(gain / (cin * k * k)), (cout, cin, k, k))
        b = self.rng.normal(0.0, 0.1, cout)
        out = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.init("W", w.astype(np.float32)), self.init("B", b.astype(np.float32))],
            [out], name=out, kernel_shape=[k, k], strides=[stride, stride],
            pads=[k // 2] * 4))
        return out

    def op(self, op_type: str, inputs: list[str], prefix: str, **attrs) -> str:
        from onnx import helper

        out = self.name(prefix)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def relu(self, x: str) -> str:
        return self.op("Relu", [x], "relu")

    def model(self, inp: str, out: str, shape: tuple, out_dim: int, graph_name: str):
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["N", *shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", out_dim])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="quantkit-benchmarks")
        model.ir_version = 8
        return model


def resnet18(path: str | os.PathLike[str], size: int = 224, seed: int = 0) -> Path:
    """Write a ResNet-18 ONNX model (input ``[N, 3, size, size]``, dynamic N) to ``path``."""
    import onnx

    g = _Graph(seed)
    x = g.relu(g.conv("input", 3, 64, 7, 2))
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.relu(g.conv(x, cin, cout, 3, stride))
            y = g.conv(y, cout, cout, 3, 1, gain=1.0)  # smaller gain: residual sums stay O(1)
            short = x if stride == 1 and cin == cout else g.conv(x, cin, cout, 1, stride, 1.0)
            x = g.relu(g.op("Add", [y, short], "add"))
            cin = cout
    x = g.op("GlobalAveragePool", [x], "gap")
    x = g.op("Flatten", [x], "flatten", axis=1)
    fc_w = g.init("fc_W", (g.rng.normal(0, np.sqrt(1.0 / 512), (1000, 512))).astype(np.float32))
    fc_b = g.init("fc_B", np.zeros(1000, dtype=np.float32))
    from onnx import helper

    g.nodes.append(helper.make_node("Gemm", [x, fc_w, fc_b], ["logits"], name="fc", transB=1))
    model = g.model("input", "logits", (3, size, size), 1000, "resnet18_random")
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def small_cnn(path: str | os.PathLike[str], size: int = 224, seed: int = 1) -> Path:
    """Write a small CNN (3 strided convs, 10 classes) for the memory benchmarks."""
    import onnx
    from onnx import helper

    g = _Graph(seed)
    x = g.relu(g.conv("input", 3, 8, 3, 4))
    x = g.relu(g.conv(x, 8, 16, 3, 2))
    x = g.relu(g.conv(x, 16, 32, 3, 2))
    x = g.op("GlobalAveragePool", [x], "gap")
    x = g.op("Flatten", [x], "flatten", axis=1)
    w = g.init("fc_W", g.rng.normal(0, np.sqrt(1.0 / 32), (10, 32)).astype(np.float32))
    b = g.init("fc_B", np.zeros(10, dtype=np.float32))
    g.nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], name="fc", transB=1))
    model = g.model("input", "logits", (3, size, size), 10, "small_cnn")
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def _interp_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear (align-corners) interpolation matrix of shape ``(out_size, in_size)``."""
    pos = np.linspace(0.0, in_size - 1, out_size)
    lo = np.clip(np.floor(pos).astype(int), 0, in_size - 2)
    frac = pos - lo
    m = np.zeros((out_size, in_size), dtype=np.float32)
    m[np.arange(out_size), lo] = 1.0 - frac
    m[np.arange(out_size), lo + 1] = frac
    return m


def smooth_images(rng: np.random.Generator, n: int, size: int, coarse: int = 7) -> np.ndarray:
    """``n`` smooth, normalised ``3 x size x size`` float32 images."""
    m = _interp_matrix(size, coarse)
    low = rng.random((n, 3, coarse, coarse), dtype=np.float32)
    img = np.einsum("hi,ncij,wj->nchw", m, low, m, optimize=True).astype(np.float32)
    img += rng.normal(0.0, 0.02, img.shape).astype(np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    img -= _MEAN
    img /= _STD
    return img


def write_smooth_images(path: str | os.PathLike[str], n: int, size: int, seed: int = 0,
                        chunk: int = 64) -> Path:
    """Write ``n`` smooth images ``[n, 3, size, size]`` float32 to ``path`` (``.npy``)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp.npy")
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, 3, size, size))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        out[lo:hi] = smooth_images(rng, hi - lo, size)
        out.flush()
    del out
    os.replace(tmp, path)
    return path
