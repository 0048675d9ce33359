"""Which tensor agreement, cosine and SQNR compare, the same in ``eval`` and ``sweep``.

The scored output itself, except when a Softmax produces it: probabilities saturate to 0/1 and
hide quantisation error, so the Softmax's input (the logits) is compared instead. Results
record the tensor's name (``sqnr_tensor``).
"""

from __future__ import annotations

import os
from typing import Any


def load(model: str | os.PathLike[str] | bytes | Any) -> Any:
    """An ``onnx.ModelProto`` from a path, serialized bytes, or a proto (returned as is)."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model), load_external_data=False)
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return model


def compared_tensor(model: str | os.PathLike[str] | bytes | Any, output: str) -> str:
    """The Softmax input if ``output`` is produced by a Softmax, else ``output``."""
    for node in load(model).graph.node:
        if output in node.output and node.op_type == "Softmax":
            return str(node.input[0])
    return output


def with_output(model: str | os.PathLike[str] | bytes | Any, tensor: str) -> bytes:
    """Serialized ``model`` with ``tensor`` exposed as an extra graph output."""
    import onnx

    m = onnx.ModelProto()
    if isinstance(model, (str, os.PathLike)):
        m.CopyFrom(onnx.load(os.fspath(model)))  # with external data: ORT gets bytes
    else:
        m.CopyFrom(load(model))
    if tensor not in {o.name for o in m.graph.output}:
        m.graph.output.append(onnx.ValueInfoProto(name=tensor))
    return bytes(m.SerializeToString())


__all__ = ["compared_tensor", "load", "with_output"]
