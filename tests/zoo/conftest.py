"""Fixtures of the real-model zoo: the repository root on ``sys.path`` (for ``recipes``) and a
work folder kept between runs (exported models, generated data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # `recipes` is a folder of the repository, not an installed package
    sys.path.insert(0, str(_ROOT))


@pytest.fixture(scope="session")
def zoo_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/`` (exports, edited files) and ``data/`` in pytest's cache dir (a temporary
    folder when the cache plugin is off)."""
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("quantkit-zoo")) if cache is not None else tmp_path_factory.mktemp(
        "quantkit-zoo")
    (root / "data").mkdir(exist_ok=True)
    return root
