"""The boundary between user data and the network: check once, convert once.

User arrays (NumPy, CuPy, nested lists) are checked for kind, shape and finiteness here, with a
message that names the argument, what was expected and what came, before any state changes;
then they are converted once to the network's device and dtype.
"""

from __future__ import annotations

import numpy as np


def is_cupy_array(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def to_numpy(array) -> np.ndarray:
    """A NumPy array the caller owns with the values of `array` (NumPy, CuPy, or array-like):
    a copy on every device, never a view of a network's buffers."""
    if is_cupy_array(array):
        return array.get()
    return np.array(array, copy=True)


def _host_values(x) -> np.ndarray:
    """`x` on the host without a copy where it already is (the boundary only reads it)."""
    return x.get() if is_cupy_array(x) else np.asarray(x)


def host_numeric(x, name: str) -> np.ndarray:
    """`x` as a NumPy array of real numbers; TypeError for strings, objects, complex values."""
    try:
        array = _host_values(x)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__} that NumPy cannot "
                        f"read as one ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {array.dtype}")
    return array


def check_finite(host: np.ndarray, name: str) -> None:
    if host.dtype.kind == "f" and not np.isfinite(host).all():
        bad = np.argwhere(~np.isfinite(host))[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise ValueError(f"{name} must be finite, but {name}[{where}] is {host[tuple(bad)]}")


def as_features(backend, x, width: int, name: str, rows: int | None = None):
    """`x` checked as a 2-D batch (rows, width) of finite numbers, on the backend's device."""
    native = backend.owns(x)
    if native:
        shape, kind = tuple(x.shape), np.dtype(str(x.dtype)).kind
        if kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got an array of dtype {x.dtype}")
    else:
        x = host_numeric(x, name)
        shape = x.shape
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (rows, {width} features), got shape {shape}")
    if shape[1] != width:
        raise ValueError(f"{name} has {shape[1]} features but the network expects {width}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 rows")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (the latest forward's batch), got {shape[0]}")
    if native:
        x = backend.asarray(x)
        if not backend.all_finite(x):
            check_finite(backend.to_host(x), name)  # names the first bad element
            raise ValueError(f"{name} must be finite, but it holds NaN or inf")
        return x
    check_finite(x, name)
    return backend.asarray(x)
