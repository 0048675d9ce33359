"""Old name of :mod:`recipes.prepare`, kept while other branches still import it."""

from recipes.prepare import *  # noqa: F403
from recipes.prepare import __all__  # noqa: F401
