"""Old name of :mod:`recipes.efficientnet_lite0`, kept while other branches still import it."""

from recipes.efficientnet_lite0 import *  # noqa: F403
from recipes.efficientnet_lite0 import __all__  # noqa: F401
