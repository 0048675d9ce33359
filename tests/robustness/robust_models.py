"""Old name of :mod:`tests.builders.robust`, kept while other branches still import it."""

from tests.builders.robust import (  # noqa: F401
    OPSET,
    ids_model,
    if_model,
    integer_quantized_model,
    scalar_input_model,
    state_model,
)
