"""Hugging Face ``datasets`` as a data source (``--data hf:NAME[:CONFIG][:SPLIT]``).

``datasets`` is imported lazily, only when such a source is opened.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.data._common import check_columns_keys, no_samples
from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch
from quantkit.data.images import stack_samples
from quantkit.data.preprocess import PreprocessSpec
from quantkit.data.rows import iter_chunks, select_indices
from quantkit.errors import InputError, MissingExtraError

logger = logging.getLogger(__name__)

PREFIX = "hf:"


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split ``hf:NAME[:CONFIG][:SPLIT]`` into ``(name, config, split)``.

    Empty parts mean "default", so ``hf:NAME::test`` names a split without a config. A Windows
    drive letter (``hf:C:/data``) stays part of the name.

    Raises:
        InputError: the spec has no name or too many parts.
    """
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    parts = body.split(":")
    if len(parts) > 1 and len(parts[0]) == 1 and parts[0].isalpha() and parts[1][:1] in "\\/":
        parts = [f"{parts[0]}:{parts[1]}", *parts[2:]]
    if not parts[0] or len(parts) > 3:
        raise InputError(
            f"data={spec!r}: expected hf:NAME, hf:NAME:CONFIG or hf:NAME:CONFIG:SPLIT "
            "(e.g. hf:./my_dataset or hf:mnist::test)."
        )
    config = parts[1] or None if len(parts) > 1 else None
    split = parts[2] or None if len(parts) > 2 else None
    return parts[0], config, split


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise MissingExtraError("Reading hf: datasets", "datasets", "datasets") from err
    return datasets


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or Path(name).exists()


class HFSource(DataSource):
    """A Hugging Face ``datasets`` dataset, map-style or streaming.

    ``name`` may be a folder written by ``save_to_disk`` (read with ``load_from_disk``), a local
    folder of csv/json/parquet/image files (``load_dataset`` picks the packaged builder), a
    dataset in the local Hugging Face cache, or an already loaded ``Dataset`` /
    ``IterableDataset``.

    Columns are matched to model inputs by ``columns`` (``{input name: column}``); without it,
    columns named like the model inputs are used, or, for a single-input model, the dataset's
    only image column. Image columns are decoded with Pillow and preprocessed with
    ``preprocess`` (default: :meth:`PreprocessSpec.default_for` the input).

    Args:
        name: dataset path or name, or a loaded dataset object.
        inputs: the model's inputs.
        config: the dataset configuration (``None``: default).
        split: the split; may be omitted when the dataset has only one.
        columns: ``{input name: column name}``.
        preprocess: preprocessing for image columns.
        streaming: read as an ``IterableDataset`` (``streaming=True``): nothing is prepared
            up front and the length is unknown.
        seed: for map-style datasets, when ``max_samples`` is smaller than the dataset, read a
            seeded random subset of rows (in ascending order). Streaming datasets ignore it.

    Raises:
        MissingExtraError: ``datasets`` is not installed.
        InputError: the dataset cannot be loaded, the split/columns do not exist, or it is
            empty.
    """

    def __init__(self, name: str | os.PathLike[str] | Any, inputs: Sequence[InputSpec], *,
                 config: str | None = None, split: str | None = None,
                 columns: Mapping[str, str] | None = None,
                 preprocess: PreprocessSpec | None = None, streaming: bool = False,
                 seed: int | None = None) -> None:
        datasets = _import_datasets()
        self._inputs = tuple(inputs)
        self._seed = seed
        if isinstance(name, (str, os.PathLike)):
            name = os.fspath(name)
            parts = [name, config or "", split or ""]
            self.description = PREFIX + ":".join(parts).rstrip(":")
            ds = self._load(datasets, name, config, split, streaming)
        else:
            self.description = PREFIX + str(getattr(getattr(name, "info", None),
                                                    "dataset_name", None) or "<dataset>")
            ds = self._pick_split(name, split)
            if streaming and isinstance(ds, datasets.Dataset):
                ds = self._to_iterable(ds)
        self.streaming = not isinstance(ds, datasets.Dataset)
        if not self.streaming and len(ds) == 0:
            raise no_samples(self.description)
        names, image_cols = self._inspect(datasets, ds)
        self.columns = self._map_columns(dict(columns or {}), names, image_cols)
        self._image_inputs = {i for i, c in self.columns.items() if c in image_cols}
        self.preprocess = {
            spec.name: preprocess or PreprocessSpec.default_for(spec)
            for spec in self._inputs if spec.name in self._image_inputs
        }
        ds = ds.select_columns(list(dict.fromkeys(self.columns.values())))
        for col in {self.columns[i] for i in self._image_inputs}:
            if isinstance(ds.features, Mapping) and isinstance(ds.features.get(col),
                                                               datasets.Image):
                ds = ds.cast_column(col, datasets.Image(decode=False))
        self._ds = ds.with_format("numpy")
        if self.streaming and seed is not None:
            logger.info("%s: seed= is ignored for streaming datasets (their length is "
                        "unknown); the first samples are read", self.description)

    @property
    def num_samples(self) -> int | None:
        """Number of rows for map-style datasets; ``None`` when streaming."""
        return None if self.streaming else len(self._ds)

    # -- loading ---------------------------------------------------------------------------

    def _load(self, datasets: Any, name: str, config: str | None, split: str | None,
              streaming: bool) -> Any:
        path = Path(name).expanduser()
        if path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file()):
            if config and split:
                raise InputError(
                    f"data={self.description!r}: {path} was saved with save_to_disk and has no "
                    "configs; use hf:PATH or hf:PATH:SPLIT."
                )
            try:
                ds = datasets.load_from_disk(str(path))
            except Exception as err:  # datasets raises many kinds on bad or empty folders
                raise InputError(
                    f"data {self.description}: cannot load {path} "
                    f"({type(err).__name__}: {err}). Re-create it with save_to_disk."
                ) from err
            ds = self._pick_split(ds, split or config)
            return self._to_iterable(ds) if streaming else ds
        if _looks_like_path(name):
            if not path.exists():
                raise InputError(
                    f"data {self.description}: no such folder {path}. Check the path.")
            name = str(path)
        try:
            try:
                ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
            except ValueError as err:
                # hf:NAME:X where X is a split, not a config
                if not (config and split is None and "BuilderConfig" in str(err)):
                    raise
                ds = datasets.load_dataset(name, None, split=config, streaming=streaming)
        except Exception as err:  # datasets raises many kinds on bad or unknown datasets
            raise InputError(
                f"data {self.description}: cannot load the dataset ({type(err).__name__}: "
                f"{err}). NAME must be a "
                "folder saved with save_to_disk, a folder of csv/json/parquet/image files, or "
                "a dataset in the local Hugging Face cache."
            ) from err
        return self._pick_split(ds, split)

    def _to_iterable(self, ds: Any) -> Any:
        if len(ds) == 0:
            raise no_samples(self.description)
        return ds.to_iterable_dataset()

    def _pick_split(self, ds: Any, split: str | None) -> Any:
        if not hasattr(ds, "keys") or not hasattr(ds, "values"):  # a single split already
            return ds
        splits = list(ds.keys())
        if split is None and len(splits) == 1:
            return ds[splits[0]]
        if split in splits:
            return ds[split]
        which = f"has no split '{split}'" if split else "has several splits"
        raise InputError(
            f"data {self.description}: the dataset {which} (splits: {', '.join(splits)}). "
            "Choose one with hf:NAME:CONFIG:SPLIT, e.g. hf:NAME::" + (splits[0] if splits
                                                                      else "train") + "."
        )

    def _inspect(self, datasets: Any, ds: Any) -> tuple[list[str], set[str]]:
        """Column names and which of them hold images."""
        features = ds.features
        if isinstance(features, Mapping):
            names = list(features)
            images = {c for c, f in features.items() if isinstance(f, datasets.Image)}
            return names, images
        first = next(iter(ds), None)  # streaming without known features: peek one example
        if first is None:
            raise no_samples(self.description)
        names = list(first)
        images = {c for c, v in first.items() if _is_image_value(v)}
        return names, images

    def _map_columns(self, columns: dict[str, str], names: list[str],
                     image_cols: set[str]) -> dict[str, str]:
        inputs = [s.name for s in self._inputs]
        available = ", ".join(names) or "(none)"
        if columns:
            check_columns_keys(columns, self._inputs, self.description)
            mapping = {i: columns.get(i, i) for i in inputs}
        elif all(i in names for i in inputs):
            mapping = {i: i for i in inputs}
        elif len(inputs) == 1 and len(image_cols) == 1:
            mapping = {inputs[0]: next(iter(image_cols))}
        else:
            raise InputError(
                f"data {self.description}: no column mapping given and the columns "
                f"({available}) do not match the model inputs ({', '.join(inputs)}). Map them "
                "with a recipe's columns: {input_name: column_name}."
            )
        bad = {i: c for i, c in mapping.items() if c not in names}
        if bad:
            raise InputError(
                f"data {self.description}: no column "
                f"{', '.join(f'{c!r} (for input {i!r})' for i, c in bad.items())}. "
                f"Columns: {available}."
            )
        return mapping

    # -- reading ---------------------------------------------------------------------------

    def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
        """Yield batches of at most ``batch_size`` rows, ``max_samples`` in total.

        Raises:
            InputError: a value cannot be converted (ragged arrays, undecodable image) or a
                batch does not fit the model.
        """
        check_batch_args(batch_size, max_samples)
        if self.streaming:
            return self._stream(batch_size, max_samples)
        return self._indexed(batch_size, max_samples)

    def batch_range(self, batch_size: int, max_samples: int | None, lo: int,
                    hi: int) -> Iterator[Batch]:
        """Batches ``lo..hi`` of :meth:`batches` (sharded calibration).

        Map-style datasets read only those rows; streaming ones are read from the start.
        """
        check_batch_args(batch_size, max_samples)
        if self.streaming:
            return itertools.islice(self._stream(batch_size, max_samples), lo, hi)
        return self._indexed(batch_size, max_samples, lo, hi)

    def _indexed(self, batch_size: int, max_samples: int | None, lo: int = 0,
                 hi: int | None = None) -> Iterator[Batch]:
        selection = select_indices(len(self._ds), max_samples, self._seed)
        for chunk in itertools.islice(iter_chunks(selection, batch_size), lo, hi):
            if isinstance(chunk, range):
                rows = self._ds[chunk.start:chunk.stop]
            else:
                rows = self._ds[[int(i) for i in chunk]]
            yield self._to_batch(rows)

    def _stream(self, batch_size: int, max_samples: int | None) -> Iterator[Batch]:
        seen = 0
        for rows in self._ds.iter(batch_size=batch_size):
            if max_samples is not None and seen >= max_samples:
                break
            take = batch_size if max_samples is None else min(batch_size, max_samples - seen)
            rows = {k: v[:take] for k, v in rows.items()}
            count = len(next(iter(rows.values())))
            if not count:
                continue
            seen += count
            yield self._to_batch(rows)
        if seen == 0:
            raise no_samples(self.description)

    def _to_batch(self, rows: Mapping[str, Any]) -> Batch:
        batch: Batch = {}
        for spec in self._inputs:
            col = self.columns[spec.name]
            values = rows[col]
            if spec.name in self._image_inputs:
                pre = self.preprocess[spec.name]
                items = [_image_label(v) for v in values]
                samples = [pre.apply(self._decode(v, label)) for v, label in zip(values, items,
                                                                                  strict=True)]
                batch[spec.name] = stack_samples(samples, items, self.description,
                                                 f"column '{col}' image")
            else:
                batch[spec.name] = self._numeric(values, col)
        return validate_batch(batch, self._inputs, self.description)

    def _numeric(self, values: Any, col: str) -> np.ndarray:
        arr = values if isinstance(values, np.ndarray) else None
        if arr is not None and arr.dtype != object:
            return arr
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError as err:
            raise InputError(
                f"data {self.description}: column '{col}' holds samples of different shapes "
                f"({err}). Every sample of an input must have the same shape."
            ) from err

    def _decode(self, value: Any, label: str) -> Any:
        from PIL import Image

        from quantkit.data.images import load_image

        if isinstance(value, Image.Image):
            return value
        if isinstance(value, np.ndarray) and value.dtype != object:
            return Image.fromarray(value)
        if isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
            if data is not None:
                try:
                    with Image.open(io.BytesIO(data)) as image:
                        image.load()
                        return image
                except (OSError, SyntaxError, ValueError) as err:
                    raise InputError(
                        f"data {self.description}: cannot decode image {label} ({err}). "
                        "Remove or replace it."
                    ) from err
            if path:
                return load_image(Path(path), self.description)
        raise InputError(
            f"data {self.description}: image column value {label} is not an image."
        )


def _is_image_value(value: Any) -> bool:
    if hasattr(value, "getbands") and hasattr(value, "convert"):  # a PIL image
        return True
    return isinstance(value, Mapping) and set(value) == {"bytes", "path"}


def _image_label(value: Any) -> str:
    path = value.get("path") if isinstance(value, Mapping) else getattr(value, "filename", "")
    return str(path) if path else f"<{type(value).__name__}>"
