"""Per-layer SQNR of a quantized model against its FP32 reference, one ONNX Runtime pass each.

``SQNR = 10 log10(sum(ref^2) / sum((q - ref)^2))`` of each layer's (first) output tensor,
summed over every element of every evaluation batch. The layer outputs are exposed as extra
graph outputs, so each model runs once over the batches; only two float64 sums per layer are
kept between batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from quantkit.data import InputLayout
from quantkit.errors import InputError, PipelineError
from quantkit.evaluate.layers import LayerSQNR


def layer_outputs(model: onnx.ModelProto, layers: Sequence[str]) -> dict[str, str]:
    """``{layer: its first output tensor}``; unnamed nodes named as the Q/DQ writer does.

    Raises:
        InputError: a layer name that is not a node of ``model``.
    """
    from quantkit.transforms import working_copy

    named = working_copy(model) if any(not n.name for n in model.graph.node) else model
    outputs = {n.name: n.output[0] for n in named.graph.node if n.output}
    missing = [name for name in layers if name not in outputs]
    if missing:
        raise InputError(f"layer SQNR: no node named {', '.join(map(repr, missing[:5]))} "
                         "in the model.")
    return {name: outputs[name] for name in layers}


def _exposed(model: onnx.ModelProto, tensors: Sequence[str]) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=t))
            have.add(t)
    return bytes(m.SerializeToString())


def layer_sqnr(reference: onnx.ModelProto, candidate: onnx.ModelProto, layers: Sequence[str],
               batches: Sequence[Mapping[str, np.ndarray]], *,
               threads: int | None = None,
               layout: InputLayout | None = None) -> dict[str, float]:
    """SQNR in dB of every layer's output in ``candidate`` against ``reference``.

    Args:
        reference: the FP32 model (the function the candidate should compute).
        candidate: e.g. its Q/DQ model (same node names for the layers).
        layers: node names; each one's first output is compared.
        batches: the evaluation batches (samples first), fed as every evaluator feeds them
            (:func:`quantkit.data.static_batch_chunks`: batch axes, fixed batch sizes).
        threads: ONNX Runtime intra-op threads.
        layout: constant inputs and batch axes the batches were read with.
    """
    from quantkit._ort import session
    from quantkit.data import static_batch_chunks
    from quantkit.model import input_specs

    if not layers:
        return {}
    ref_out = layer_outputs(reference, layers)
    cand_out = layer_outputs(candidate, layers)
    ref_names, cand_names = list(dict.fromkeys(ref_out.values())), \
        list(dict.fromkeys(cand_out.values()))
    try:
        ref_sess = session(_exposed(reference, ref_names), providers=["CPUExecutionProvider"],
                           threads=threads)
        cand_sess = session(_exposed(candidate, cand_names),
                            providers=["CPUExecutionProvider"], threads=threads)
    except Exception as err:
        raise PipelineError(f"ONNX Runtime could not load a model for the layer SQNR: {err}") \
            from err
    acc = LayerSQNR()  # keyed by layer here, not by tensor
    specs = input_specs(reference, layout)
    for batch in batches:
        for chunk in static_batch_chunks(batch, specs):
            feeds: dict[str, Any] = dict(chunk)
            r = dict(zip(ref_names, ref_sess.run(ref_names, feeds), strict=True))
            c = dict(zip(cand_names, cand_sess.run(cand_names, feeds), strict=True))
            acc.update({layer: np.asarray(r[ref_out[layer]]) for layer in layers},
                       {layer: np.asarray(c[cand_out[layer]]) for layer in layers})
    result = acc.result()
    missing = [layer for layer in layers if layer not in result]
    if missing:
        raise PipelineError(f"layer SQNR: the output of {', '.join(missing[:5])} has another "
                            "shape in the quantized model than in the reference.")
    return {layer: result[layer] for layer in layers}


@dataclass(frozen=True)
class LayerOutcome:
    """What autotune did with one layer it considered keeping out of INT8.

    ``outcome``: ``kept_fp16`` / ``kept_fp32`` (out of INT8 in the final plan, in the
    precision kept layers get), ``rescued`` (INT8 in the final plan, and the rescue
    transforms raised its all-INT8 SQNR) or ``int8`` (INT8 without a rescue gain).
    """

    layer: str
    rank: int | None
    sqnr_before_db: float
    sqnr_after_db: float
    how: tuple[str, ...]
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (non-finite SQNR as the strings ``"inf"`` / ``"-inf"``)."""
        return {"layer": self.layer, "rank": self.rank,
                "sqnr_before_db": _json_float(self.sqnr_before_db),
                "sqnr_after_db": _json_float(self.sqnr_after_db),
                "how": list(self.how), "outcome": self.outcome}

    def line(self) -> str:
        """``layer: outcome (how), SQNR a -> b dB`` for logs and YAML comments."""
        how = f" ({'+'.join(self.how)})" if self.how else ""
        return (f"{self.layer}: {self.outcome}{how}, SQNR {self.sqnr_before_db:.1f} -> "
                f"{self.sqnr_after_db:.1f} dB")


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else ("-inf" if v < 0 else "nan"))


def layer_report(considered: Sequence[str], kept: Sequence[str], keep_as: str,
                 order: Sequence[str], before: Mapping[str, float],
                 after: Mapping[str, float], changed: Mapping[str, Sequence[str]],
                 rescued: bool) -> list[LayerOutcome]:
    """One :class:`LayerOutcome` per considered or kept layer, in ranking order.

    Args:
        considered: the layers the search tried out of INT8 (the ranked prefix it evaluated).
        kept: the final kept layers.
        keep_as: their precision (``fp16`` / ``fp32``).
        order: the sensitivity ranking (rank = 1-based position).
        before: all-INT8 SQNR per layer without rescue.
        after: the same with the rescue transforms (``before`` without rescue).
        changed: ``{layer: transforms that changed it}``.
        rescued: whether rescue transforms ran.
    """
    rank = {name: i + 1 for i, name in enumerate(order)}
    names = list(dict.fromkeys([*considered, *kept]))
    names.sort(key=lambda n: rank.get(n, len(order) + 1))
    out = []
    for name in names:
        b, a = before[name], after[name]
        if name in kept:
            outcome = f"kept_{keep_as}"
        elif rescued and a > b:
            outcome = "rescued"
        else:
            outcome = "int8"
        out.append(LayerOutcome(name, rank.get(name), b, a, tuple(changed.get(name, ())),
                                outcome))
    return out


__all__ = ["LayerOutcome", "layer_outputs", "layer_report", "layer_sqnr"]
