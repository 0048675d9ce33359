"""Calibration scales: TensorRT's calibration-cache text format and quantkit's scales JSON.

TensorRT cache (``docs/tensorrt_rules.md#calibration-cache-format``)::

    TRT-101300-EntropyCalibration2
    input: 3c010204
    /conv1/Conv_output_0: 3caa54fc

First line ``TRT-<version>-<algorithm>`` (version = major*10000 + minor*100 + patch; old files
use 4-6 digits such as ``TRT-7000-`` or ``TRT-8601-``), then ``name: hex`` per tensor, ``hex``
the big-endian IEEE-754 float32 bits of the scale (``scale = amax / 127``); a zero scale is
written ``0``. Names may contain ``:`` and spaces, so lines are split on the LAST ``": "``.

Scales JSON (``quantkit-scales/1``)::

    {"format": "quantkit-scales/1", "method": "entropy", "model": "m.onnx", "num_samples": 512,
     "tensors": {"input": {"amax": 2.64, "scale": 0.0208}}}

Non-finite numbers are the strings ``"inf"``, ``"-inf"``, ``"nan"``. The scale is the
authoritative field: it is what a cache stores, bit for bit; ``amax`` is ``scale * 127`` when the
JSON was made from a cache.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantkit._io import write_text_atomic
from quantkit.calibrators.base import CACHE_ALGORITHMS
from quantkit.errors import InputError

SCALES_FORMAT = "quantkit-scales/1"
#: TensorRT version written in cache headers by default (10.13.0).
DEFAULT_TRT_VERSION = 101300
_HEADER = re.compile(r"^TRT-(\d{1,8})-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,8}$")
_QMAX = np.float32(127.0)


def scale_from_amax(amax: float) -> float:
    """``float32(amax) / 127`` in float32, as a Python float."""
    return float(np.float32(amax) / _QMAX)


def amax_from_scale(scale: float) -> float:
    """``float32(scale) * 127`` in float32, as a Python float."""
    with np.errstate(over="ignore"):  # a scale near float32 max gives amax = inf, as in float32
        return float(np.float32(scale) * _QMAX)


def float_to_hex(value: float) -> str:
    """Big-endian float32 bits of ``value`` as 8 hex digits (``0`` for +0.0, as TensorRT)."""
    bits = struct.unpack(">I", struct.pack(">f", value))[0]
    return "0" if bits == 0 else f"{bits:08x}"


def hex_to_float(text: str) -> float:
    """Inverse of :func:`float_to_hex` (accepts 1-8 hex digits)."""
    return float(struct.unpack(">f", int(text, 16).to_bytes(4, "big"))[0])


@dataclass
class ScaleTable:
    """Per-tensor scales with their provenance.

    Attributes:
        scales: ``{tensor name: scale}`` (float32 values held as Python floats).
        amaxes: ``{tensor name: amax}``; defaults to ``scale * 127``.
        method: calibration method (``entropy``, ``minmax``, ...) or ``None`` if unknown.
        model: model path the scales were computed for.
        num_samples: number of calibration samples.
        algorithm: TensorRT cache algorithm name.
        trt_version: version number in the cache header.
        settings: method settings (e.g. ``{"percentile": 99.99}``).
    """

    scales: dict[str, float]
    amaxes: dict[str, float] = field(default_factory=dict)
    method: str | None = None
    model: str | None = None
    num_samples: int | None = None
    algorithm: str = "EntropyCalibration2"
    trt_version: int = DEFAULT_TRT_VERSION
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, scale in self.scales.items():
            self.amaxes.setdefault(name, amax_from_scale(scale))

    @classmethod
    def from_amax(cls, amaxes: dict[str, float], **kwargs: Any) -> ScaleTable:
        """Build from ``{name: amax}`` with ``scale = amax / 127``."""
        return cls(scales={n: scale_from_amax(a) for n, a in amaxes.items()},
                   amaxes={n: float(np.float32(a)) for n, a in amaxes.items()}, **kwargs)

    # -- TensorRT cache ---------------------------------------------------------------------
    def to_trt_cache(self) -> str:
        """The TensorRT calibration-cache text."""
        lines = [f"TRT-{self.trt_version}-{self.algorithm}"]
        for name, scale in self.scales.items():
            if "\n" in name or "\r" in name:
                raise InputError(f"tensor name {name!r} contains a line break; a TensorRT "
                                 "cache cannot hold it.")
            lines.append(f"{name}: {float_to_hex(scale)}")
        return "\n".join(lines) + "\n"

    # -- scales JSON ------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The ``quantkit-scales/1`` document as a dict."""
        doc: dict[str, Any] = {
            "format": SCALES_FORMAT,
            "method": self.method,
            "model": self.model,
            "num_samples": self.num_samples,
        }
        if self.settings:
            doc["settings"] = dict(self.settings)
        doc["trt_cache"] = {"version": self.trt_version, "algorithm": self.algorithm}
        doc["tensors"] = {
            name: {"amax": _num_out(self.amaxes[name]), "scale": _num_out(scale)}
            for name, scale in self.scales.items()
        }
        return doc

    def to_json(self) -> str:
        """The ``quantkit-scales/1`` document as text."""
        return json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n"

    def write(self, path: str | Path, fmt: str | None = None) -> None:
        """Write atomically as ``"cache"`` or ``"json"`` (default: by suffix, ``.json``)."""
        fmt = fmt or ("json" if str(path).lower().endswith(".json") else "cache")
        write_text_atomic(path, self.to_json() if fmt == "json" else self.to_trt_cache())


def _num_out(v: float) -> float | str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _num_in(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise InputError(f"{where}: expected a number, got {v!r}.")
    if isinstance(v, (int, float)):
        value = float(v)
        with np.errstate(over="ignore"):
            overflows = bool(np.isfinite(value) and np.isinf(np.float32(value)))
        if overflows:
            raise InputError(f"{where}: {v!r} is beyond float32's range (TensorRT stores scales "
                             "as float32); write \"inf\" if the tensor has no finite range.")
        return value
    if isinstance(v, str) and v.strip().lower() in ("inf", "+inf", "-inf", "nan"):
        return float(v.strip().lower())
    raise InputError(f"{where}: expected a number or \"inf\"/\"-inf\"/\"nan\", got {v!r}.")


def parse_trt_cache(text: str, source: str = "<cache>") -> ScaleTable:
    """Parse TensorRT calibration-cache text (any version, any algorithm name).

    Raises:
        InputError: naming ``source`` and the line number of the first malformed line.
    """
    # split on "\n" only: str.splitlines() would also split names on \x85, \u2028, ...
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    if not text.strip():
        raise InputError(f"{source}: empty file, not a TensorRT calibration cache.")
    m = _HEADER.match(lines[0].strip())
    if not m:
        raise InputError(
            f"{source}:1: not a TensorRT calibration cache: the first line must look like "
            f"'TRT-101300-EntropyCalibration2', got {lines[0][:80]!r}."
        )
    version, algorithm = int(m.group(1)), m.group(2)
    if algorithm not in CACHE_ALGORITHMS:
        raise InputError(
            f"{source}:1: unknown calibration algorithm {algorithm!r}; TensorRT writes one of "
            f"{', '.join(CACHE_ALGORITHMS)}."
        )
    scales: dict[str, float] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, hexval = line.rpartition(": ")
        hexval = hexval.strip()
        if not sep or not name or not _HEX.match(hexval):
            raise InputError(
                f"{source}:{lineno}: malformed line {line[:120]!r}; expected "
                "'TENSOR_NAME: <up to 8 hex digits>'."
            )
        if "\r" in name:  # a stray carriage return inside a line: no tensor is named so
            raise InputError(f"{source}:{lineno}: tensor name {name[:120]!r} contains a "
                             "carriage return; fix the line endings of the cache.")
        if name in scales:
            raise InputError(f"{source}:{lineno}: tensor {name!r} appears twice.")
        scales[name] = hex_to_float(hexval)
    method = "minmax" if algorithm == "MinMaxCalibration" else None
    return ScaleTable(scales=scales, algorithm=algorithm, trt_version=version, method=method)


#: largest scales file read (bytes), most characters in a JSON number
MAX_SCALES_BYTES = 512 * 1024 * 1024
MAX_NUMBER_CHARS = 64
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


def _bounded_number(source: str, kind: type) -> Any:
    def parse(token: str) -> Any:
        if len(token) > MAX_NUMBER_CHARS:
            raise InputError(f"{source}: a number with {len(token)} characters "
                             f"({token[:20]}...); scales files hold float32 values, at most "
                             f"{MAX_NUMBER_CHARS} characters each.")
        return kind(token)
    return parse


def check_scale_range(name: str, scale: float, where: str) -> None:
    """Refuse a finite non-zero scale TensorRT cannot use as float32.

    A subnormal scale (below float32's smallest normal, ~1.18e-38) saturates every value of the
    tensor; a scale whose ``amax = scale * 127`` overflows float32 does too in the other
    direction. Zero and the non-finite markers keep their own meaning.

    Raises:
        InputError: naming the tensor and the value.
    """
    if not math.isfinite(scale) or scale == 0.0:
        return
    if abs(scale) < _F32_TINY:
        raise InputError(f"{where}: scale {scale:.6g} of tensor {name!r} is a subnormal float32 "
                         "(below 1.18e-38); TensorRT would saturate every value of the tensor. "
                         "Re-calibrate, or give the tensor's real range.")
    if abs(scale) * 127.0 > _F32_MAX:
        raise InputError(f"{where}: scale {scale:.6g} of tensor {name!r} makes amax = scale * "
                         "127 overflow float32; no real tensor has this range. Re-calibrate, or "
                         "write \"inf\" if the tensor has no finite range.")


def parse_scales_json(text: str, source: str = "<json>") -> ScaleTable:
    """Parse a ``quantkit-scales/1`` document.

    Numbers longer than :data:`MAX_NUMBER_CHARS` characters are refused before they are
    converted, nesting deeper than the parser's recursion limit with a clear error.
    """
    try:
        doc = json.loads(text, parse_int=_bounded_number(source, int),
                         parse_float=_bounded_number(source, float))
    except json.JSONDecodeError as err:
        raise InputError(f"{source}:{err.lineno}: invalid JSON: {err.msg}.") from err
    except RecursionError:
        raise InputError(f"{source}: JSON nested too deeply; a scales file is three levels "
                         "(document, tensors, entry).") from None
    if not isinstance(doc, dict) or doc.get("format") != SCALES_FORMAT:
        raise InputError(f"{source}: not a quantkit scales file (expected \"format\": "
                         f"\"{SCALES_FORMAT}\").")
    tensors = doc.get("tensors")
    if not isinstance(tensors, dict):
        raise InputError(f"{source}: \"tensors\" must be an object of "
                         "{name: {\"amax\": ..., \"scale\": ...}}.")
    scales: dict[str, float] = {}
    amaxes: dict[str, float] = {}
    for name, entry in tensors.items():
        where = f"{source}: tensors[{name!r}]"
        if not isinstance(entry, dict) or ("scale" not in entry and "amax" not in entry):
            raise InputError(f"{where}: expected {{\"amax\": ..., \"scale\": ...}}.")
        if "scale" in entry:
            scales[name] = float(np.float32(_num_in(entry["scale"], f"{where}.scale")))
        if "amax" in entry:
            amaxes[name] = _num_in(entry["amax"], f"{where}.amax")
        if name not in scales:
            scales[name] = scale_from_amax(amaxes[name])
    trt = doc.get("trt_cache") or {}
    settings = doc.get("settings") or {}
    if not isinstance(trt, dict) or not isinstance(settings, dict):
        bad = "trt_cache" if not isinstance(trt, dict) else "settings"
        raise InputError(f"{source}: \"{bad}\" must be an object.")
    version = trt.get("version", DEFAULT_TRT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int | str) \
            or not str(version).isdigit():
        raise InputError(f"{source}: trt_cache.version must be an integer such as 101300, got "
                         f"{version!r}.")
    num = doc.get("num_samples")
    return ScaleTable(
        scales=scales, amaxes=amaxes, method=doc.get("method"), model=doc.get("model"),
        num_samples=int(num) if isinstance(num, int) else None,
        algorithm=str(trt.get("algorithm", "EntropyCalibration2")),
        trt_version=int(version),
        settings=dict(settings),
    )


def detect_format(path: str | Path, text: str) -> str:
    """``"json"`` or ``"cache"`` for a scales file, by content."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "json"
    if stripped.startswith("TRT-"):
        return "cache"
    raise InputError(
        f"{path}: neither a TensorRT calibration cache (first line 'TRT-<version>-<algorithm>') "
        "nor a quantkit scales JSON."
    )


def read_scales(path: str | Path, *, check_range: bool = True) -> ScaleTable:
    """Read a TensorRT cache or a scales JSON (detected by content).

    A UTF-8 byte-order mark is accepted. With ``check_range`` (the default: the scales are
    about to be used) finite scales TensorRT cannot use (subnormal, or overflowing ``amax``)
    are refused (:func:`check_scale_range`); without it the file is read losslessly, as
    ``quantkit cache show/convert`` need.

    Raises:
        InputError: unreadable, malformed or out-of-range file, naming it.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:  # bounded: a pipe or device has no useful size
            if os.fstat(fh.fileno()).st_size > MAX_SCALES_BYTES:
                raise InputError(f"{p}: more than {MAX_SCALES_BYTES:,} bytes; not a scales "
                                 "file.")
            raw = fh.read(MAX_SCALES_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file.") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder; give a TensorRT cache or a scales JSON.") from None
    except OSError as err:
        raise InputError(f"{p}: cannot read: {err.strerror}.") from err
    if len(raw) > MAX_SCALES_BYTES:
        raise InputError(f"{p}: more than {MAX_SCALES_BYTES:,} bytes; not a scales file.")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is accepted
    except UnicodeDecodeError as err:
        raise InputError(f"{p}: not a text file (byte {err.start} is not UTF-8); expected a "
                         "TensorRT calibration cache or a quantkit scales JSON.") from err
    if detect_format(p, text) == "json":
        table = parse_scales_json(text, str(p))
    else:
        table = parse_trt_cache(text, str(p))
    for name, scale in table.scales.items() if check_range else ():
        check_scale_range(name, scale, str(p))
    return table
