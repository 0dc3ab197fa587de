"""The layer protocol, and the registry that lets a checkpoint rebuild a layer by its name.

A layer owns everything about itself. `Sequential`, `fit`, checkpoints, `gradcheck`, `summary`
and data-parallel training only call the methods below; none of them names a layer type. The
built-in layers are written exactly as a user's own layer is.

To write a layer, subclass `Layer` and override

    build(input_shape) -> output_shape
        Called once, by the network: check the shape of one example (no batch axis), declare the
        parameters (`add_parameter`) and state buffers (`add_buffer`), return the output shape.
    forward(x, training) -> y
        `x` has shape (rows, *input_shape); keep what backward needs on `self`, and never read
        it back in forward (several threads may run an eval-mode forward of one network at
        once: what one stores, another may overwrite; intermediates go in local variables or
        in `self.workspace`, which is per thread).
    backward(grad_y, need_input_grad) -> dL/dx or None
        Write (overwrite) every parameter's `.grad`; return dL/dx when `need_input_grad`. A
        layer with a `penalty()` adds the penalty's gradient to its parameters' `.grad` here
        (Dense: + l1 sign(W) + 2 l2 W): the network adds the penalty to the loss, but only the
        layer knows its derivative, and gradcheck fails without it.

and, where they apply,

    input_shape          the example shape the layer fixes by itself (Dense(3, 4): (3,)), so a
                         network starting with it needs no `input_shape=`
    counters             names of int attributes that count what the layer has done (Dropout's
                         `step`); set each in `__init__` (`self.step = 0`): the network reads
                         them (a checkpoint, a diverged step's restore, a data-parallel start)
                         before any forward has run
    min_train_rows       the fewest rows a training batch may have (BatchNorm: 2)
    penalty()            a regularization term (0-d array) added to the loss, or None
    label()              its words in `summary()`
    config()             its constructor arguments; by default read from the attributes named
                         like `__init__`'s parameters
    check_buffer(name, values)
                         refuse values a buffer can never hold (checkpoints call it); by default
                         the `minimum` declared with `add_buffer` (BatchNorm's running_var: 0)

then register it (`@bp.register_layer`) so that checkpoints can rebuild it by name (a name is
ASCII letters, digits and underscores in dot-joined parts, such as "Recenter" or "mylib.Recenter":
`backprop.checks.check_name`). Every array operation goes through `self.backend` (its ops, or
`self.backend.xp`, the array namespace: NumPy on the CPU, CuPy on a GPU), so the same layer runs
on every device. A network's layers, built or loaded (`bp.load(path)`), are `net.layers`, in
order: `bp.load(path).layers[1].mu` is the second layer's buffer `mu`.

State beyond the parameters comes in two kinds, because training treats them differently:
- buffers (`add_buffer`): arrays estimated from the data, such as BatchNorm's running
  statistics. Checkpoints keep them; a diverged step and early stopping put them back;
  data-parallel training starts every rank from rank 0's and averages them over the ranks at
  the end of each epoch. Within an epoch each rank updates its own from its own shard, so a
  layer whose training forward reads a buffer (the README's Recenter subtracts its running
  mean) trains differently on N ranks than in one process, as BatchNorm does.
- counters: ints that count steps, such as Dropout's. Checkpoints keep them and a diverged step
  puts them back, but early stopping does not (later dropout masks stay fresh); data-parallel
  training starts every rank from rank 0's, then each rank keeps its own (never averaged:
  every rank takes the same steps, so a step counter stays equal; a count of rows would not).
  A checkpoint written on rank 0 holds rank 0's.
"""

from __future__ import annotations

import inspect
import math
import threading

import numpy as np

from backprop.backends.base import dropout_key
from backprop.checks import NotRegisteredError, check_name, check_real
from backprop.initializers import check_init
from backprop.parameters import Parameter

LAYERS: dict[str, type] = {}


def register_layer(cls=None, *, name: str | None = None):
    """Class decorator: checkpoints record the layer under `name` (default: the class name; see
    `backprop.checks.check_name` for what a name may hold) and `bp.load` rebuilds it from there.
    A process loading a checkpoint must have registered (that is, imported) every layer class
    the checkpoint names.

    A class has one name and a name one class: registering a class again under another name, or
    a name that another class holds, is refused. Registering the same definition again (a module
    run again by `importlib.reload` or a notebook's autoreload: the same module and qualified
    name) replaces the old class object, and networks built from either save under the name."""

    def register(layer_class):
        if not (isinstance(layer_class, type) and issubclass(layer_class, Layer)):
            raise TypeError(f"register_layer takes a subclass of bp.Layer, got {layer_class!r}")
        key = check_name("name", layer_class.__name__ if name is None else name)
        own = layer_class.__dict__.get("registered_name")
        if own is not None and own != key and LAYERS.get(own) is layer_class:
            raise ValueError(f"{_definition(layer_class)} is already registered as {own!r}; a checkpoint records "
                             f"a class under one name, so it cannot also be {key!r} (register a subclass instead)")
        known = LAYERS.get(key)
        if known is not None and not _same_definition(known, layer_class):
            if known.__module__.startswith("backprop."):
                raise ValueError(f"{key!r} is a built-in layer and cannot be replaced; choose another name")
            raise ValueError(f"{key!r} is already the registered name of {_definition(known)}; choose another name")
        layer_class.registered_name = key
        LAYERS[key] = layer_class
        return layer_class

    return register if cls is None else register(cls)


def _definition(cls: type) -> str:
    """Where a class is defined: "module.QualifiedName"."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_definition(a: type, b: type) -> bool:
    """Whether two class objects are one definition: the same object, or one module's class
    defined again under the same qualified name (what importlib.reload makes)."""
    return a is b or _definition(a) == _definition(b)


def layer_from_config(config: dict) -> "Layer":
    """Rebuild a layer from its `config()` record ({"type": registered name, **arguments})."""
    if not isinstance(config, dict):
        raise ValueError(f"a layer record must be a dict, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in LAYERS:
        raise NotRegisteredError(f"layer type {kind!r} is not registered in this process (known: {sorted(LAYERS)}); "
                         "import the module that defines it, decorated with @bp.register_layer, first")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    return LAYERS[kind](**kwargs)


def check_registered(layer: "Layer") -> None:
    """TypeError unless a checkpoint can rebuild `layer`: its class (or, after a reload of its
    module, the class defined again in its place) registered under its name."""
    name = type(layer).type_name()
    registered = LAYERS.get(name)
    if registered is None or not _same_definition(registered, type(layer)):
        raise TypeError(f"{type(layer).__name__} is not registered, so a checkpoint could not rebuild it; decorate "
                        "the class with @bp.register_layer (and import it before bp.load)")


class Layer:
    """Base of every layer; see the module docstring for the protocol."""

    input_shape: tuple[int, ...] | None = None
    counters: tuple[str, ...] = ()
    min_train_rows = 1
    registered_name: str | None = None

    def __init__(self):
        self.backend = None
        self.params: dict[str, Parameter] = {}
        self._buffer_specs: dict[str, tuple] = {}  # name -> (shape, fill, minimum), from add_buffer
        self._threads = _PerThread()
        self._noise_seed = 0
        self.position = 0

    # ------------------------------------------------------------------ what a layer overrides

    def build(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Check the example shape, declare parameters and buffers; the output shape.
        The default passes the shape through unchanged (Dropout)."""
        return input_shape

    def forward(self, x, training: bool):
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, x, training)")

    def backward(self, grad_y, need_input_grad: bool = True):
        raise NotImplementedError(f"{type(self).__name__} must define backward(self, grad_y, need_input_grad)")

    def penalty(self):
        """This layer's regularization term as a 0-d array, or None."""
        return None

    def label(self) -> str:
        """The layer in a few words, for summaries: "BatchNorm 256"."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        """{"type": registered name, **constructor arguments}: what rebuilds this layer. The
        default reads each parameter of `__init__` from the attribute of the same name."""
        values = {}
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if not hasattr(self, name):
                raise TypeError(f"{type(self).__name__}.config(): __init__ takes {name!r} but the layer has no "
                                f"attribute {name!r}; store it as self.{name} or define config()")
            values[name] = _plain(getattr(self, name), f"{type(self).__name__}.{name}")
        return {"type": self.type_name(), **values}

    @classmethod
    def type_name(cls) -> str:
        """The name a checkpoint records this class under: the one it was registered with (its
        own registration, not a parent's), else the class name."""
        return cls.__dict__.get("registered_name") or cls.__name__

    # ------------------------------------------------------------------ what a layer calls

    def add_parameter(self, name: str, shape, init="zeros", fan_in: int | None = None,
                      fan_out: int | None = None) -> Parameter:
        """Declare a trainable parameter; its `data` and `grad` become views into the network's
        flat buffers, filled from `init` (backprop.initializers) with the network's seed.
        For a 2-D shape (fan_in, fan_out) the fans default to its two sizes."""
        shape = tuple(int(s) for s in shape)
        if len(shape) == 2:
            fan_in = shape[0] if fan_in is None else fan_in
            fan_out = shape[1] if fan_out is None else fan_out
        self._check_new_name(name)
        param = Parameter(name, shape, check_init(init, f"{name}'s init"), fan_in, fan_out)
        self.params[name] = param
        return param

    def add_buffer(self, name: str, shape, fill: float = 0.0, minimum: float | None = None) -> None:
        """Declare a state buffer (see the module docstring) of `shape`, starting at `fill`; once
        the network is built it is the attribute `name`, an array of its device and dtype.
        `minimum` is the least value it can ever hold (a variance: 0), checked by `check_buffer`."""
        self._check_new_name(name)
        if hasattr(self, name):  # it becomes an attribute: it must not hide one
            raise ValueError(f"{type(self).__name__} already has an attribute {name!r}; name the buffer otherwise")
        if minimum is not None:
            minimum = check_real("minimum", minimum, -math.inf)
        self._buffer_specs[name] = (tuple(int(s) for s in shape), float(fill), minimum)

    def _check_new_name(self, name: str) -> None:
        """Parameters and buffers share a namespace (a checkpoint names them layers.{i}.{name})."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a parameter or buffer name must be a Python identifier, got {name!r}")
        if name in self.params or name in self._buffer_specs:
            raise ValueError(f"{type(self).__name__} already has a parameter or buffer named {name!r}")

    def workspace(self, name: str, shape):
        """A reusable array of `shape` for the intermediate `name`, reallocated only when the
        shape changes, so a training step allocates nothing after the first. Each thread has its
        own (threads running inference on one network never write into each other's arrays),
        freed with the thread or with the layer."""
        workspaces = self._threads.workspaces
        array = workspaces.get(name)
        if array is None or array.shape != shape:
            array = workspaces[name] = self.backend.empty(shape)
        return array

    def noise_key(self, step: int) -> int:
        """The 32-bit key of this layer's random draw number `step` (backends.base.dropout_key):
        a function of the network's seed, the layer's position and the step, so every backend
        draws the same numbers and data-parallel ranks draw their own."""
        return dropout_key(self._noise_seed, self.position, step)

    # ------------------------------------------------------------------ what the network calls

    def attach(self, backend, position: int, noise_seed: int) -> None:
        """Join a network, before `build`: its backend, the layer's position, the noise seed."""
        self.backend = backend
        self.position = position
        self._noise_seed = noise_seed

    def detach(self) -> None:
        """Leave a network that was refused while being built: the layer is as new again."""
        self.backend = None
        self.params = {}
        self._buffer_specs = {}

    def allocate_buffers(self) -> None:
        """Create the declared buffers on the backend (the network calls it once, after build)."""
        for name, (shape, fill, _) in self._buffer_specs.items():
            setattr(self, name, self.backend.asarray(np.full(shape, fill)))

    def check_buffer(self, name: str, values: np.ndarray) -> None:
        """Refuse host `values` that buffer `name` can never hold (a checkpoint calls it before
        loading them): ValueError naming the buffer. The default checks the `minimum` declared
        with add_buffer; a layer whose buffers obey more overrides it."""
        minimum = self._buffer_specs[name][2]
        if minimum is not None and values.size and values.min() < minimum:
            raise ValueError(f"{type(self).__name__}'s {name} must be >= {minimum:g} everywhere, "
                             f"got {float(values.min())!r}")

    def buffers(self) -> dict:
        """{name: array} of the state buffers (live arrays, not copies)."""
        return {name: getattr(self, name) for name in self._buffer_specs}

    def counter_values(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in self.counters}

    def set_counters(self, values: dict) -> None:
        for name in self.counters:
            setattr(self, name, int(values[name]))

    def state(self) -> dict[str, np.ndarray]:
        """Buffers and counters as host arrays (what a checkpoint keeps of this layer)."""
        state = {name: self.backend.to_host(array) for name, array in self.buffers().items()}
        state.update({name: np.array(value, dtype=np.int64) for name, value in self.counter_values().items()})
        return state

    def load_state(self, state: dict) -> None:
        """Write `state` (as from `state()`, of any dtype and device) into the buffers and counters."""
        for name, array in self.buffers().items():
            array[...] = self.backend.asarray(np.asarray(state[name]))
        self.set_counters(state)

    def move_to(self, backend) -> None:
        """Follow the network to another backend (its parameters are moved by the network)."""
        for name, array in self.buffers().items():
            setattr(self, name, backend.asarray(self.backend.to_host(array)))
        self.backend = backend
        self._threads = _PerThread()

    def parameters(self) -> list[Parameter]:
        return list(self.params.values())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class _PerThread(threading.local):
    """A layer's workspaces in one thread (threading.local runs __init__ once per thread)."""

    def __init__(self):
        self.workspaces: dict = {}

    def __reduce__(self):  # a copied layer starts with no workspaces
        return _PerThread, ()


def _plain(value, where: str):
    """`value` as JSON can hold it (checkpoints keep configs as JSON); TypeError otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot record; keep constructor "
                    "arguments as numbers, strings, booleans or lists of them, or define config()")
