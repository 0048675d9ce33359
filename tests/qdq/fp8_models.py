"""Old name of :mod:`tests.builders.fp8`, kept while other branches still import it."""

from tests.builders.fp8 import (  # noqa: F401
    E4M3,
    F32,
    FP8_CASES,
    FP8_REJECTED,
    fp8_cnn,
)
