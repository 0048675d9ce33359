"""Streaming data sources for calibration and evaluation (``--data``).

Every source yields batches, ``dict[input name -> np.ndarray]`` with the samples on the first
axis, validated against and cast to the model's inputs; memory stays flat in the number of
samples. Use :func:`open_source` to get one from a ``--data`` value or a Python object.

Importing this package imports neither ``datasets``, ``torch``, Pillow nor pydantic: the
Hugging Face and image-folder sources and the preprocessing spec are loaded when first used
(``quantkit.data.HFSource`` etc. still work), so a command reading ``.npz`` never pays for them.
"""

from typing import TYPE_CHECKING

from quantkit._lazy import lazy_getattr
from quantkit.data._common import ALLOW_CAST_HINT, allow_cast
from quantkit.data.base import (
    Batch,
    DataSource,
    InputLayout,
    InputSpec,
    batch_samples,
    check_batch_args,
    static_batch_chunks,
    validate_batch,
)
from quantkit.data.iterable import IterableSource
from quantkit.data.npy import ArraySource, NpySource
from quantkit.data.npz import NpzSource
from quantkit.data.resolve import SOURCE_KINDS, open_source, register_source_kind

if TYPE_CHECKING:
    from quantkit.data.hf import HFSource
    from quantkit.data.images import ImageFolderSource
    from quantkit.data.preprocess import PreprocessSpec

#: names loaded on first access: attribute -> module
_LAZY = {"HFSource": "quantkit.data.hf", "ImageFolderSource": "quantkit.data.images",
         "PreprocessSpec": "quantkit.data.preprocess"}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "ALLOW_CAST_HINT",
    "SOURCE_KINDS",
    "ArraySource",
    "Batch",
    "DataSource",
    "HFSource",
    "ImageFolderSource",
    "InputLayout",
    "InputSpec",
    "IterableSource",
    "NpySource",
    "NpzSource",
    "PreprocessSpec",
    "allow_cast",
    "batch_samples",
    "check_batch_args",
    "open_source",
    "register_source_kind",
    "static_batch_chunks",
    "validate_batch",
]
