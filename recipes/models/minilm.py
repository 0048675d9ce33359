"""Old name of :mod:`recipes.minilm`, kept while other branches still import it."""

from recipes.minilm import *  # noqa: F403
from recipes.minilm import __all__  # noqa: F401
