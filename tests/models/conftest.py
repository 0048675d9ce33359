"""Fixtures for the real-model tests: a cache folder kept between runs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in pytest's cache dir, kept between runs, for the exported EfficientNet.

    With pytest's cache provider off (``-p no:cacheprovider``) a session temp folder serves.
    """
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return tmp_path_factory.mktemp("quantkit-real-models")
    return Path(cache.mkdir("quantkit-real-models"))
