"""backprop.backends: the array-API abstraction every layer computes through.

`Backend` (base.py) is the reference definition of the array primitives; `NumpyBackend` and
`CupyBackend` override them for speed. Fused ops are one module each in ops/, found by name
(`backend.<op>(...)`). `get_backend(device, dtype)` picks one from a device string.
"""

from backprop.backends.activations import ACTIVATIONS
from backprop.backends.base import Backend
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
