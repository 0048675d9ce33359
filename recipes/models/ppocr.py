"""Old name of :mod:`recipes.ppocr`, kept while other branches still import it."""

from recipes.ppocr import *  # noqa: F403
from recipes.ppocr import __all__  # noqa: F401
