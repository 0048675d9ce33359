"""Loading ONNX models and describing their inputs and activation tensors.

``onnx`` is imported inside the functions so that ``import quantkit`` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantkit.data.base import Dim, InputSpec
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


def load_model(path: str | os.PathLike[str], *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX model, with errors that name the file and the fix."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such model file. Give the path of an .onnx model.")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give the path of an .onnx model file.")
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except Exception as err:  # protobuf raises DecodeError, OSError, ValueError...
        raise InputError(
            f"{p}: not a readable ONNX model ({type(err).__name__}: {err}). Check that the "
            "file is complete and was exported as ONNX."
        ) from err
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{p}: not an ONNX model (the graph is empty). Check the file.")
    try:
        onnx.checker.check_model(model if p.stat().st_size < (2 << 30) else str(p))
    except Exception as err:
        raise InputError(f"{p}: invalid ONNX model: {str(err).splitlines()[0]}") from err
    return model


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


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (graph inputs that are not initializers)."""
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
    return specs


def activation_tensors(model: onnx.ModelProto) -> list[ActivationInfo]:
    """Floating-point activation tensors in graph order.

    An activation is a graph input or a node output of float type that depends on a graph
    input; initializers, ``Constant`` outputs and anything computed only from constants
    (weights stored as Constant nodes, shape arithmetic) are not activations.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
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


#: models above this size are saved with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1800 * 1024 * 1024


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Save ``model`` atomically; large models get an external-data file ``<name>.data``.

    Both files are written under temporary names in the destination folder and renamed into
    place only when complete (data first, then the model that references it).
    """
    import tempfile

    import onnx

    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=folder) as tmp:
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
