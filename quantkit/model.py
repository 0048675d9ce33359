"""Loading ONNX models and describing their inputs and activation tensors.

``onnx`` is imported inside the functions so that ``import quantkit`` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantkit.data.base import Dim, InputLayout, InputSpec
from quantkit.errors import InputError

if TYPE_CHECKING:
    import onnx

_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 16: None}  # 16 = bfloat16


@dataclass(frozen=True)
class ActivationInfo:
    """A floating-point activation tensor of the graph (graph input or node output)."""

    name: str
    elem_type: int
    producer: str | None  # node name, None for graph inputs
    op_type: str | None


#: the most elements quantkit accepts in one tensor with a fully static shape (8 GiB of float32).
MAX_TENSOR_ELEMENTS = 1 << 31


def load_model(path: str | os.PathLike[str], *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX model, with errors that name the file and the fix.

    A model is untrusted input: before any external data is read, every external-data
    ``location`` must be a relative path inside the model's folder, and tensor shapes must be
    plausible (no negative dimensions other than ``-1``, no static shape over
    :data:`MAX_TENSOR_ELEMENTS` elements, initializers whose stored data matches their shape).
    """
    import onnx

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such model file. Give the path of an .onnx model.")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give the path of an .onnx model file.")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError, OSError, ValueError...
        raise InputError(
            f"{p}: not a readable ONNX model ({type(err).__name__}: {err}). Check that the "
            "file is complete and was exported as ONNX."
        ) from err
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{p}: not an ONNX model (the graph is empty). Check the file.")
    check_model_safety(model, p)
    if load_external_data and external_data_files(model, p):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(p.parent))
        except Exception as err:
            raise InputError(
                f"{p}: cannot read the model's external data ({type(err).__name__}: {err}). "
                "Keep the data files next to the model, as they were saved."
            ) from err
    try:
        # the file itself: checking the loaded proto serializes it again (and ByteSize walks
        # it), seconds for a ViT-B/16; the checker reads external data files from the path
        onnx.checker.check_model(str(p))
    except Exception as err:
        raise InputError(f"{p}: invalid ONNX model: {str(err).splitlines()[0]}") from err
    if model.ir_version < 4:  # IR 3 requires every initializer among the inputs; IR 4 reads
        model.ir_version = 4  # the same graph alike and lets quantkit add initializers (scales)
    return model


def _all_tensors(graph: Any, where: str = "") -> Any:
    """``(where, TensorProto)`` for every tensor stored in ``graph`` and its subgraphs."""
    for t in graph.initializer:
        yield f"{where}initializer '{t.name}'", t
    for sp in graph.sparse_initializer:
        yield f"{where}sparse initializer '{sp.values.name}'", sp.values
        yield f"{where}sparse initializer '{sp.values.name}' (indices)", sp.indices
    for node in graph.node:
        for attr in node.attribute:
            label = f"{where}node '{node.name or node.op_type}' attribute '{attr.name}'"
            if attr.HasField("t"):
                yield label, attr.t
            for t in attr.tensors:
                yield label, t
            if attr.HasField("g"):
                yield from _all_tensors(attr.g, f"{label} > ")
            for g in attr.graphs:
                yield from _all_tensors(g, f"{label} > ")


def _external_location(tensor: Any) -> str | None:
    if tensor.data_location != 1:  # TensorProto.EXTERNAL
        return None
    for entry in tensor.external_data:
        if entry.key == "location":
            return str(entry.value)
    return ""


def external_data_files(model: onnx.ModelProto, path: str | os.PathLike[str]) -> list[Path]:
    """The external-data files a model refers to (resolved; checked to stay in its folder).

    Raises:
        InputError: a ``location`` that is empty, absolute, or leads outside the model's folder.
    """
    p = Path(path)
    base = p.resolve().parent
    files: dict[Path, None] = {}
    for where, tensor in _all_tensors(model.graph):
        location = _external_location(tensor)
        if location is None:
            continue
        fix = ("External data must be a relative path inside the model's folder; re-save the "
               "model with onnx.save_model(..., save_as_external_data=True, location='NAME').")
        if not location or "\0" in location:
            raise InputError(f"{p}: {where}: the external-data location is empty. {fix}")
        loc = Path(location)
        if loc.is_absolute() or location.startswith(("/", "\\")) or (
                len(location) > 1 and location[1] == ":"):
            raise InputError(f"{p}: {where}: the external-data location {location!r} is an "
                             f"absolute path. {fix}")
        full = (base / loc).resolve()
        if base not in full.parents:
            raise InputError(f"{p}: {where}: the external-data location {location!r} leads "
                             f"outside the model's folder {base}. {fix}")
        files[full] = None
    return list(files)


def _elements(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _check_shape(p: Path, what: str, dims: list[int]) -> None:
    bad = [d for d in dims if d < -1]
    if bad:
        raise InputError(f"{p}: {what} has the dimension {bad[0]} (shape {dims}); dimensions "
                         "are >= 0, or -1 / a name for a dynamic one. Re-export the model.")
    static = [d for d in dims if d >= 0]
    if _elements(static) > MAX_TENSOR_ELEMENTS:  # a dynamic dim only adds to it
        dynamic = " with its dynamic dims at 1" if len(static) < len(dims) else ""
        raise InputError(f"{p}: {what} declares {_elements(static)} elements{dynamic} (shape "
                         f"{dims}), more than quantkit accepts in one tensor "
                         f"({MAX_TENSOR_ELEMENTS}). Check the export (a corrupt or hostile "
                         "file?).")


#: bytes per element of the ONNX element types whose storage is one element per item
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
             14: 8, 15: 16, 16: 2}


def _stored_elements(tensor: Any) -> int | None:
    """How many elements a tensor's inline data holds (``None``: not checked)."""
    itemsize = _ITEMSIZE.get(tensor.data_type)
    if itemsize is None:  # strings, packed sub-byte and float8 types: not checked
        return None
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data) // itemsize
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        n = len(getattr(tensor, field))
        if n:
            return n // 2 if tensor.data_type in (14, 15) else n  # complex: two per element
    return 0


def check_model_safety(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Refuse what a hostile or corrupt model could use to escape its folder or exhaust memory.

    Raises:
        InputError: naming the tensor and the fix.
    """
    p = Path(path)
    files = external_data_files(model, p)
    sizes: dict[Path, int] = {}
    for f in files:
        if not f.is_file():
            raise InputError(f"{p}: the external-data file {f.name} is missing; keep the data "
                             "files next to the model, as they were saved.")
        sizes[f] = f.stat().st_size
    base = p.resolve().parent
    for where, tensor in _all_tensors(model.graph):
        dims = [int(d) for d in tensor.dims]
        if any(d < 0 for d in dims):
            raise InputError(f"{p}: {where} has a negative dimension (shape {dims}); stored "
                             "tensors have fixed, non-negative dimensions. Re-export the model.")
        count = _elements(dims)
        location = _external_location(tensor)
        if location is not None:
            info = {e.key: e.value for e in tensor.external_data}
            try:
                offset, length = int(info.get("offset", 0)), info.get("length")
            except ValueError:
                raise InputError(f"{p}: {where}: external-data offset {info.get('offset')!r} "
                                 "is not a number. Re-save the model.") from None
            size = sizes.get((base / location).resolve(), 0)
            if offset < 0 or offset > size or (length is not None and (
                    not str(length).isdigit() or offset + int(length) > size)):
                raise InputError(f"{p}: {where}: its external data (offset {offset}, length "
                                 f"{length}) lies outside {location} ({size} bytes). The data "
                                 "file is truncated or does not belong to this model.")
            itemsize = _ITEMSIZE.get(tensor.data_type, 0)
            avail = int(length) if length is not None else size - offset
            if itemsize and count * itemsize > avail:
                raise InputError(f"{p}: {where} declares shape {dims} ({count * itemsize} "
                                 f"bytes) but its external data holds {avail} bytes. The "
                                 "model is corrupt; re-export it.")
            continue
        stored = _stored_elements(tensor)
        if stored is not None and stored != count:
            raise InputError(f"{p}: {where} declares shape {dims} ({count} elements) but "
                             f"stores {stored}. The model is corrupt; re-export it.")
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims_or_sym = [int(d.dim_value) if d.HasField("dim_value") else -1
                       for d in vi.type.tensor_type.shape.dim]
        _check_shape(p, f"tensor '{vi.name}'", dims_or_sym)


def _dims(value_info: Any) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return tuple(dims)


def input_specs(model: onnx.ModelProto, layout: InputLayout | None = None) -> list[InputSpec]:
    """The model's real inputs (graph inputs that are not initializers), as they are fed.

    Args:
        model: the model.
        layout: batch axes and constant inputs given by the user; the other inputs' batch
            axes are detected from their shapes (:meth:`InputLayout.apply`).
    """
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        elem = vi.type.tensor_type.elem_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        except Exception as err:
            raise InputError(f"model input '{vi.name}': unsupported element type {elem}.") from err
        specs.append(InputSpec(vi.name, dtype, _dims(vi)))
    return (layout or InputLayout()).apply(specs)


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers keep their name, type and dims only.

    Shape inference needs the data of small tensors (shape arithmetic) and the dims of the
    rest; sending the weights to it would serialize and parse them twice (seconds on a
    ViT-B/16).
    """
    import onnx

    probe = onnx.ModelProto(ir_version=model.ir_version)
    probe.opset_import.extend(model.opset_import)
    probe.functions.extend(model.functions)
    graph, copy = model.graph, probe.graph
    copy.name = graph.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(copy, field).extend(getattr(graph, field))
    for t in graph.initializer:
        if _elements(t.dims) <= 4096:
            probe.graph.initializer.add().CopyFrom(t)
        else:
            shell = probe.graph.initializer.add()
            shell.name, shell.data_type = t.name, t.data_type
            shell.dims.extend(t.dims)
    return probe


def activation_tensors(model: onnx.ModelProto) -> list[ActivationInfo]:
    """Floating-point activation tensors in graph order.

    An activation is a graph input or a node output of float type that depends on a graph
    input; initializers, ``Constant`` outputs and anything computed only from constants
    (weights stored as Constant nodes, shape arithmetic) are not activations.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False)
    except Exception:  # inference is best effort: unknown types are resolved by running
        inferred = model
    types: dict[str, int] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    inits = {i.name for i in model.graph.initializer}
    live: set[str] = set()
    out: list[ActivationInfo] = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        live.add(vi.name)
        if types.get(vi.name) in _FLOAT_TYPES:
            out.append(ActivationInfo(vi.name, types[vi.name], None, None))
    for node in model.graph.node:
        if not any(i in live for i in node.input if i):
            continue
        for name in node.output:
            if not name:
                continue
            live.add(name)
            if types.get(name, 1) in _FLOAT_TYPES:
                out.append(ActivationInfo(name, types.get(name, 0), node.name or None,
                                          node.op_type))
    return out


def subgraph_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """``{control-flow node of the main graph: nodes inside its bodies}`` (If/Loop/Scan).

    Nested bodies count towards the main-graph node that holds them; bodies without nodes are
    left out.
    """
    from quantkit.graph import has_subgraph, nested_nodes, subgraphs

    out: dict[str, int] = {}
    for node in model.graph.node:
        if not has_subgraph(node):
            continue
        count = sum(len(g.node) for g in subgraphs(node))
        count += sum(sum(1 for _ in nested_nodes(g)) for g in subgraphs(node))
        if count:
            out[f"{node.op_type} '{node.name or node.output[0]}'"] = count
    return out


#: ops that only exist in models that are already quantized (QOperator format or Q/DQ)
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
    "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearLeakyRelu",
    "QLinearSigmoid", "QLinearSoftmax", "QAttention", "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QEmbedLayerNormalization",
})


@dataclass(frozen=True)
class QuantizedOps:
    """The quantization ops found in a model (see :func:`find_quantized_ops`).

    Attributes:
        counts: ``{op type: number of nodes}`` over the graph and its subgraphs.
        first: the name (or op type) of the first such node, in graph order.
    """

    counts: dict[str, int]
    first: str

    @property
    def total(self) -> int:
        """Number of quantization nodes."""
        return sum(self.counts.values())

    def describe(self) -> str:
        """``12 node(s): 8 QuantizeLinear, 4 ConvInteger; the first is 'conv1_quant'``."""
        kinds = ", ".join(f"{n} {op}" for op, n in sorted(self.counts.items(),
                                                          key=lambda kv: (-kv[1], kv[0])))
        return f"{self.total} node(s): {kinds}; the first is '{self.first}'"


def find_quantized_ops(model: onnx.ModelProto) -> QuantizedOps | None:
    """The quantization ops of ``model`` (main graph and If/Loop/Scan bodies), or ``None``."""
    from quantkit.graph import walk_graphs

    counts: dict[str, int] = {}
    first = ""
    for graph, _ in walk_graphs(model.graph):
        for node in graph.node:
            if node.op_type in QUANTIZED_OPS:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
                first = first or node.name or node.op_type
    return QuantizedOps(counts, first) if counts else None


def check_not_quantized(model: onnx.ModelProto, path: str | os.PathLike[str],
                        action: str = "calibrated") -> None:
    """Refuse a model that is already quantized: its tensors are not FP32 activations.

    Calibrating such a model measures ONNX Runtime's integer internals, and quantizing it
    again finds no float compute node to quantize.

    Args:
        model: the loaded model.
        path: its file, for the message.
        action: what was asked (``calibrated``, ``quantized``...), for the message.

    Raises:
        InputError: naming the quantization ops found and the way forward.
    """
    found = find_quantized_ops(model)
    if found is None:
        return
    raise InputError(
        f"{path}: the model is already quantized ({found.describe()}), so it cannot be "
        f"{action}: quantkit starts from the FP32 (or FP16) model. Check this one's Q/DQ "
        "placement with `quantkit inspect`, or re-run from the float model it was made from."
    )


#: models above this size are saved with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1800 * 1024 * 1024


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Save ``model`` atomically; large models get an external-data file ``<name>.data``.

    Both files are written under temporary names in the destination folder and renamed into
    place only when complete (data first, then the model that references it).
    """
    import tempfile

    import onnx

    from quantkit._io import naming_errors, resolve_output, temp_prefix

    dest = resolve_output(path)  # never a device or pipe; a symlink is written through
    folder = dest.parent if str(dest.parent) else Path(".")
    with naming_errors(dest), \
            tempfile.TemporaryDirectory(prefix=temp_prefix(dest.name), dir=folder) as tmp:
        tmp_model = Path(tmp) / dest.name
        large = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
        data_name = f"{dest.name}.data"
        if large:
            onnx.save_model(model, str(tmp_model), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name,
                            size_threshold=0)
            data = Path(tmp) / data_name
            if data.exists():  # absent when no tensor reached the size threshold
                with open(data, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(data, folder / data_name)
        else:
            onnx.save_model(model, str(tmp_model))
        with open(tmp_model, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_model, dest)
