"""Checks of what users' own layers return, where it enters the library's code.

A layer's forward output feeds the next layer, the loss or `predict`; its backward output feeds
the layer before. A wrong shape there is not always an error further on: NumPy broadcasts one
row over a batch, and a batch that lost rows still multiplies. So a user's layer is checked
after each call: an array of the network's backend and dtype, of the shape its `build` declared
for this batch. Built-in layers are not checked (they are tested; theirs are the steps we time).
"""

from __future__ import annotations


def is_builtin(layer) -> bool:
    """True for the library's own layer classes (not a user's subclass of one)."""
    return type(layer).__module__.partition(".")[0] == "backprop"


def check_returned(backend, value, shape: tuple, what: str) -> None:
    """Raise TypeError/ValueError naming `what` ("layer 2 (MyLayer).forward") unless `value` is
    an array of `backend`, of its dtype and of `shape`."""
    wanted = f"a {backend.dtype_name} array of shape {shape} on {backend.device}"
    if value is None or not backend.owns(value):
        kind = "None" if value is None else type(value).__name__
        raise TypeError(f"{what} returned {kind}, expected {wanted}")
    if value.dtype != backend.dtype:
        raise TypeError(f"{what} returned an array of dtype {value.dtype}, expected {wanted}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{what} returned an array of shape {tuple(value.shape)}, expected {wanted}")
