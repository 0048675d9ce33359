"""Old private name of :mod:`quantkit.calibrators.device`, kept for one caller (issue 16).

``quantkit/backends/runner.py`` still imports the device-memory layer from here; once it imports
:mod:`quantkit.calibrators.device` (and its entry leaves the architecture test's allow-list),
delete this module.
"""

from quantkit.calibrators.device import (
    DeviceBuffer,
    DeviceMemory,
    default_device_memory,
    import_cudart,
)

__all__ = ["DeviceBuffer", "DeviceMemory", "default_device_memory", "import_cudart"]
