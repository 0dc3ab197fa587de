"""The boundary between user data and the network: check once, convert once.

User arrays (NumPy, CuPy, nested lists) are checked for kind, shape and finiteness here, with a
message that names the argument, what was expected and what came, before any state changes;
then they are converted once to the network's device and dtype. Each kind of check has one
function, so each mistake has one wording wherever it is made.
"""

from __future__ import annotations

import numpy as np

from backprop.backends.numpy_backend import all_finite_array


def is_cupy_array(x) -> bool:
    module = type(x).__module__
    return module == "cupy" or module.startswith("cupy.")


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


def check_finite(host: np.ndarray, name: str, given: np.ndarray | None = None, dtype: str | None = None,
                 first_row: int = 0) -> None:
    """ValueError naming the first NaN/inf element of `host`. When `host` is `given` converted
    to `dtype`, the message shows the value as given (finite there, too large for `dtype`).
    `first_row`: the row of the whole data that `host`'s first row is (a chunk's rows)."""
    if host.dtype.kind == "f" and not all_finite_array(host):
        bad = tuple(np.argwhere(~np.isfinite(host))[0])
        where = ", ".join(str(int(i) + (first_row if axis == 0 else 0)) for axis, i in enumerate(bad))
        value = host[bad] if given is None else given[bad]
        if given is not None and np.isfinite(value):
            raise ValueError(f"{name} must be finite in {dtype}, the network's dtype, but {name}[{where}] is "
                             f"{value}, which overflows it")
        raise ValueError(f"{name} must be finite, but {name}[{where}] is {value}")


def check_example_shape(shape: tuple, example_shape: tuple, name: str, what: str = "rows") -> None:
    """`shape` must be (rows >= 1, *example_shape); `what` names the rows ("rows", "samples")."""
    if shape[1:] == example_shape and shape[0] > 0:
        return
    if len(example_shape) == 1:
        expected = f"2-D ({what}, {example_shape[0]} features)"
    else:
        expected = f"{len(example_shape) + 1}-D ({what}, {', '.join(str(s) for s in example_shape)})"
    if len(shape) != len(example_shape) + 1:
        raise ValueError(f"{name} must be {expected}, got shape {tuple(shape)}")
    if len(example_shape) == 1 and shape[1] != example_shape[0]:
        raise ValueError(f"{name} has {shape[1]} features but the network expects {example_shape[0]}")
    if tuple(shape[1:]) != tuple(example_shape):
        raise ValueError(f"{name} must be {expected}, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 {what}")


def host_examples(backend, x, example_shape: tuple, name: str) -> np.ndarray:
    """`x` checked as a batch of examples on the host, in the backend's dtype (what fit,
    evaluate and predict convert once and then move to the device)."""
    given = host_numeric(x, name)
    check_example_shape(given.shape, example_shape, name, "samples")
    host = converted(given, backend.dtype_name)
    check_finite(host, name, given, backend.dtype_name)
    return host


def converted(given: np.ndarray, dtype: str) -> np.ndarray:
    """`given` in `dtype`, C-contiguous; a value too large for it becomes inf, which the caller's
    finiteness check then names as given (so the cast's own overflow warning adds nothing)."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(given, dtype=dtype)


def as_batch(backend, x, example_shape: tuple, name: str, rows: int | None = None, copy: bool = False):
    """`x` as a batch (rows, *example_shape) of finite numbers on the backend's device, in its
    dtype. An array already on the device in the dtype and C order is checked with one finiteness
    reduction; anything else is read and converted once. `copy=True` returns an array the
    caller owns, whatever came in (the network keeps it for backward)."""
    if backend.owns(x) and x.dtype == backend.dtype and x.flags.c_contiguous:
        check_example_shape(tuple(x.shape), example_shape, name)
        if rows is not None and x.shape[0] != rows:
            raise ValueError(f"{name} must have {rows} rows (the latest forward's batch), got {x.shape[0]}")
        if not backend.all_finite(x):
            check_finite(backend.to_host(x), name)  # names the first bad element
            raise ValueError(f"{name} must be finite, but it holds NaN or inf")
        return backend.copy(x) if copy else x
    given = host_numeric(x, name)
    check_example_shape(given.shape, example_shape, name)
    if rows is not None and given.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (the latest forward's batch), got {given.shape[0]}")
    host = converted(given, backend.dtype_name)
    check_finite(host, name, given, backend.dtype_name)
    return backend.asarray(host)


def checked_sample_weight(sample_weight, n: int) -> np.ndarray:
    """One finite, non-negative weight per sample (ones when None; a number is every sample's)."""
    if sample_weight is None:
        return np.ones(n)
    weights = host_numeric(sample_weight, "sample_weight").astype(np.float64)
    if weights.ndim == 0:
        weights = np.full(n, weights.item())
    if weights.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), one weight per sample, got {weights.shape}")
    check_finite(weights, "sample_weight")
    if weights.min() < 0:
        raise ValueError(f"sample_weight must be >= 0, got {weights.min()}")
    if not weights.sum() > 0:
        raise ValueError("sample_weight must not be all zeros")
    return weights
