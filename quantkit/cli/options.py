"""Option groups shared by several subcommands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from quantkit.errors import InputError

if TYPE_CHECKING:
    from quantkit.options import CalibrationOptions, DataOptions, RunOptions

F = TypeVar("F", bound=Callable[..., Any])

#: largest --batch-size accepted (a bigger batch is a typo, and would be allocated at once)
MAX_BATCH_SIZE = 1_000_000


class Bounded(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """An int or a finite float option within ``[low, high]`` (NaN and infinity refused).

    Args:
        kind: ``int`` or ``float``.
        low: smallest value allowed (``None``: no bound).
        high: largest value allowed (``None``: no bound).
    """

    def __init__(self, kind: type[int] | type[float], low: float | None = None,
                 high: float | None = None) -> None:
        self.kind, self.low, self.high = kind, low, high
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        """Parse and check one value.

        Raises:
            InputError: naming the option (the CLI's one-paragraph error, exit 2).
        """
        import math

        flag = max(param.opts, key=len) if param is not None and param.opts else "value"
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            try:
                number = self.kind(text)
            except ValueError:
                kind = "an integer" if self.kind is int else "a number"
                raise InputError(f"{flag} {text[:40]}: expected {kind}.") from None
        if self.kind is float and not math.isfinite(number):
            raise InputError(f"{flag} {value}: must be a finite number.")
        if (self.low is not None and number < self.low) or \
                (self.high is not None and number > self.high):
            raise InputError(f"{flag} {str(value)[:40]}: must be {self._bounds()}.")
        return number

    def _bounds(self) -> str:
        def show(v: float) -> str:
            return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} from {show(self.low)} to {show(self.high)}"
        if self.low is not None:
            return f"{what} >= {show(self.low)}"
        return f"{what} <= {show(self.high or 0)}"


def data_options(func: F) -> F:
    """``--data`` (required) and the options shaping how it is read (docs/cli.md#data-sources)."""
    return _data_options(func, required=True)


def data_options_optional(func: F) -> F:
    """Like :func:`data_options` with ``--data`` optional (e.g. ``quantize --scales``)."""
    return _data_options(func, required=False)


def _data_options(func: F, required: bool) -> F:
    opts = [
        click.option("--data", "data", required=required, default=None, metavar="D",
                     help="FILE.npz, FILE.npy, DIR/ of images, or hf:NAME[:CONFIG][:SPLIT]."),
        click.option("--batch-size", type=Bounded(int, 1, MAX_BATCH_SIZE), default=32,
                     show_default=True,
                     help="Samples per batch."),
        click.option("--max-samples", type=Bounded(int, 1), default=None,
                     help="Use at most N samples (default: all)."),
        click.option("--seed", type=Bounded(int, 0, 2**32 - 1), default=None,
                     help="With --max-samples: take a seeded random subset instead of the "
                          "first N."),
        click.option("--preprocess", "preprocess_file", type=click.Path(dir_okay=False),
                     default=None,
                     help="YAML with a preprocess: block (images / hf: image columns)."),
        click.option("--column", "columns", multiple=True, metavar="INPUT=COLUMN",
                     help="hf: map a dataset column to a model input (repeatable)."),
        click.option("--streaming", is_flag=True, help="hf: stream the dataset."),
        click.option("--constant", "constants", multiple=True, metavar="INPUT=VALUE",
                     expose_value=False, callback=_keep_layout,
                     help="Feed INPUT this fixed value instead of data (scalar inputs such as "
                          "a sample rate; repeatable)."),
        click.option("--batch-axis", "batch_axes", multiple=True, metavar="INPUT=AXIS",
                     expose_value=False, callback=_keep_layout,
                     help="The model's batch axis of INPUT when it is not detected (e.g. a "
                          "state [layers, batch, hidden]: state=1); the data keeps samples "
                          "first. Repeatable."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def allow_cast_option(func: F) -> F:
    """``--allow-cast``: accept integer data for floating-point inputs."""
    return click.option(
        "--allow-cast", "allow_cast", is_flag=True,
        help="Cast integer data (e.g. uint8 pixels) to the model's float inputs as is, "
             "instead of refusing it. Only for data whose integer values are what the model "
             "expects: unnormalised pixels give scales 255x too large.")(func)


#: where ``--constant`` / ``--batch-axis`` keep their parsed values in the click context
_LAYOUT_KEY = "quantkit.input_layout"


def _keep_layout(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    """Parse ``--constant`` / ``--batch-axis`` into the click context.

    :func:`build_data_options` reads them there, so every command with the data options takes
    them without a new parameter.
    """
    flag = "--constant" if param.name == "constants" else "--batch-axis"
    parsed: dict[str, Any] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            what = "VALUE" if flag == "--constant" else "AXIS"
            raise InputError(f"{flag} {item}: expected INPUT={what}.")
        if flag == "--batch-axis":
            try:
                parsed[name] = int(text)
            except ValueError:
                raise InputError(f"{flag} {item}: the axis must be an integer.") from None
        else:
            parsed[name] = _number(text, f"{flag} {item}")
    if parsed:
        ctx.meta.setdefault(_LAYOUT_KEY, {})[str(param.name)] = parsed


def _number(text: str, where: str) -> float | int | bool:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return float(low)
    except ValueError:
        raise InputError(f"{where}: the value must be a number, true or false.") from None


def build_data_options(preprocess_file: str | None, columns: tuple[str, ...],
                       streaming: bool, seed: int | None) -> dict[str, Any]:
    """Turn the data option values into keyword arguments for ``open_source``.

    ``--constant`` and ``--batch-axis`` (kept in the click context) become ``constants`` and
    ``batch_axes``.
    """
    out: dict[str, Any] = {"seed": seed, "streaming": streaming}
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        out.update(ctx.meta.get(_LAYOUT_KEY, {}))
    if columns:
        mapping = {}
        for item in columns:
            name, sep, col = item.partition("=")
            if not sep or not name or not col:
                raise InputError(f"--column {item}: expected INPUT=COLUMN.")
            mapping[name] = col
        out["columns"] = mapping
    if preprocess_file:
        out["preprocess"] = load_preprocess(preprocess_file)
    return out


def data_group(**changes: Any) -> DataOptions:
    """The data option group of the running command, built once from its click parameters.

    Reads ``--batch-size``, ``--max-samples``, ``--seed``, ``--preprocess``, ``--column``,
    ``--streaming``, ``--constant``, ``--batch-axis`` and ``--allow-cast`` (those the command
    has); ``changes`` override them (e.g. a command whose batch size has another default).
    """
    from quantkit.options import DataOptions

    params = click.get_current_context().params
    opened = build_data_options(params.get("preprocess_file"), params.get("columns", ()),
                                bool(params.get("streaming", False)), params.get("seed"))
    values: dict[str, Any] = {
        "batch_size": params.get("batch_size", 32), "max_samples": params.get("max_samples"),
        "allow_cast": bool(params.get("allow_cast", False)), **opened}
    values.update(changes)
    return DataOptions.of(values)


def calibration_group(method: str, **changes: Any) -> CalibrationOptions:
    """The calibration option group of the running command, built once.

    Reads ``--percentile``, ``--allow-nonfinite``, ``--memory-budget`` and ``--all-tensors``
    (those the command has); ``method`` is the canonical method name (the command checked it)
    and ``changes`` override (e.g. ``trt_version`` parsed from ``--trt-version``).
    """
    from quantkit.options import CalibrationOptions

    params = click.get_current_context().params
    values: dict[str, Any] = {"method": method}
    if params.get("percentile") is not None:
        values["method_options"] = {"percentile": params["percentile"]}
    if params.get("allow_nonfinite"):
        values["allow_nonfinite"] = True
    if params.get("memory_budget") is not None:
        values["memory_budget"] = params["memory_budget"]
    if "all_tensors" in params:  # calibrate: quantized ops' inputs unless --all-tensors
        values["quantized_only"] = not params["all_tensors"]
    values.update(changes)
    return CalibrationOptions.of(values)


def run_group(method: str, **changes: Any) -> RunOptions:
    """The data, calibration and runtime groups of the running command, built once each."""
    from quantkit.options import RunOptions, RuntimeOptions

    return RunOptions(calibration_group(method, **changes), data_group(), RuntimeOptions())


def load_preprocess(path: str) -> Any:
    """Read a ``preprocess:`` block (or a bare mapping) from a YAML file."""
    from quantkit._yaml import load_yaml
    from quantkit.data import PreprocessSpec

    p = Path(path)
    doc = load_yaml(p, "--preprocess")
    if isinstance(doc, dict) and "preprocess" in doc:
        doc = doc["preprocess"]
    if not isinstance(doc, dict):
        raise InputError(f"--preprocess {p}: expected a mapping (or a preprocess: block).")
    return PreprocessSpec.from_mapping(doc, where=str(p))
