"""Library parameter names -> command-line flags, for what the command line prints.

The library names its parameters in errors and warnings (``batch_size=0: must be a positive
integer``, ``allow_cast=True``), because a notebook user never typed a flag. The command line
passes every error paragraph and log line through :func:`to_flags`, so its users read the
flags they typed (``--batch-size 0: ...``, ``--allow-cast``). This is the one mapping.
"""

from __future__ import annotations

import logging
import re

#: library parameter -> the flag that sets it
PARAMETER_FLAGS: dict[str, str] = {
    "address": "--ray-address",
    "allow_cast": "--allow-cast",
    "allow_nonfinite": "--allow-nonfinite",
    "batch_axes": "--batch-axis",
    "batch_size": "--batch-size",
    "checkpoint": "--checkpoint",
    "checkpoint_every": "--checkpoint-every",
    "columns": "--column",
    "compute_capabilities": "--compute-capability",
    "constants": "--constant",
    "data": "--data",
    "executor": "--executor",
    "force": "--force",
    "labels": "--labels",
    "max_samples": "--max-samples",
    "memory_budget": "--memory-budget",
    "method": "--method",
    "metric": "--metric",
    "min_shapes": "--min-shapes",
    "max_shapes": "--max-shapes",
    "opt_level": "--opt-level",
    "percentile": "--percentile",
    "relu6_to_relu": "--relu6-to-relu",
    "plugin": "--calibrator",
    "scale_out": "--shards / --executor ray",
    "seed": "--seed",
    "shapes": "--shapes",
    "shards": "--shards",
    "timing_cache": "--timing-cache",
    "backend": "--backend",
    "trt_version": "--trt-version",
    "workspace_mib": "--workspace",
}

#: whole phrases of library messages that have a command-line spelling
PHRASES: dict[str, str] = {
    "load_calibrator_plugin(FILE.py)": "--calibrator FILE.py",
    "columns={INPUT: ARRAY}": "--column INPUT=ARRAY",
}

#: a quoted value, or an unquoted one that does not end in a sentence's full stop
#: (``data=.`` is the bare parameter at the end of a sentence; ``0.5`` and ``m.onnx`` keep theirs)
_VALUE = r"'[^']*'|\"[^\"]*\"|[^\s,;:)]*[^\s,;:).]"
_PATTERN = re.compile(r"(?<![\w.\-])(" + "|".join(sorted(PARAMETER_FLAGS, key=len,
                                                         reverse=True))
                      + r")=(" + _VALUE + r")?")


def _flag(match: re.Match[str]) -> str:
    flag = PARAMETER_FLAGS[match.group(1)]
    value = match.group(2)
    if value is None or value == "True":
        return flag
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return f"{flag} {value}"


def to_flags(message: str) -> str:
    """``message`` with library parameters (``name=value``) spelled as command-line flags.

    ``batch_size=0`` becomes ``--batch-size 0``, ``method='foo'`` ``--method foo``,
    ``allow_cast=True`` ``--allow-cast`` and a bare ``workspace=`` ``--workspace``; names
    that are no parameter of :data:`PARAMETER_FLAGS` are left alone.
    """
    for phrase, flag in PHRASES.items():
        message = message.replace(phrase, flag)
    return _PATTERN.sub(_flag, message)


def leading_flag(message: str, output_flag: str = "--output") -> str:
    """``message`` with a leading evaluation setting's name replaced by its flag.

    Messages of the evaluators start with ``metric``, ``output`` or ``labels``;
    ``output_flag`` is the command's spelling of the output option.
    """
    for word, flag in (("metric", "--metric"), ("output", output_flag), ("labels", "--labels")):
        if message.startswith((f"{word} ", f"{word}:")):
            return flag + message[len(word):]
    return message


class FlagFormatter(logging.Formatter):
    """A log formatter that spells library parameters as flags (:func:`to_flags`)."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record with parameters as flags."""
        return to_flags(super().format(record))
