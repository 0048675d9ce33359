"""Entry-point plugins: the one loader behind calibrator, metric and rescue transform plugins.

Packages register calibration methods (group ``quantkit.calibrators``), task metrics
(``quantkit.metrics``) and rescue transforms (``quantkit.transforms``) as entry points; each
registry calls :func:`load_entry_points` once, on first use of a name it does not know.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def load_entry_points(group: str, what: str) -> list[tuple[str, Any]]:
    """Import every entry point of ``group``; return ``(name, loaded object)`` of each.

    A plugin that fails to import is skipped with a warning naming it (``what`` says what kind
    of plugin: "calibrator", "metric"): a broken plugin must not break the built-in ones.
    """
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=group):
        try:
            loaded.append((ep.name, ep.load()))
        except Exception as err:
            logger.warning("could not load %s plugin %s: %s", what, ep.name, err)
    return loaded
