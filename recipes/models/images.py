"""Old name of :mod:`recipes.images`, kept while other branches still import it."""

from recipes.images import *  # noqa: F403
from recipes.images import __all__  # noqa: F401
