"""Old name of :mod:`tests.builders.qdq`, kept while other branches still import it."""

from tests.builders.qdq import (  # noqa: F401
    F16,
    F32,
    fp16_cnn,
    int8_cnn,
    matmul_model,
    mixed_cnn,
    unsupported_model,
    write_plan,
)
