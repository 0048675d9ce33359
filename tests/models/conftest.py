"""Fixtures for the real-model tests: a cache folder kept between runs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest) -> Path:
    """A folder in pytest's cache dir, kept between runs, for the exported EfficientNet."""
    return Path(request.config.cache.mkdir("quantkit-real-models"))
