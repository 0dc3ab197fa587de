"""backprop.backends: the array-API abstraction every layer computes through.

`Backend` (base.py) is the reference definition of every op; `NumpyBackend` and `CupyBackend`
override ops for speed. `get_backend(device, dtype)` picks one from a device string.
"""

from backprop.backends.base import ACTIVATIONS, Backend
from backprop.backends.devices import (
    DeviceUnavailableError,
    available_devices,
    cuda_status,
    get_backend,
    parse_device,
    resolve_device,
)
from backprop.backends.numpy_backend import NumpyBackend

__all__ = [
    "ACTIVATIONS",
    "Backend",
    "DeviceUnavailableError",
    "NumpyBackend",
    "available_devices",
    "cuda_status",
    "get_backend",
    "parse_device",
    "resolve_device",
]
