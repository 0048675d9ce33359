"""Fixtures for the real-model tests: the repository root on ``sys.path`` (for ``recipes``)
and a cache folder kept between runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # `recipes` is a folder of the repository, not an installed package
    sys.path.insert(0, str(_ROOT))


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest) -> Path:
    """A folder in pytest's cache dir, kept between runs, for the exported EfficientNet."""
    return Path(request.config.cache.mkdir("quantkit-real-models"))
