"""Old name of the recipes' shared helpers, kept while other branches still import it.

The models moved to one folder each (:mod:`recipes.efficientnet_lite0`, :mod:`recipes.ppocr`,
:mod:`recipes.minilm`); the helpers that were here are in :mod:`recipes.runtime`.
"""

from recipes.runtime import *  # noqa: F403
from recipes.runtime import __all__  # noqa: F401
