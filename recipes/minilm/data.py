"""all-MiniLM-L6-v2's data: tokenized sentences of the Python language reference.

Data (no download): sentences of the Python language reference that ships with every CPython
as ``pydoc_data.topics`` (79 topics, ~1,850 distinct sentences of 8-40 words). Topics are
split by a hash of their name into calibration and evaluation topics, so the two sets share no
sentence and no topic. Sentences are tokenized to a fixed length (``SEQ_LEN`` = 64 tokens,
truncated, right-padded), as a TensorRT deployment with one static sequence length would feed
them; the padding positions run through the encoder too and are part of the calibration
statistics, as in such a deployment.

:func:`prepare` writes what ``recipe.yaml`` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recipes.minilm.model import SEQ_LEN, TOKENIZER_FILE, export_onnx, package_dir


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


def prepare(out_dir: str | os.PathLike[str], *, calibration: int = 128,
            evaluation: int = 256, seq_len: int = SEQ_LEN,
            cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write what ``recipes/minilm/recipe.yaml`` reads into ``out_dir``.

    ``model.onnx`` (the FP32 export; the layout of ``recipes/prepare.py``),
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


__all__ = ["batches", "prepare", "sentence_sets", "tokenize", "tokenizer"]
