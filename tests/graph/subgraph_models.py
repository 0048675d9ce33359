"""Old name of :mod:`tests.builders.subgraphs`, kept while other branches still import it."""

from tests.builders.subgraphs import (  # noqa: F401
    F32,
    RNG,
    if_model,
    loop_model,
)
