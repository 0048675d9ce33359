"""The engine's compiled kernels, read from the builder's VERBOSE log (profiling DETAILED).

Part 2 of the engine sidecar (:mod:`quantkit.backends.sidecar`): the table the builder logs after
``Layers:`` lists every compiled kernel with its input/constant/output data types and
dimensions and ``Metadata: [ONNX Layer: name]...``. It is not a stable API, so it is parsed
all-or-nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from quantkit.backends.sidecar import split_metadata

logger = logging.getLogger(__name__)

# Data types as the builder's kernel log spells them (TensorRT-RTX 1.7: Float, Half, Int8).
_LOG_DTYPES = {"float": "fp32", "half": "fp16", "bfloat16": "bf16", "bf16": "bf16",
               "int8": "int8", "int32": "int32", "int64": "int64", "bool": "bool",
               "uint8": "uint8", "fp8": "fp8", "int4": "int4", "fp4": "fp4"}


_KERNEL = re.compile(
    r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*), Inputs: \[(?P<inputs>.*?)\], "
    r"Constants: \[(?P<constants>.*?)\], Outputs: \[(?P<outputs>.*?)\], "
    r"TacticName: (?P<tactic>.*?), StreamId: (?P<stream>-?\d+)(?P<extra>(?:, \w+: [^,]*)*?), "
    r"Metadata: ?(?P<meta>.*)$"
)
# multi-stream engines add ``EventId: N`` to their signal/wait entries (TensorRT-RTX 1.7.1)
_EVENT = re.compile(r"EventId: (-?\d+)")
_DATATYPE = re.compile(r"Datatype: (\w+)")
_ENTRY = re.compile(r"\{(.*?)\}")
_DIMENSIONS = re.compile(r"Dimensions: \[([-\d,\s]*)\]")


def _log_dtypes(text: str) -> list[str]:
    return [_LOG_DTYPES.get(d.lower(), d.lower()) for d in _DATATYPE.findall(text)]


def _log_dims(text: str) -> list[list[int] | None]:
    """The ``Dimensions`` of each ``{ ... }`` tensor entry (None where an entry has none).

    ``-1`` marks a dimension that is dynamic in the optimisation profile.
    """
    out: list[list[int] | None] = []
    for entry in _ENTRY.findall(text):
        if "Datatype:" not in entry:
            continue  # one entry per tensor, in the same order as _log_dtypes
        m = _DIMENSIONS.search(entry)
        out.append([int(d) for d in m[1].split(",") if d.strip()] if m else None)
    return out


def _event(extra: str) -> int | None:
    found = _EVENT.search(extra or "")
    return int(found[1]) if found else None


def parse_engine_log(messages: Iterable[str]) -> list[dict[str, Any]] | None:
    """Read the per-kernel table the builder logs after ``Layers:`` (VERBOSE, DETAILED).

    Args:
        messages: the builder's log messages (one message may hold many lines).

    Returns:
        One entry per kernel (``name``, ``type``, ``tactic``, ``precision``, ``inputs``,
        ``constants``, ``outputs``, ``onnx_layers``, ``stream``, ``event`` (the event id of a
        ``signal``/``wait`` entry of a multi-stream engine, else None), and ``input_dims`` /
        ``constant_dims`` / ``output_dims``: each tensor's dimensions or None), or None when
        there is no such table
        or any of its lines has an unexpected format (it is not a stable API).
    """
    lines = [line for msg in messages for line in msg.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.strip() == "Layers:"]
    if not starts:
        logger.debug("engine log: no 'Layers:' table in the builder log; engine view skipped")
        return None
    kernels: list[dict[str, Any]] = []
    for line in lines[starts[-1] + 1:]:
        if not line.startswith("Name: "):
            break
        m = _KERNEL.match(line)
        if m is None:
            logger.debug("engine log: unexpected kernel line, engine view skipped: %.300s", line)
            return None
        inputs = _log_dtypes(m["inputs"])
        kernels.append({
            "name": m["name"], "type": m["type"], "tactic": m["tactic"],
            "precision": inputs[0] if inputs else None, "inputs": inputs,
            "constants": _log_dtypes(m["constants"]), "outputs": _log_dtypes(m["outputs"]),
            "onnx_layers": split_metadata(m["meta"]),
            "stream": int(m["stream"]), "event": _event(m["extra"]),
            # tensor dimensions, parallel to inputs/constants/outputs (for latency estimates)
            "input_dims": _log_dims(m["inputs"]), "constant_dims": _log_dims(m["constants"]),
            "output_dims": _log_dims(m["outputs"]),
        })
    if not kernels:
        logger.debug("engine log: the 'Layers:' table is empty or unreadable; skipped")
        return None
    return kernels
