"""``open_source``: turn a ``--data`` value (or a Python object) into a :class:`DataSource`.

String specs are dispatched through :data:`SOURCE_KINDS`, a registry filled with
:func:`register_source_kind`; the built-in kinds are ``hf:``, ``.npz``, ``.npy`` and image
folders, tried in that order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantkit.data.base import Batch, DataSource, InputLayout, InputSpec
from quantkit.errors import InputError

if TYPE_CHECKING:  # imported when a preprocessing mapping is given (pydantic is heavy)
    from quantkit.data.preprocess import PreprocessSpec


@dataclass(frozen=True)
class OpenOptions:
    """Options of :func:`open_source` passed on to a source kind's opener."""

    preprocess: PreprocessSpec | None = None
    columns: Mapping[str, str] | None = None
    streaming: bool = False
    seed: int | None = None


Opener = Callable[[str, Sequence[InputSpec], OpenOptions], DataSource]


@dataclass(frozen=True)
class SourceKind:
    """A kind of ``--data`` string.

    Attributes:
        name: short name (``npz``).
        pattern: how the spec looks, shown in error messages (``FILE.npz``).
        matches: whether a spec string is of this kind.
        open: builds the source.
    """

    name: str
    pattern: str
    matches: Callable[[str], bool]
    open: Opener


#: registered kinds of ``--data`` strings, tried in insertion order
SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source_kind(name: str, pattern: str,
                         matches: Callable[[str], bool]) -> Callable[[Opener], Opener]:
    """Decorator registering an opener for a kind of ``--data`` string.

    Args:
        name: short name of the kind; registering a name again replaces it.
        pattern: how the spec looks, listed in the "unknown data" error.
        matches: predicate on the spec string.
    """

    def decorate(opener: Opener) -> Opener:
        SOURCE_KINDS[name] = SourceKind(name, pattern, matches, opener)
        return opener

    return decorate


def _suffix(spec: str) -> str:
    return Path(spec).suffix.lower()


@register_source_kind("hf", "hf:NAME[:CONFIG][:SPLIT]", lambda s: s.startswith("hf:"))
def _open_hf(spec: str, inputs: Sequence[InputSpec], opts: OpenOptions) -> DataSource:
    from quantkit.data.hf import HFSource, parse_hf_spec

    name, config, split = parse_hf_spec(spec)
    return HFSource(name, inputs, config=config, split=split, columns=opts.columns,
                    preprocess=opts.preprocess, streaming=opts.streaming, seed=opts.seed)


@register_source_kind("npz", "FILE.npz", lambda s: _suffix(s) == ".npz")
def _open_npz(spec: str, inputs: Sequence[InputSpec], opts: OpenOptions) -> DataSource:
    from quantkit.data.npz import NpzSource

    return NpzSource(spec, inputs, columns=opts.columns, seed=opts.seed)


@register_source_kind("npy", "FILE.npy", lambda s: _suffix(s) == ".npy")
def _open_npy(spec: str, inputs: Sequence[InputSpec], opts: OpenOptions) -> DataSource:
    from quantkit.data.npy import NpySource

    return NpySource(spec, inputs, seed=opts.seed)


@register_source_kind("images", "DIR/ of images", lambda s: Path(s).is_dir())
def _open_images(spec: str, inputs: Sequence[InputSpec], opts: OpenOptions) -> DataSource:
    from quantkit.data.images import ImageFolderSource

    return ImageFolderSource(spec, inputs, preprocess=opts.preprocess, seed=opts.seed)


def open_source(spec: str | os.PathLike[str] | DataSource | Iterable[Any] | Any,
                inputs: Sequence[InputSpec], *,
                preprocess: PreprocessSpec | Mapping[str, Any] | None = None,
                columns: Mapping[str, str] | None = None, streaming: bool = False,
                seed: int | None = None, constants: Mapping[str, Any] | None = None,
                batch_axes: Mapping[str, int] | None = None) -> DataSource:
    """Open a data source for a model's inputs.

    Args:
        spec: a ``--data`` string or path (``FILE.npz``, ``FILE.npy``, an image folder,
            ``hf:NAME[:CONFIG][:SPLIT]``, or any kind added with :func:`register_source_kind`);
            an existing :class:`DataSource` (returned as is); a Hugging Face ``Dataset``; a
            numpy array or ``{input name: array}`` mapping held in memory; or any iterable
            (list, generator, torch ``DataLoader``) or zero-argument callable returning one,
            read by :class:`~quantkit.data.iterable.IterableSource` (a ``DataLoader`` keeps its
            own batch size).
        inputs: the model's inputs.
        preprocess: image preprocessing (a :class:`PreprocessSpec` or the recipe's mapping);
            default derived from the input shape. Used by image folders and image columns.
        columns: ``{input name: column/array/key name}`` for hf datasets, npz archives,
            in-memory mappings and mapping items of iterables, when their names differ from
            the model's input names. Image folders and ``.npy`` files have no names and
            ignore it.
        streaming: read ``hf:`` datasets as streaming ``IterableDataset`` s. Other kinds always
            stream and ignore it.
        seed: when ``max_samples`` is smaller than the data and its length is known (npz, npy,
            image folders, map-style hf, in-memory arrays), read a seeded random subset of
            samples, kept in ascending order so reads stay sequential, instead of the first
            ``max_samples``. Streaming datasets and iterables ignore it.
        constants: ``{input name: value}`` for inputs fed one fixed value instead of data
            (:class:`~quantkit.data.base.InputLayout`); required for rank-0 (scalar) inputs.
            The data then has only the other inputs; each batch gets the constants added.
        batch_axes: ``{input name: axis}``, the model's batch axis of inputs whose batch is
            not their first axis (the data still stores samples first).

    Raises:
        InputError: missing file, unknown kind of spec (the message lists the accepted
            kinds), or data that does not fit the model.
    """
    if isinstance(spec, DataSource):
        return spec
    layout = InputLayout(dict(batch_axes or {}), dict(constants or {}))
    inputs = layout.apply(inputs)
    fixed = [s for s in inputs if s.batch_axis is None]
    missing = [s for s in fixed if s.name not in layout.constants]
    if missing:
        raise InputError(
            f"model input {missing[0].describe()} is a scalar (it has no batch axis), so it "
            "cannot be read from the data: give its value with the constants option "
            f"({missing[0].name}=VALUE), the same for every sample.")
    if fixed:
        fed = [s for s in inputs if s.batch_axis is not None]
        if not fed:
            raise InputError("every model input is a constant: there is no data to read.")
        inner = open_source(spec, fed, preprocess=preprocess, columns=columns,
                            streaming=streaming, seed=seed)
        return ConstantInputs(inner, fixed, layout.constants)
    if isinstance(preprocess, Mapping):
        from quantkit.data.preprocess import PreprocessSpec

        preprocess = PreprocessSpec.from_mapping(preprocess)
    opts = OpenOptions(preprocess, columns, streaming, seed)
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        for kind in SOURCE_KINDS.values():
            if kind.matches(text):
                return kind.open(text, inputs, opts)
        if not text.startswith("hf:") and not Path(text).exists():
            raise InputError(f"--data {text}: no such file or folder. Check the path. "
                             f"{_accepted()}")
        raise InputError(f"--data {text}: unknown kind of data. {_accepted()}")
    if type(spec).__module__.split(".")[0] == "datasets":
        from quantkit.data.hf import HFSource

        return HFSource(spec, inputs, columns=columns, preprocess=preprocess,
                        streaming=streaming, seed=seed)
    if isinstance(spec, (np.ndarray, Mapping)):
        from quantkit.data.npy import ArraySource

        return ArraySource(spec, inputs, columns=columns, seed=seed)
    if hasattr(spec, "detach") and hasattr(spec, "shape"):  # a tensor: in-memory samples
        from quantkit.data.npy import ArraySource

        return ArraySource(spec, inputs, seed=seed, description=f"<{type(spec).__name__}>")
    if isinstance(spec, Iterable) or callable(spec):
        from quantkit.data.iterable import IterableSource

        return IterableSource(spec, inputs, columns=columns)
    raise InputError(f"data of type {type(spec).__name__} is not supported. {_accepted()}")


def _accepted() -> str:
    kinds = "; ".join(k.pattern for k in SOURCE_KINDS.values())
    return (f"Accepted: {kinds}; or, from Python, a DataSource, an iterable or DataLoader, or "
            "arrays.")


class ConstantInputs(DataSource):
    """A source whose batches also carry the model's constant inputs.

    Args:
        source: the data for the other inputs.
        specs: the constant inputs (static shapes).
        values: ``{input name: value}``; every element of the input gets the value.
    """

    def __init__(self, source: DataSource, specs: Sequence[InputSpec],
                 values: Mapping[str, Any]) -> None:
        self._source = source
        self.description = source.description
        self._arrays: Batch = {}
        for s in specs:
            value = values[s.name]
            try:
                arr = np.full([int(d) for d in s.shape if d is not None], value,
                              dtype=np.dtype(s.dtype))
            except (TypeError, ValueError, OverflowError) as err:
                raise InputError(f"constants: {s.name}={value!r} is not a valid "
                                 f"{np.dtype(s.dtype).name} value ({err}).") from err
            if np.dtype(s.dtype).kind in "iub" and arr.size and arr.flat[0] != value:
                raise InputError(f"constants: {s.name}={value!r} does not fit the input's "
                                 f"type {np.dtype(s.dtype).name}.")
            arr.flags.writeable = False
            self._arrays[s.name] = arr

    @property
    def constants(self) -> Batch:
        """``{input name: array}`` of the constant inputs (read-only)."""
        return dict(self._arrays)

    @property
    def num_samples(self) -> int | None:
        """The wrapped source's number of samples."""
        return self._source.num_samples

    def num_batches(self, batch_size: int, max_samples: int | None = None) -> int | None:
        """The wrapped source's number of batches."""
        return self._source.num_batches(batch_size, max_samples)

    def batches(self, batch_size: int, max_samples: int | None = None,
                **kwargs: Any) -> Iterator[Batch]:
        """The wrapped source's batches with the constant inputs added."""
        for batch in self._source.batches(batch_size, max_samples, **kwargs):
            yield {**batch, **self._arrays}
