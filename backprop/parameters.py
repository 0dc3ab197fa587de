"""Parameters that live in one flat buffer per network.

Every trainable value of a network sits in one contiguous `data` buffer and its gradient in one
`grad` buffer of the same layout, so an optimizer updates a whole network in one pass and a
checkpoint is one array. `Parameter.data` and `Parameter.grad` are views into those buffers.
"""

from __future__ import annotations

import math

import numpy as np

from backprop.initializers import initial_values


class FlatStore:
    """The flat `data` and `grad` buffers of one network, on one backend.

    `generation` counts moves between backends: an optimizer remembers the generation it was
    built for and refuses to step on buffers that have since moved.
    """

    def __init__(self, backend, size: int, owner=None):
        self.backend = backend
        self.owner = owner  # the network: pickling a parameter or an optimizer pickles it
        self.size = size
        self.data = backend.zeros((size,))
        self.grad = backend.zeros((size,))
        self.generation = 0
        self.parameters: list[Parameter] = []

    def move_to(self, backend) -> None:
        """Re-create both buffers on `backend` (values kept) and point every view at them."""
        data = backend.asarray(self.backend.to_host(self.data))
        grad = backend.asarray(self.backend.to_host(self.grad))
        self.backend, self.data, self.grad = backend, data, grad
        self.generation += 1
        for p in self.parameters:
            p._bind()


    def __reduce__(self):
        return _store_of, (self.owner,)


def _store_of(network) -> FlatStore:
    return network.store


def _parameter_of(network, index: int) -> "Parameter":
    return network.store.parameters[index]


class Parameter:
    """A named trainable array: `data` and `grad` are views into its network's flat buffers.

    Assigning copies into the view (shape checked), so the flat buffer never goes stale:
    `p.data = values` and `p.data[...] = values` both write in place.
    """

    def __init__(self, name: str, shape: tuple[int, ...], init="zeros", fan_in: int | None = None,
                 fan_out: int | None = None):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.size = math.prod(self.shape)
        self.init, self.fan_in, self.fan_out = init, fan_in, fan_out  # see backprop.initializers
        self.store: FlatStore | None = None
        self.offset = 0
        self._data = None
        self._grad = None

    def attach(self, store: FlatStore, offset: int) -> None:
        self.store, self.offset = store, offset
        store.parameters.append(self)
        self._bind()

    def initialize(self, rng: np.random.Generator) -> None:
        """Fill `data` from the parameter's init (backprop.initializers), drawn from `rng`."""
        self.data = initial_values(self.init, rng, self.shape, self.fan_in, self.fan_out)

    def __reduce__(self):
        """A parameter pickles as its place in its network, which pickles whole (once, however
        many of its parameters an optimizer holds)."""
        return _parameter_of, (self.store.owner, self.store.parameters.index(self))

    def _bind(self) -> None:
        backend = self.store.backend
        self._data = backend.view(self.store.data, self.offset, self.shape)
        self._grad = backend.view(self.store.grad, self.offset, self.shape)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, values) -> None:
        self._assign(self._data, values, "data")

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, values) -> None:
        self._assign(self._grad, values, "grad")

    def _assign(self, view, values, what: str) -> None:
        backend = self.store.backend
        shape = tuple(getattr(values, "shape", np.shape(values)))
        if shape != self.shape:
            raise ValueError(f"{self.name}.{what} has shape {self.shape}; the assigned value has shape {shape}")
        if not isinstance(values, type(view)):
            values = np.asarray(values)
        if values.dtype.kind not in "biuf":
            raise TypeError(f"{self.name}.{what} must hold real numbers, got an array of dtype {values.dtype}")
        with self.store.owner.usage.training("a parameter assignment"), backend.on_device():  # where it lives
            if not isinstance(values, type(view)) or values.dtype != view.dtype:
                with np.errstate(over="ignore"):  # too large for the dtype: inf, refused just below
                    values = backend.asarray(values)
            if what == "data" and not backend.all_finite(values):
                raise ValueError(f"{self.name}.data must be finite in {backend.dtype_name}, but the assigned value "
                                 "holds NaN or inf, or values too large for it")
            view[...] = values

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"
