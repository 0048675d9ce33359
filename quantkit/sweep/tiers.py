"""Precision tiers for autotune: INT8, then FP8 (where the target GPU has it), then float.

:func:`quantkit.sweep.autotune.autotune` finds the layers that must leave INT8 for the accuracy
target. On a GPU with FP8 tensor math (compute capability 8.9+: Ada, Hopper, Blackwell) such a
layer may run in FP8 E4M3 instead of FP16/FP32: FP8 keeps the same relative precision across its
range, so a layer that INT8's fixed step hurts (wide or heavy-tailed activations) often does
fine in FP8 at INT8-like speed. :func:`fp8_tier` takes autotune's result and, for the target,

1. tries every kept layer in FP8 at once (one evaluation); if the target holds, all go to FP8;
2. otherwise tries them one at a time, latest-ranked first (as autotune's pruning pass does),
   moving a layer to FP8 when the target still holds with it there;
3. leaves the rest in ``default_float``.

Each layer of the result says which tier it got and why (:class:`LayerTier`). Whether the
target has FP8 comes from the GPU table (``quantkit.latency.get_gpu(name).fp8_tflops``) or from
a compute capability (:func:`fp8_target`). Only Conv, Gemm and MatMul have FP8 kernels
(:data:`quantkit.qdq.rules.FP8_OPS`); other kept layers stay in float.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from quantkit.calibrators.cache import ScaleTable
from quantkit.errors import InputError
from quantkit.qdq.fp8 import NO_FP8_TARGETS
from quantkit.qdq.plan import PrecisionConfig, Rule
from quantkit.qdq.rules import FP8_OPS
from quantkit.qdq.writer import prepare, quantize_model
from quantkit.sweep.autotune import AutotuneResult
from quantkit.sweep.scoring import Evaluator, Score

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fp8Target:
    """Whether the deployment target runs FP8, and the sentence saying why."""

    supported: bool
    why: str


def fp8_target(gpu: str | None = None, compute_capability: str | None = None) -> Fp8Target:
    """The FP8 support of a named GPU (quantkit's GPU table) or of a compute capability.

    Args:
        gpu: a GPU name of ``quantkit estimate --list-gpus`` (``L4``, ``H100-SXM``...).
        compute_capability: ``SM89``, ``8.9`` or ``89`` (used when ``gpu`` is not given).

    Raises:
        InputError: an unknown GPU name or a compute capability that is not ``SMnn``/``n.n``.
    """
    if gpu:
        from quantkit.latency import get_gpu

        row = get_gpu(gpu)
        if row.fp8_tflops is not None:
            return Fp8Target(True, f"{row.name} (SM{row.sm[2:]}) has FP8 tensor math")
        return Fp8Target(False, f"{row.name} (SM{row.sm[2:]}) has no FP8 tensor math (FP8 needs "
                                "compute capability 8.9+)")
    if compute_capability:
        key = compute_capability.strip().upper().replace("_", "").replace(".", "")
        key = key if key.startswith("SM") else f"SM{key}"
        if not key[2:].isdigit():
            raise InputError(f"compute capability {compute_capability!r}: expected SMnn, n.n or "
                             "nn (e.g. SM89, 8.9).")
        number = int(key[2:])
        if key in NO_FP8_TARGETS or number < 89:
            return Fp8Target(False, f"{key} has no FP8 tensor math (FP8 needs 8.9+)")
        return Fp8Target(True, f"{key} has FP8 tensor math")
    return Fp8Target(False, "no target GPU or compute capability given")


@dataclass(frozen=True)
class LayerTier:
    """The tier one layer ended in and why.

    Attributes:
        layer: node name; op_type: its op.
        tier: ``int8``, ``fp8`` or the float type (``fp16``/``fp32``).
        reason: one sentence, with the accuracy drop that decided it where one was measured.
    """

    layer: str
    op_type: str
    tier: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-able form."""
        return asdict(self)


@dataclass
class TieredResult:
    """Autotune's result with the FP8 tier applied."""

    autotune: AutotuneResult
    target: Fp8Target
    config: PrecisionConfig
    layers: list[LayerTier]
    final: Score
    reached: bool
    evaluations: int
    steps: list[dict[str, Any]] = field(default_factory=list)

    def tier_of(self, layer: str) -> str:
        """The tier of ``layer`` (``int8`` for layers autotune left in INT8)."""
        return next((t.tier for t in self.layers if t.layer == layer), "int8")

    def counts(self) -> dict[str, int]:
        """Layers per tier, among those autotune kept out of INT8."""
        out: dict[str, int] = {}
        for t in self.layers:
            out[t.tier] = out.get(t.tier, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``tiers`` in ``autotune.json``)."""
        return {"fp8_target": self.target.supported, "fp8_target_why": self.target.why,
                "reached": self.reached, "final_accuracy": self.final.accuracy,
                "final_agreement": self.final.agreement, "evaluations": self.evaluations,
                "layers": [t.to_dict() for t in self.layers], "steps": self.steps}

    def to_yaml(self) -> str:
        """The precision file to commit (autotune's header, then the tiers per layer)."""
        import yaml

        res = self.autotune
        doc: dict[str, Any] = {
            "default": "int8", "default_float": self.config.default_float,
            "overrides": [{"name": r.name, "precision": r.precision}
                          for r in self.config.overrides]}
        head = (f"# quantkit autotune with precision tiers int8 -> fp8 -> "
                f"{self.config.default_float}: target drop <= {res.target_drop} points; "
                f"{'reached' if self.reached else 'NOT reached'}: accuracy "
                f"{self.final.accuracy:.3f} (FP32 {res.fp32.accuracy:.3f}, all-INT8 "
                f"{res.all_int8.accuracy:.3f}); FP8 tier: "
                f"{'on' if self.target.supported else 'off'} ({self.target.why})\n")
        head += "".join(f"#   {t.layer}: {t.tier} -- {t.reason}\n" for t in self.layers)
        return head + str(yaml.safe_dump(doc, sort_keys=False))


def _config(base: PrecisionConfig, fp8: Sequence[str], kept: Sequence[str]) -> PrecisionConfig:
    rules = [Rule(name=n, precision="fp8") for n in fp8]
    rules += [Rule(name=n, precision=base.default_float) for n in kept if n not in fp8]
    return PrecisionConfig(default="int8", default_float=base.default_float,
                           overrides=tuple(rules))


def fp8_tier(model: onnx.ModelProto, scales: ScaleTable, evaluator: Evaluator,
             result: AutotuneResult, target: Fp8Target, *,
             max_evaluations: int = 50) -> TieredResult:
    """Move the layers autotune kept out of INT8 to FP8 where the target GPU has FP8.

    Args:
        model: the FP32 model autotune searched (before any quantization).
        scales: the calibration scales autotune used (FP8 scales are ``amax / 448`` of them).
        evaluator: the evaluator autotune used (FP32 outputs cached).
        result: autotune's result.
        target: :func:`fp8_target` of the deployment GPU.
        max_evaluations: at most this many evaluations for the tier search.
    """
    base = result.config
    float_type = str(base.default_float)
    kept = list(result.kept)
    ops = {n.name: n.op_type for n in prepare(model, fp16=False, source="model").graph.node}
    fp32 = result.fp32
    steps: list[dict[str, Any]] = []
    start = evaluator.evaluations

    def drop(s: Score) -> float:
        return evaluator.drop(fp32, s)

    def ok(s: Score) -> bool:
        return drop(s) <= result.target_drop + 1e-9

    def score(fp8: Sequence[str]) -> Score:
        s = evaluator.score(quantize_model(model, scales, _config(base, fp8, kept)).model)
        steps.append({"fp8": list(fp8), "accuracy": s.accuracy, "drop": drop(s)})
        return s

    off = ("FP8 tier off: " + target.why if not target.supported else
           "FP8 tier not combined with rescue transforms" if result.rescue else "")
    if off or not kept:
        layers = [LayerTier(n, ops.get(n, "?"), float_type, f"INT8 misses the target; {off}")
                  for n in kept]
        if off:
            logger.info("autotune tiers: %s", off)
        return TieredResult(result, target, _config(base, [], kept), layers, result.final,
                            result.reached, 0, steps)
    candidates = [n for n in kept if ops.get(n) in FP8_OPS]
    why: dict[str, str] = {n: f"INT8 misses the target; {ops.get(n, '?')} has no FP8 kernel"
                           for n in kept if n not in candidates}
    fp8: list[str] = []
    final = result.final
    if candidates:
        together = score(candidates)
        if ok(together):
            fp8, final = list(candidates), together
            for n in candidates:
                why[n] = (f"INT8 misses the target; with all {len(candidates)} such layers in "
                          f"FP8 the drop is {drop(together):.3f} <= {result.target_drop}")
        else:
            for n in reversed(candidates):  # latest-ranked first, as autotune prunes
                if evaluator.evaluations - start >= max_evaluations:
                    why[n] = "INT8 misses the target; FP8 not tried (evaluation budget spent)"
                    continue
                s = score([*fp8, n])
                if ok(s):
                    fp8.append(n)
                    final = s
                    why[n] = (f"INT8 misses the target; in FP8 the drop is {drop(s):.3f} <= "
                              f"{result.target_drop}")
                else:
                    why[n] = (f"INT8 and FP8 miss the target (drop {drop(s):.3f} with it in "
                              f"FP8)")
    layers = [LayerTier(n, ops.get(n, "?"), "fp8" if n in fp8 else float_type, why[n])
              for n in kept]
    for t in layers:
        logger.info("autotune tiers: %s -> %s (%s)", t.layer, t.tier, t.reason)
    reached = ok(final) if fp8 else result.reached
    return TieredResult(result, target, _config(base, fp8, kept), layers, final, reached,
                        evaluator.evaluations - start, steps)


__all__ = ["Fp8Target", "LayerTier", "TieredResult", "fp8_target", "fp8_tier"]
