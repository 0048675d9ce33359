"""Fixtures of the real-model zoo: a work folder kept between runs (exported models, generated
data)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def zoo_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/`` (exports, edited files) and ``data/`` in pytest's cache dir (a temporary
    folder when the cache plugin is off)."""
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("quantkit-zoo")) if cache is not None else tmp_path_factory.mktemp(
        "quantkit-zoo")
    (root / "data").mkdir(exist_ok=True)
    return root
