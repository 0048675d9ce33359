"""Old name of :mod:`tests.builders.cnn`, kept while other branches still import it."""

from tests.builders.cnn import (  # noqa: F401
    demo_digits,
    matmul_model,
    small_cnn,
    two_input_model,
)
