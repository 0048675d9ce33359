"""Activation capture within a memory budget: the model run in stages, in graph order.

Exposing every activation of a batch at once costs batch x activation volume (ResNet-50 at 32
images: about 3 GB of outputs, 7.7 GB peak with ONNX Runtime's copies). Under a budget, the
main graph's nodes are cut, in graph order, into consecutive stages whose activations for one
chunk fit the budget; each stage is its own ONNX Runtime session fed by the graph inputs and
the tensors earlier stages produced for it. Every node still runs once per chunk, on the same
inputs, so each tensor gets exactly the values, and the same batches in the same order, that
one pass would give: the statistics, and so the scales, are identical. Only the stages'
boundary tensors outlive their stage.

Stage sizes come from ONNX shape inference with the first chunk's shapes (one sample per
batch axis); a tensor whose size inference cannot tell counts as the largest known one.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.data.base import Batch, InputSpec
from quantkit.errors import InputError, PipelineError

logger = logging.getLogger(__name__)

#: the default budget: this share of the memory available when calibration starts ...
DEFAULT_BUDGET_SHARE = 0.25
#: ... capped at this many bytes. Stages cost little time (ResNet-50, batch 32, 2 CPUs: 62 s
#: in 15 stages at 512 MiB, 60 s in 7 at 1 GiB, 66 s in one pass) and peak RSS is about
#: 0.9 GiB + 1.1 x the budget there (benchmarks/memory/run.py)
DEFAULT_BUDGET_CAP = 512 << 20
#: a stage's activations may use this share of the budget; the rest is for the copies ONNX
#: Runtime and the calibrators make of them and the boundary tensors
STAGE_SHARE = 0.5

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000 ** 2, "mb": 1000 ** 2,
          "mib": 1 << 20, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1000 ** 4,
          "tb": 1000 ** 4, "tib": 1 << 40}


def parse_memory(text: str | int, where: str = "memory_budget") -> int:
    """``4GiB``, ``512MB``, ``2g``, ``1073741824`` -> bytes.

    Raises:
        InputError: not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        if m is None or m.group(2).lower() not in _UNITS:
            raise InputError(f"{where} {text!r}: expected a size such as 4GiB, 512MB or a "
                             "number of bytes.")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise InputError(f"{where} {text!r}: must be a positive size.")
    return value


def available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (``None`` where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_memory_budget() -> int:
    """25 % of the available memory, at most 512 MiB (512 MiB where it is unknown)."""
    avail = available_memory()
    if avail is None:
        return DEFAULT_BUDGET_CAP
    return max(64 << 20, min(int(avail * DEFAULT_BUDGET_SHARE), DEFAULT_BUDGET_CAP))


def check_sample_fits(inputs: Sequence[InputSpec], budget: int) -> None:
    """Refuse, before allocating anything, inputs whose one sample cannot fit ``budget``.

    Only the static dimensions count (a dynamic one counts as 1), so a model that declares
    ``[N, 1, 65536, 65536]`` is refused here rather than when memory runs out.

    Raises:
        InputError: naming the input, its dims and the budget.
    """
    for s in inputs:
        static = [d for d in s.sample_shape if isinstance(d, int) and d > 0]
        size = math.prod(static) * np.dtype(s.dtype).itemsize
        if size > budget:
            raise InputError(
                f"model input {s.describe()}: one sample takes at least {_fmt(size)}, more "
                f"than the memory budget of {_fmt(budget)}. Check the model's declared input "
                "shape (a corrupt or mistaken export?), or give a larger memory_budget.")


def _fmt(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} TiB"


def sample_bytes(model: Any, inputs: Sequence[InputSpec], feeds: Mapping[str, np.ndarray],
                 ) -> dict[str, int]:
    """Bytes per sample of every tensor whose shape inference resolves, for ``feeds``' shapes.

    Each input gets its fed shape with the batch axis set to 1.
    """
    import onnx

    # a copy without the data of large initializers: inference needs their dims only (shape
    # arithmetic reads small int64 tensors), and a second copy of the weights would cost RAM
    probe = onnx.ModelProto()
    graph = model.graph
    inits = list(graph.initializer)
    graph.ClearField("initializer")
    try:
        probe.CopyFrom(model)
    finally:
        graph.initializer.extend(inits)
    for t in inits:
        if math.prod(t.dims) <= 4096:
            probe.graph.initializer.add().CopyFrom(t)
        else:
            probe.graph.initializer.add().CopyFrom(_shell(t))
    by_name = {s.name: s for s in inputs}
    for vi in probe.graph.input:
        spec = by_name.get(vi.name)
        if spec is None or vi.name not in feeds:
            continue
        shape = list(np.shape(feeds[vi.name]))
        if spec.batch_axis is not None:
            shape[spec.batch_axis] = 1
        dims = vi.type.tensor_type.shape.dim
        del dims[:]
        for d in shape:
            dims.add().dim_value = int(d)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=False)
    except Exception:  # best effort: unknown sizes count as the largest known
        inferred = probe
    out: dict[str, int] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except Exception:
            continue
        out[vi.name] = math.prod(int(d.dim_value) for d in t.shape.dim) * itemsize
    return out


def _shell(tensor: Any) -> Any:
    """``tensor``'s name, type and dims without its data."""
    import onnx

    shell = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type)
    shell.dims.extend(tensor.dims)
    return shell


def plan_stages(node_outputs: Sequence[Sequence[str]], sizes: Mapping[str, int],
                limit: int) -> list[tuple[int, int]]:
    """Cut nodes ``0..n`` into consecutive ranges whose captured tensors fit ``limit`` bytes.

    Args:
        node_outputs: per node of the main graph (graph order), the activations it produces.
        sizes: bytes of each activation for one chunk (unknown: the largest known).
        limit: bytes of activations one stage may expose.

    Returns:
        ``[(lo, hi), ...]`` covering every node; a node whose own activations exceed the limit
        gets a stage of its own.
    """
    fallback = max(sizes.values(), default=0)
    ranges: list[tuple[int, int]] = []
    lo, used = 0, 0
    for i, outs in enumerate(node_outputs):
        size = sum(sizes.get(o, fallback) for o in outs)
        if used and used + size > limit:
            ranges.append((lo, i))
            lo, used = i, 0
        used += size
    ranges.append((lo, len(node_outputs)))
    return ranges


@dataclass
class _Stage:
    lo: int
    hi: int
    feeds: list[str]
    outputs: list[str]
    session: Any = None


class StagedRunner:
    """Runs a model's main graph in stages; yields each stage's captured tensors.

    Args:
        model: the model (not modified).
        capture: the activations to return, in graph order.
        ranges: node ranges from :func:`plan_stages`.
        make_session: builds an ONNX Runtime session from a ModelProto.
    """

    def __init__(self, model: Any, capture: Sequence[str], ranges: Sequence[tuple[int, int]],
                 make_session: Any) -> None:
        from quantkit.graph import node_reads

        self._model = model
        self._make_session = make_session
        nodes = list(model.graph.node)
        inits = {t.name for t in model.graph.initializer}
        wanted = set(capture)
        stage_of: dict[str, int] = {}
        for k, (lo, hi) in enumerate(ranges):
            for node in nodes[lo:hi]:
                stage_of.update((o, k) for o in node.output if o)
        reads = [set().union(*(node_reads(n) for n in nodes[lo:hi])) if hi > lo else set()
                 for lo, hi in ranges]
        later: list[set[str]] = [set() for _ in ranges]  # produced here, read by a later stage
        for k, names in enumerate(reads):
            for name in names:
                src = stage_of.get(name)
                if src is not None and src < k:
                    later[src].add(name)
        self.stages: list[_Stage] = []
        for k, (lo, hi) in enumerate(ranges):
            produced = [o for n in nodes[lo:hi] for o in n.output if o]
            outs = [o for o in produced if o in wanted or o in later[k]]
            feeds = sorted(n for n in reads[k] if n not in inits and stage_of.get(n, -1) != k)
            if outs:
                self.stages.append(_Stage(lo, hi, feeds, outs))
        self._inputs = [t for t in capture if t not in stage_of]  # graph inputs captured
        self._keep_until = {name: max((k for k, s in enumerate(self.stages) if name in s.feeds),
                                      default=-1) for s in self.stages for name in s.outputs}
        self._wanted = wanted

    def _session(self, k: int, values: Mapping[str, np.ndarray]) -> Any:
        import onnx
        from onnx import helper

        stage = self.stages[k]
        if stage.session is not None:
            return stage.session
        from quantkit.graph import node_reads

        g = self._model.graph
        nodes = list(g.node)[stage.lo: stage.hi]
        read = set().union(*(node_reads(n) for n in nodes))
        declared = {vi.name: vi for vi in g.input}
        inputs = []
        for name in stage.feeds:
            if name in declared:
                inputs.append(declared[name])
            else:
                elem = helper.np_dtype_to_tensor_dtype(np.asarray(values[name]).dtype)
                inputs.append(helper.make_tensor_value_info(name, elem, None))
        graph = helper.make_graph(
            nodes, f"{g.name}_stage{k}", inputs, [onnx.ValueInfoProto(name=o)
                                                  for o in stage.outputs],
            [t for t in g.initializer if t.name in read])
        model = helper.make_model(graph, opset_imports=list(self._model.opset_import),
                                  ir_version=self._model.ir_version)
        model.functions.extend(self._model.functions)
        stage.session = self._make_session(model)
        if all(s.session is not None for s in self.stages):
            self._model = None  # every session holds its weights: free the proto's copy
        return stage.session

    def run(self, feeds: Mapping[str, np.ndarray]) -> Iterator[Batch]:
        """Run one chunk; yield ``{activation: array}`` per stage, in graph order.

        Tensors that a later stage reads are kept until that stage has run; the rest are
        dropped once the consumer of the yielded mapping is done with it.

        Raises:
            PipelineError: ONNX Runtime failed on a stage.
        """
        values: dict[str, np.ndarray] = dict(feeds)
        first: Batch = {n: feeds[n] for n in self._inputs if n in feeds}
        for k, stage in enumerate(self.stages):
            sess = self._session(k, values)
            try:
                got = sess.run(stage.outputs, {n: values[n] for n in stage.feeds})
            except Exception as err:
                raise PipelineError(
                    f"ONNX Runtime failed on stage {k + 1} of {len(self.stages)} (nodes "
                    f"{stage.lo}..{stage.hi - 1}) of a batch of shapes "
                    f"{ {n: tuple(np.shape(v)) for n, v in feeds.items()} }: {err}") from err
            out: Batch = first
            first = {}
            for name, arr in zip(stage.outputs, got, strict=True):
                if self._keep_until.get(name, -1) > k:
                    values[name] = arr
                if name in self._wanted:
                    out[name] = arr
            del got
            yield out
            del out
            for name in [n for n in values if n not in feeds
                         and self._keep_until.get(n, -1) <= k]:
                del values[name]
