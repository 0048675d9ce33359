"""Precision files and per-node precision plans.

A precision file (docs/cli.md#precision-file, ``quantize --precision P.yaml``)::

    default: int8            # int8 | fp8 | fp16 | fp32 for quantizable ops
    default_float: fp32      # precision of the non-quantized rest: fp32 | fp16
    overrides:               # first match wins; each rule has one of name / regex / op_type
      - name: /backbone/conv1/Conv
        precision: fp32
      - regex: "^/head/.*"
        precision: fp16
      - op_type: Softmax
        precision: fp32

:func:`make_plan` turns it into a :class:`PrecisionPlan`: one precision per node and the reason
for it. A rule that matches no node is an error listing close node names; a rule asking for
int8 / fp8 on an op TensorRT does not quantize that way is a warning (the node keeps
``default_float``). ``fp8`` is FP8 E4M3 (docs/fp8.md): Conv, Gemm and MatMul only.

The file's optional ``rescue:`` key (transforms applied to the FP32 model first) is not part
of the plan: the loader above this layer, ``quantkit.transforms.precision_file``, reads it.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from quantkit._yaml import load_yaml
from quantkit.errors import InputError
from quantkit.qdq.rules import FP8_OPS, FUSES_RESIDUAL, QUANTIZED_PRECISIONS

logger = logging.getLogger(__name__)

Precision = Literal["int8", "fp8", "fp16", "fp32"]
FloatPrecision = Literal["fp16", "fp32"]
PLAN_FORMAT = "quantkit-plan/1"


class Rule(BaseModel):
    """One override: exactly one of ``name`` / ``regex`` / ``op_type``, and a precision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    regex: str | None = None
    op_type: str | None = None
    precision: Precision

    @model_validator(mode="after")
    def _one_selector(self) -> Rule:
        given = [k for k in ("name", "regex", "op_type") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each override needs exactly one of name / regex / op_type, got "
                             + (", ".join(given) or "none"))
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"invalid regex {self.regex!r}: {err}") from err
        return self

    def describe(self) -> str:
        """``regex '^/head/.*'`` etc."""
        for key in ("name", "regex", "op_type"):
            value = getattr(self, key)
            if value is not None:
                return f"{key} {value!r}"
        return "?"

    def matches(self, node_name: str, op_type: str) -> bool:
        """Whether this rule selects the node."""
        if self.name is not None:
            return node_name == self.name
        if self.regex is not None:
            return re.search(self.regex, node_name) is not None
        return op_type == self.op_type


class PrecisionConfig(BaseModel):
    """The content of a precision file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Precision = "int8"
    default_float: FloatPrecision = "fp32"
    overrides: tuple[Rule, ...] = ()

    @classmethod
    def from_yaml(cls, path: str | Path) -> PrecisionConfig:
        """Load and validate a precision file; errors name the file, line or key."""
        doc = load_yaml(path, "--precision")
        return cls.from_mapping(doc if doc is not None else {}, where=str(path))

    @classmethod
    def from_mapping(cls, doc: Any, where: str = "precision") -> PrecisionConfig:
        """Validate a mapping (a parsed precision file or a recipe's block)."""
        if not isinstance(doc, dict):
            raise InputError(f"{where}: expected a mapping with default / default_float / "
                             "overrides.")
        if "rescue" in doc and "rescue" not in cls.model_fields:
            raise InputError(f"{where}: rescue: a plan has no rescue transforms: load the file "
                             "with quantkit.transforms.precision_file.load_precision (or "
                             "PrecisionFile.from_yaml), which reads `rescue:` beside the plan, "
                             "or remove the key.")
        try:
            return cls.model_validate(doc)
        except ValidationError as err:
            raise InputError(cls.error_text(err.errors()[0], where)) from err

    @classmethod
    def error_text(cls, error: Any, where: str) -> str:
        """The message of the first validation error (``error``: pydantic's error dict)."""
        loc = ".".join(str(x) if not isinstance(x, int) else f"[{x}]"
                       for x in error["loc"]).replace(".[", "[")
        return (f"{where}: {loc or 'file'}: {error['msg']}"
                + (f" (got {error.get('input')!r})" if error["type"] != "missing" else "")
                + ". Precisions are int8 / fp8 / fp16 / fp32; default_float is fp32 / fp16.")


@dataclass
class NodePlan:
    """The precision of one node and why."""

    name: str
    op_type: str
    precision: Precision
    reason: str
    #: a residual Add whose non-fused branch gets Q/DQ so TensorRT can fuse the Add into the
    #: INT8 (FP8) convolution (the Add itself stays a float op); the branch takes the
    #: convolution's quantized type
    quantize_residual: bool = False
    residual_type: str = "int8"


@dataclass
class PrecisionPlan:
    """Per-node precision for a model.

    Attributes:
        nodes: ``{node name: NodePlan}`` in graph order.
        default: precision of quantizable ops without an override.
        default_float: precision of everything that is not INT8.
        warnings: rules that did not apply as asked (int8/fp8 on a non-quantizable op).
    """

    nodes: dict[str, NodePlan]
    default: Precision = "int8"
    default_float: FloatPrecision = "fp32"
    warnings: list[str] = field(default_factory=list)

    def precision(self, node: str) -> Precision:
        """The planned precision of ``node``."""
        return self.nodes[node].precision

    def float_type(self, node: str) -> FloatPrecision:
        """The float type the node computes in (int8/fp8 nodes compute around default_float)."""
        p = self.nodes[node].precision
        return self.default_float if p in QUANTIZED_PRECISIONS else p  # type: ignore[return-value]

    def counts(self) -> dict[str, int]:
        """How many nodes have each precision (``fp8`` only when the plan has FP8 nodes)."""
        out = {"int8": 0, "fp16": 0, "fp32": 0}
        for n in self.nodes.values():
            out[n.precision] = out.get(n.precision, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``quantkit-plan/1`` document."""
        return {
            "format": PLAN_FORMAT,
            "default": self.default,
            "default_float": self.default_float,
            "nodes": {n.name: {"op_type": n.op_type, "precision": n.precision,
                               "reason": n.reason,
                               **({"quantize_residual": True} if n.quantize_residual else {}),
                               **({"residual_type": n.residual_type}
                                  if n.quantize_residual and n.residual_type != "int8" else {})}
                      for n in self.nodes.values()},
        }

    def to_json(self) -> str:
        """The plan as compact, deterministic JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PrecisionPlan:
        """Inverse of :meth:`to_dict`."""
        if doc.get("format") != PLAN_FORMAT:
            raise InputError(f"not a quantkit plan (expected format {PLAN_FORMAT}).")
        nodes = {name: NodePlan(name, v["op_type"], v["precision"], v.get("reason", ""),
                                bool(v.get("quantize_residual", False)),
                                str(v.get("residual_type", "int8")))
                 for name, v in doc["nodes"].items()}
        return cls(nodes, doc.get("default", "int8"), doc.get("default_float", "fp32"))


@dataclass(frozen=True)
class NodeView:
    """What the planner needs to know about a node."""

    name: str
    op_type: str
    quantizable: bool


def make_plan(nodes: Sequence[NodeView], config: PrecisionConfig,
              residual_adds: Iterable[tuple[str, str]] = ()) -> PrecisionPlan:
    """Apply a precision file to a graph's nodes.

    Args:
        nodes: the graph's nodes in order (names must be unique and non-empty).
        config: the precision file.
        residual_adds: ``(add node, fusing producer node)`` pairs: when the producer is int8
            (fp8) and no rule names the Add, its other branch gets int8 (fp8) Q/DQ
            (docs/tensorrt_rules.md#residual-add).

    Raises:
        InputError: a rule that matches no node (with the closest node names).
    """
    matched = [False] * len(config.overrides)
    won = [False] * len(config.overrides)
    plan: dict[str, NodePlan] = {}
    warnings: list[str] = []
    for node in nodes:
        hits = [i for i, r in enumerate(config.overrides) if r.matches(node.name, node.op_type)]
        for i in hits:
            matched[i] = True
        rule_index = hits[0] if hits else None
        if rule_index is not None:
            won[rule_index] = True
            rule = config.overrides[rule_index]
            prec: Precision = rule.precision
            reason = f"override {rule_index + 1}: {rule.describe()}"
            why = _not_applicable(prec, node)
            if why:
                msg = (f"override {rule_index + 1} ({rule.describe()}) asks {prec} for "
                       f"{node.op_type} node '{node.name}', {why}; it stays "
                       f"{config.default_float}")
                warnings.append(msg)
                logger.warning(msg)
                prec, reason = config.default_float, reason + f" ({prec} not applicable)"
        elif node.quantizable and _not_applicable(config.default, node):
            prec = config.default_float
            reason = (f"default_float (default {config.default}: "
                      f"{_not_applicable(config.default, node)})")
        elif node.quantizable:
            prec, reason = config.default, "default"
        else:
            prec, reason = config.default_float, "default_float (not quantizable)"
        plan[node.name] = NodePlan(node.name, node.op_type, prec, reason)
    for add, producer in residual_adds:
        entry = plan.get(add)
        if (entry is not None and entry.reason.startswith("default_float")
                and plan.get(producer) is not None
                and plan[producer].precision in QUANTIZED_PRECISIONS
                and plan[producer].op_type in FUSES_RESIDUAL):
            entry.quantize_residual = True
            entry.residual_type = plan[producer].precision
            entry.reason += f"; residual branch quantized for fusion into '{producer}'"
    unused = [r for r, u in zip(config.overrides, matched, strict=True) if not u]
    if unused:
        _raise_unused(unused, config, nodes)
    for i, (m, w) in enumerate(zip(matched, won, strict=True)):
        if m and not w:
            msg = (f"override {i + 1} ({config.overrides[i].describe()}) never applies: every "
                   "node it matches is taken by an earlier rule (first match wins)")
            warnings.append(msg)
            logger.warning(msg)
    return PrecisionPlan(plan, config.default, config.default_float, warnings)


def _not_applicable(prec: str, node: NodeView) -> str:
    """Why ``node`` cannot run in the quantized precision ``prec`` ('' when it can)."""
    if prec not in QUANTIZED_PRECISIONS:
        return ""
    if not node.quantizable:
        return "which TensorRT does not quantize"
    if prec == "fp8" and node.op_type not in FP8_OPS:
        return ("which TensorRT-RTX compiles as an FP32 kernel when its inputs are FP8 (FP8 "
                "runs on Conv, Gemm and MatMul)")
    return ""


def _raise_unused(unused: list[Rule], config: PrecisionConfig, nodes: Sequence[NodeView]) -> None:
    names = [n.name for n in nodes]
    parts = []
    for rule in unused:
        index = config.overrides.index(rule) + 1
        if rule.op_type is not None:
            ops = sorted({n.op_type for n in nodes})
            close = difflib.get_close_matches(rule.op_type, ops, n=3, cutoff=0.4) or ops[:8]
            parts.append(f"override {index} (op_type {rule.op_type!r}) matches no node; op "
                         f"types in the model include: {', '.join(close)}")
        else:
            key = rule.name if rule.name is not None else (rule.regex or "")
            close = difflib.get_close_matches(key, names, n=5, cutoff=0.3) or names[:5]
            parts.append(f"override {index} ({rule.describe()}) matches no node; closest node "
                         f"names: {', '.join(close)}")
    raise InputError("; ".join(parts) + ". Fix the rule or remove it (see `quantkit inspect "
                     "MODEL.onnx` for node names).")
