"""Old name of :mod:`tests.builders.tasks`, kept while other branches still import it."""

from tests.builders.tasks import (  # noqa: F401
    ANCHORS,
    detector,
)
