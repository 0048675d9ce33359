"""Option groups shared by several subcommands."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from quantkit.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


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
        click.option("--batch-size", type=int, default=32, show_default=True,
                     help="Samples per batch."),
        click.option("--max-samples", type=int, default=None,
                     help="Use at most N samples (default: all)."),
        click.option("--seed", type=int, default=None,
                     help="With --max-samples: take a seeded random subset instead of the "
                          "first N."),
        click.option("--preprocess", "preprocess_file", type=click.Path(dir_okay=False),
                     default=None,
                     help="YAML with a preprocess: block (images / hf: image columns)."),
        click.option("--column", "columns", multiple=True, metavar="INPUT=COLUMN",
                     help="hf: map a dataset column to a model input (repeatable)."),
        click.option("--streaming", is_flag=True, help="hf: stream the dataset."),
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


@contextlib.contextmanager
def cast_flag_errors() -> Iterator[None]:
    """Name ``--allow-cast`` where the library's data errors name the ``allow_cast`` option."""
    from quantkit.data import ALLOW_CAST_HINT

    try:
        yield
    except InputError as err:
        text = str(err)
        if ALLOW_CAST_HINT not in text:
            raise
        raise InputError(text.replace(ALLOW_CAST_HINT, "--allow-cast")) from err


def build_data_options(preprocess_file: str | None, columns: tuple[str, ...],
                       streaming: bool, seed: int | None) -> dict[str, Any]:
    """Turn the data option values into keyword arguments for ``open_source``."""
    out: dict[str, Any] = {"seed": seed, "streaming": streaming}
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
