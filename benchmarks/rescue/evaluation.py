"""Data, the one evaluation path and Q/DQ inspection of ``rescue/peers.py`` (dev venv only).

Data (nothing downloaded, nothing enlarged):

* EfficientNet-Lite0: the FP32 model and the 66 calibration views of
  ``recipes/_data/efficientnet_lite0`` (``python -m recipes prepare``); evaluation:
  ``images.evaluation_set()``, 448 views of the 7 evaluation photos, the set of
  docs/transforms.md and of ``benchmarks/qdq/run.py`` (the recipe's ``evaluation.npy`` holds the
  first 8 views of each photo of the same draw, 56 views). Metrics: top-1 agreement with FP32,
  top-1 against the accepted ImageNet classes (``_qdq_models.EFFNET_LABELS``), logit SQNR, all
  through ``_qdq_models.evaluate``.
* MiniLM: ``recipes/_data/minilm`` (model, 128 calibration / 256 evaluation sentences, 64
  tokens). Metrics: ``recipes.minilm``'s ``embed`` (the model's own mean pooling +
  normalisation inside the graph, output ``sentence_embedding``), ``cosine_to_reference``
  (mean / min over the 256 sentences) and ``retrieval_agreement``.

Every model runs in ONNX Runtime CPU through ``recipes.runtime.ort_session``
(``session.disable_quant_qdq = 1``: each Q/DQ runs as written, in float, as TensorRT
computes it). Models whose batch dimension is fixed to 1 (PPQ's export) run one sample at a
time; nothing else changes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import REPO

EFF_DIR = REPO / "recipes" / "_data" / "efficientnet_lite0"
MINILM_DIR = REPO / "recipes" / "_data" / "minilm"


@dataclasses.dataclass
class Model:
    key: str
    title: str
    fp32: Path
    cal: Path  # exported for every tool
    inputs: list[str]
    info: dict[str, Any]
    bench: Any = None  # benchmarks.qdq.models.Bench (EfficientNet)
    tokens: dict[str, np.ndarray] | None = None  # MiniLM evaluation tokens
    reference: np.ndarray | None = None


def _need(path: Path, how: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `{how}` first")
    return path


def effnet(work: Path) -> Model:
    from benchmarks.qdq import models as qm
    from recipes import efficientnet_lite0 as eff
    from recipes import images

    fp32 = _need(EFF_DIR / "model.onnx", "python -m recipes prepare")
    cal = np.load(_need(EFF_DIR / "calibration.npy", "python -m recipes prepare"))
    views = 64
    ev = images.evaluation_set(views_per_photo=views)
    out = work / "data" / "effnet_cal.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, cal.astype(np.float32))
    b = qm.Bench(key="effnet", title="EfficientNet-Lite0", fp32=fp32, input=eff.INPUT_NAME,
                 cal=out, n_batches=len(cal) // 16, eval_x=ev, eval_batch=32, shapes={},
                 metric_names=("agreement", "top1", "sqnr_db"),
                 extra={"photo": np.repeat(np.arange(len(images.EVALUATION_PHOTOS)), views),
                        "accept": [qm.EFFNET_LABELS[n] for n in images.EVALUATION_PHOTOS]})
    info = {"model": str(fp32.relative_to(REPO)),
            "calibration": f"{len(cal)} views of {len(images.CALIBRATION_PHOTOS)} photos "
                           f"({(EFF_DIR / 'calibration.npy').relative_to(REPO)})",
            "evaluation": f"{len(ev)} views of {len(images.EVALUATION_PHOTOS)} other photos "
                          f"(images.evaluation_set({views}), as docs/transforms.md)"}
    return Model("effnet", "EfficientNet-Lite0", fp32, out, [eff.INPUT_NAME], info, bench=b)


def minilm(work: Path) -> Model:
    from recipes import minilm as ml

    fp32 = _need(MINILM_DIR / "model.onnx", "python -m recipes prepare --only minilm")
    with np.load(_need(MINILM_DIR / "calibration.npz", "python -m recipes prepare --only minilm")
                 ) as z:
        cal = {k: z[k] for k in z.files}
    with np.load(_need(MINILM_DIR / "evaluation.npz", "python -m recipes prepare --only minilm")
                 ) as z:
        tokens = {k: z[k] for k in z.files}
    out = work / "data" / "minilm_cal.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **cal)
    n_cal, n_ev = len(cal["input_ids"]), len(tokens["input_ids"])
    info = {"model": str(fp32.relative_to(REPO)),
            "calibration": f"{n_cal} sentences x {cal['input_ids'].shape[1]} tokens "
                           f"({(MINILM_DIR / 'calibration.npz').relative_to(REPO)})",
            "evaluation": f"{n_ev} other sentences (evaluation.npz); embeddings: the model's "
                          "own output sentence_embedding (mean pooling + L2 norm in the graph), "
                          "minilm.embed"}
    return Model("minilm", "all-MiniLM-L6-v2", fp32, out, list(ml.INPUT_NAMES), info,
                 tokens=tokens)


BUILDERS = {"effnet": effnet, "minilm": minilm}


def _fixed_batch(path: str | Path) -> bool:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    d = m.graph.input[0].type.tensor_type.shape.dim
    return bool(d) and d[0].HasField("dim_value") and d[0].dim_value > 0


def reference(m: Model) -> None:
    m.reference = _outputs(m, m.fp32)
    if m.bench is not None:
        m.bench.reference = m.reference


def _outputs(m: Model, path: str | Path) -> np.ndarray:
    from recipes import minilm as ml
    from recipes.runtime import ort_session

    batch = 1 if _fixed_batch(path) else None
    if m.key == "effnet":
        from benchmarks.qdq import models as qm

        b = m.bench if batch is None else dataclasses.replace(m.bench, eval_batch=batch)
        return qm.run(b, path)
    return ml.embed(ort_session(path), m.tokens, batch_size=batch or 32)


def evaluate(m: Model, path: str | Path) -> dict[str, Any]:
    """The one evaluation path (see the module docstring)."""
    from recipes import minilm as ml
    from recipes.runtime import sqnr_db

    out = _outputs(m, path)
    res: dict[str, Any] = {"batch1": _fixed_batch(path)}
    if m.key == "effnet":
        top = out.argmax(1)
        ok = [t in m.bench.extra["accept"][p] for t, p in zip(top, m.bench.extra["photo"],
                                                              strict=True)]
        res.update(agreement=float(np.mean(top == m.reference.argmax(1))),
                   top1=float(np.mean(ok)), sqnr_db=sqnr_db(m.reference, out))
        return res
    cos = ml.cosine_to_reference(m.reference, out)
    res.update(mean_cosine=float(cos.mean()), min_cosine=float(cos.min()),
               retrieval=ml.retrieval_agreement(m.reference, out))
    return res


def executor_check(m: Model, executor_out: str | Path, exported: str | Path) -> dict[str, Any]:
    """A tool's own quantized executor vs its exported ONNX, on the recipe's 56 evaluation
    views (``evaluation.npy``: the first 8 views of each photo of the same draw as the 448):
    top-1 agreement of each with FP32 and with each other."""
    from recipes.runtime import ort_session, run_batched

    x = np.load(EFF_DIR / "evaluation.npy")
    exe = np.load(executor_out)
    ref = run_batched(ort_session(m.fp32), x, 28)
    sess = ort_session(exported)
    out = np.concatenate([sess.run(None, {m.inputs[0]: x[i: i + 1]})[0] for i in range(len(x))])
    top = ref.argmax(1)
    return {"views": len(x), "executor_agreement": float(np.mean(exe.argmax(1) == top)),
            "exported_agreement": float(np.mean(out.argmax(1) == top)),
            "executor_vs_exported": float(np.mean(exe.argmax(1) == out.argmax(1)))}


# --------------------------------------------------------------------------- Q/DQ inspection
def _consts(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    c = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            c[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return c


def qdq_settings(path: str | Path) -> dict[str, Any]:
    """How a Q/DQ model quantizes: activation quantizers by type / symmetry / granularity,
    weight quantizers (per channel? stored as int8?), ops that read a DequantizeLinear."""
    import onnx

    model = onnx.load(str(path))
    consts = _consts(model)
    ops = Counter(n.op_type for n in model.graph.node)
    act: Counter[str] = Counter()
    wts: Counter[str] = Counter()
    widest = ("", 0.0)  # the activation with the largest quantization range
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        scale = consts.get(n.input[1])
        dtype = "uint8" if zp is not None and zp.dtype == np.uint8 else (
            str(zp.dtype) if zp is not None else "uint8 (no zero point)")
        sym = "sym" if zp is None or not np.any(zp) else "asym"
        gran = "per-channel" if scale is not None and scale.size > 1 else "per-tensor"
        is_weight = n.input[0] in consts
        if n.op_type == "QuantizeLinear" and not is_weight:
            act[f"{dtype} {sym} {gran}"] += 1
            if scale is not None:
                levels = 255.0 if dtype.startswith("uint8") else 127.0
                amax = float(np.max(scale)) * levels
                if amax > widest[1]:
                    widest = (n.input[0], amax)
        elif is_weight and (n.op_type == "QuantizeLinear" or consts[n.input[0]].dtype in (
                np.int8, np.uint8)):
            stored = "int8 initializer + DQ" if n.op_type == "DequantizeLinear" else "float + Q/DQ"
            wts[f"{dtype} {sym} {gran}, {stored}"] += 1
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed = Counter(n.op_type for n in model.graph.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                  and any(i in dq_out for i in n.input))
    added = {k: v for k, v in ops.items() if k not in ("QuantizeLinear", "DequantizeLinear")}
    return {"Q": ops.get("QuantizeLinear", 0), "DQ": ops.get("DequantizeLinear", 0),
            "activation_quantizers": dict(act), "weight_quantizers": dict(wts),
            "widest_activation": {"tensor": widest[0], "amax": widest[1]},
            "dq_fed_ops": dict(fed), "op_counts": added, "nodes": len(model.graph.node)}


def int8_view(path: str | Path, out: str | Path) -> dict[str, Any] | None:
    """The model as TensorRT could take it: uint8 symmetric activation quantizers rewritten
    as int8.

    TensorRT's explicit quantization takes INT8 Q/DQ with zero point 0; a ``uint8`` quantizer
    with zero point 0 (NNCF's choice for non-negative activations) covers ``[0, 255 s]``. The
    rewrite keeps that range with the int8 grid ``s' = 255 s / 127`` (half the resolution, as
    a signed INT8 scale over the same maximum has). Returns ``None`` when the model has no such
    quantizer (nothing to rewrite), else what was rewritten.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = _consts(model)
    readers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    done = skipped = 0
    for q in [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        if len(q.input) < 3 or q.input[0] in consts:
            continue
        zp, s = consts.get(q.input[2]), consts.get(q.input[1])
        if zp is None or zp.dtype != np.uint8 or np.any(zp) or s is None or s.size != 1:
            continue
        dqs = readers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
            skipped += 1
            continue
        s_name, z_name = f"{q.output[0]}__i8_scale", f"{q.output[0]}__i8_zp"
        model.graph.initializer.extend([
            numpy_helper.from_array((s.astype(np.float64) * 255.0 / 127.0).astype(s.dtype),
                                    s_name),
            numpy_helper.from_array(np.zeros(zp.shape, np.int8), z_name)])
        for n in (q, *dqs):
            n.input[1], n.input[2] = s_name, z_name
        done += 1
    if not done:
        return None
    # value_info recorded by the tool still says uint8 for the rewritten Q outputs
    rewritten = {q.output[0] for q in model.graph.node if q.op_type == "QuantizeLinear"
                 and q.input[2].endswith("__i8_zp")}
    kept = [v for v in model.graph.value_info if v.name not in rewritten]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    live = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    onnx.save(model, str(out))
    return {"rewritten": done, "skipped_not_plain_qdq": skipped, "path": str(out)}


__all__ = ["BUILDERS", "Model", "evaluate", "executor_check", "int8_view", "qdq_settings",
           "reference"]
