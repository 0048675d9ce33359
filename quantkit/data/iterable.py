"""Any Python iterable (a list, a generator, a ``torch.utils.data.DataLoader``) as a source."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from quantkit.data._common import check_columns_keys, no_samples, to_numpy
from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch
from quantkit.errors import InputError

logger = logging.getLogger(__name__)


class IterableSource(DataSource):
    """Batches or samples from any Python iterable, e.g. a torch ``DataLoader``.

    Each item may be:

    - a mapping ``{input name: array}`` (keys renamed by ``columns``; extra keys such as
      labels are ignored once every input is present);
    - a tuple or list, mapped positionally to the model's inputs (extra trailing elements,
      such as the labels of ``(images, labels)``, are ignored);
    - a single array, for single-input models.

    Arrays may be numpy arrays, torch tensors (converted with ``.detach().cpu().numpy()``,
    without importing torch here), or anything ``np.asarray`` accepts. Wrap a sample given as
    nested Python lists in ``np.asarray`` so it is not read as one element per input.

    An item whose arrays have the model's rank is a **batch** and is kept as it is: a
    ``DataLoader``'s own batching is kept, so ``batch_size`` is then the loader's and the
    ``batch_size`` argument of :meth:`batches` is not used for it. An item one rank lower is a
    **sample**; samples are stacked into batches of ``batch_size``. ``max_samples`` truncates
    in both cases. ``seed`` does not apply (the iterable decides the order).

    Args:
        iterable: the iterable, or a zero-argument callable returning a fresh one. A one-shot
            iterator (e.g. a generator) can only be read once.
        inputs: the model's inputs.
        columns: ``{input name: key}`` for mapping items.
        description: how the data is named in error messages.
    """

    def __init__(self, iterable: Iterable[Any] | Callable[[], Iterable[Any]],
                 inputs: Sequence[InputSpec], *, columns: Mapping[str, str] | None = None,
                 description: str | None = None) -> None:
        self._inputs = tuple(inputs)
        if not self._inputs:
            raise InputError("data: the model has no inputs to feed.")
        self._source = iterable
        self._one_shot = isinstance(iterable, Iterator)
        self._used = False
        self.description = description or f"<{type(iterable).__name__}>"
        self._columns = dict(columns or {})
        if self._columns:
            check_columns_keys(self._columns, self._inputs, self.description)
        self._noted_extra = False

    def num_batches(self, batch_size: int, max_samples: int | None = None) -> int | None:
        """Unknown: items may be batches of the iterable's own size."""
        return None

    def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
        """Yield batches; ``batch_size`` only groups per-sample items (see the class doc).

        Raises:
            InputError: an item cannot be mapped to the model's inputs, does not fit them, the
                iterable is empty, or a one-shot iterator is read a second time.
        """
        check_batch_args(batch_size, max_samples)
        if self._one_shot and self._used:
            raise InputError(
                f"data {self.description}: this iterator was already consumed. Pass a "
                "re-iterable object (a list, a DataLoader) or a function returning a fresh "
                "iterator."
            )
        self._used = True
        return self._generate(batch_size, max_samples)

    def _iterable(self) -> Iterable[Any]:
        source = self._source
        if callable(source) and not isinstance(source, Iterable):
            return source()
        return source

    def _generate(self, batch_size: int, max_samples: int | None) -> Iterator[Batch]:
        pending: list[dict[str, np.ndarray]] = []
        seen = 0

        def room() -> int:
            return batch_size if max_samples is None else min(batch_size, max_samples - seen)

        for item in self._iterable():
            if max_samples is not None and seen >= max_samples:
                break
            arrays = self._to_arrays(item)
            if self._is_sample(arrays):
                pending.append(arrays)
                if len(pending) == room():
                    seen += len(pending)
                    yield self._stack(pending)
                    pending = []
                continue
            if pending:  # a batch after single samples: flush the samples first
                seen += len(pending)
                yield self._stack(pending)
                pending = []
                if max_samples is not None and seen >= max_samples:
                    break
            batch = validate_batch(arrays, self._inputs, self.description)
            take = len(next(iter(batch.values())))
            if max_samples is not None:
                take = min(take, max_samples - seen)
            if take == 0:
                continue
            seen += take
            yield {k: v[:take] for k, v in batch.items()}
        if pending:
            seen += len(pending)
            yield self._stack(pending)
        if seen == 0:
            raise no_samples(self.description)

    def _stack(self, samples: list[dict[str, np.ndarray]]) -> Batch:
        batch: dict[str, np.ndarray] = {}
        for name in samples[0]:
            try:
                batch[name] = np.stack([s[name] for s in samples])
            except ValueError as err:
                raise InputError(
                    f"data {self.description}: samples for input '{name}' have different "
                    f"shapes ({err}). Every sample must have the same shape."
                ) from err
        try:
            return validate_batch(batch, self._inputs, self.description)
        except InputError as err:
            raise InputError(
                f"{err} (Items with one axis fewer than the model input are read as single "
                "samples and stacked into batches.)"
            ) from err

    def _is_sample(self, arrays: Mapping[str, np.ndarray]) -> bool:
        """True if every array is one rank below the model input's rank (a single sample)."""
        ranks = {s.name: len(s.shape) for s in self._inputs}
        return all(
            name in ranks and ranks[name] >= 1 and arr.ndim == ranks[name] - 1
            for name, arr in arrays.items()
        ) and set(arrays) == set(ranks)

    def _to_arrays(self, item: Any) -> dict[str, np.ndarray]:
        names = [s.name for s in self._inputs]
        if isinstance(item, Mapping):
            keys = {n: self._columns.get(n, n) for n in names}
            if all(k in item for k in keys.values()):
                if len(item) > len(keys):
                    self._note_extra(f"keys {sorted(set(map(str, item)) - set(keys.values()))}")
                return {n: to_numpy(item[k]) for n, k in keys.items()}
            renamed = {v: k for k, v in keys.items()}
            # names missing: let validate_batch explain, in the model's names
            return {renamed.get(str(k), str(k)): to_numpy(v) for k, v in item.items()}
        if isinstance(item, (tuple, list)) and not all(
            isinstance(x, numbers.Number) for x in item
        ):
            if len(item) < len(names):
                raise InputError(
                    f"data {self.description}: an item has {len(item)} element(s) but the "
                    f"model has {len(names)} inputs ({', '.join(names)}); tuple items are "
                    "mapped to the inputs in order. Yield one element per input, or dicts "
                    "keyed by input name."
                )
            if len(item) > len(names):
                self._note_extra(f"{len(item) - len(names)} trailing element(s)")
            return {n: to_numpy(x) for n, x in zip(names, item, strict=False)}
        if len(names) != 1:
            raise InputError(
                f"data {self.description}: an item is a single {type(item).__name__} but the "
                f"model has {len(names)} inputs ({', '.join(names)}). Yield tuples (one "
                "element per input, in order) or dicts keyed by input name."
            )
        return {names[0]: to_numpy(item)}

    def _note_extra(self, what: str) -> None:
        if not self._noted_extra:
            self._noted_extra = True
            logger.info("%s: ignoring %s of each item (not model inputs)", self.description,
                        what)
