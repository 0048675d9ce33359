"""Streaming data sources for calibration and evaluation (``--data``).

Every source yields batches, ``dict[input name -> np.ndarray]`` with the samples on the first
axis, validated against and cast to the model's inputs; memory stays flat in the number of
samples. Use :func:`open_source` to get one from a ``--data`` value or a Python object.

Importing this package imports neither ``datasets``, ``torch`` nor Pillow.
"""

from quantkit.data._common import ALLOW_CAST_HINT, allow_cast
from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch
from quantkit.data.hf import HFSource
from quantkit.data.images import ImageFolderSource
from quantkit.data.iterable import IterableSource
from quantkit.data.npy import ArraySource, NpySource
from quantkit.data.npz import NpzSource
from quantkit.data.preprocess import PreprocessSpec
from quantkit.data.resolve import SOURCE_KINDS, open_source, register_source_kind

__all__ = [
    "ALLOW_CAST_HINT",
    "SOURCE_KINDS",
    "ArraySource",
    "Batch",
    "DataSource",
    "HFSource",
    "ImageFolderSource",
    "InputSpec",
    "IterableSource",
    "NpySource",
    "NpzSource",
    "PreprocessSpec",
    "allow_cast",
    "check_batch_args",
    "open_source",
    "register_source_kind",
    "validate_batch",
]
