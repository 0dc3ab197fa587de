"""Sequential: a stack of layers sharing one backend and one flat parameter buffer."""

from __future__ import annotations

import contextlib
import math
import threading
import warnings

import numpy as np

from backprop.backends import DeviceUnavailableError, get_backend, resolve_device
from backprop.boundary import as_batch
from backprop.checks import check_int
from backprop.extension_checks import check_returned, is_builtin
from backprop.layers import Layer
from backprop.parameters import FlatStore


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**31))


class Sequential:
    """Layers applied in order: forward(x) = layer_n(... layer_1(x)).

    `device` picks the backend ("cpu", "cuda", "cuda:N", "auto"), `dtype` is "float32" or
    "float64", and `seed` fixes the initial weights and the dropout masks (the same seed gives
    the same weights on every device and dtype). `input_shape` is the shape of one example
    (no batch axis); it may be left out when the first layer fixes it (Dense, BatchNorm).
    A new network is in training mode.
    """

    def __init__(self, *layers: Layer, device="cpu", dtype: str = "float32", seed: int | None = None,
                 input_shape=None):
        self._setup(layers, device, dtype, seed, input_shape)
        count = self.num_parameters()
        try:
            self._allocate()
        except BaseException as exc:  # no memory for the buffers, say: the layers stay free to reuse
            for layer in self.layers:
                layer.detach()
            if isinstance(exc, MemoryError):  # CuPy's OutOfMemoryError is one too
                raise MemoryError(f"a network of {count:,} parameters does not fit in the memory of {self.device} "
                                  f"({' '.join(str(exc).split())})") from None
            raise

    def _setup(self, layers, device, dtype, seed, input_shape) -> None:
        """Everything but the allocation: arguments checked, shapes inferred, parameters and
        buffers declared."""
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer, got none")
        seen: dict[int, int] = {}
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a backprop layer (a bp.Layer such as bp.Dense), "
                                f"got {type(layer).__name__}")
            if id(layer) in seen:
                raise ValueError(f"layer {i} is the same object as layer {seen[id(layer)]} ({type(layer).__name__}); "
                                 "a layer keeps what its backward needs, so each position needs its own "
                                 "layer object: create another")
            seen[id(layer)] = i
            if layer.backend is not None:
                raise ValueError(f"layer {i} ({type(layer).__name__}) already belongs to a network; create a new layer")
        seed = _fresh_seed() if seed is None else check_int("seed", seed, 0, wanted="a non-negative integer or None")
        self.input_shape = _example_shape(layers, input_shape)
        self.layers = list(layers)
        self.seed = int(seed)
        self.dtype = dtype
        self.backend = get_backend(device, dtype)
        self.training = True
        self.epochs_trained = 0  # epochs completed by fit, over all calls: keys each epoch's shuffle
        self.output_shape = self._declare()
        self._users_layers = frozenset(i for i, layer in enumerate(self.layers) if not is_builtin(layer))
        self._last_output_shape = None
        self._last_forward_thread = None
        self.usage = Usage()

    def _declare(self) -> tuple[int, ...]:
        """Each layer checks its input shape and declares its parameters and buffers (nothing is
        allocated yet: a checkpoint checks the declared sizes against its file first); returns
        the network's output shape."""
        shape = self.input_shape
        self._layer_shapes = []
        for i, layer in enumerate(self.layers):
            layer.attach(self.backend, i, self.seed)
            try:
                shape = tuple(int(s) for s in layer.build(shape))
            except BaseException as exc:
                for attached in self.layers[:i + 1]:  # a refused network leaves its layers free to reuse
                    attached.detach()
                if isinstance(exc, ValueError):
                    raise ValueError(f"layer {i} ({type(layer).__name__}): {exc}") from None
                raise
            self._layer_shapes.append(shape)
        for i, layer in enumerate(self.layers):
            for param in layer.parameters():
                param.name = f"layers.{i}.{param.name}"
        self.min_train_rows = max(layer.min_train_rows for layer in self.layers)
        return shape

    def _allocate(self) -> None:
        """One flat buffer for every parameter, filled from the seeded generator in the order
        declared; then the layers' buffers."""
        params = self.parameters()
        with self.backend.on_device():
            self.store = FlatStore(self.backend, sum(p.size for p in params), owner=self)
            offset = 0
            for param in params:
                param.attach(self.store, offset)
                offset += param.size
            rng = np.random.default_rng(self.seed)
            for param in params:
                param.initialize(rng)
            for layer in self.layers:
                layer.allocate_buffers()

    # ------------------------------------------------------------------ shapes

    @property
    def in_features(self) -> int:
        """Values per example in (the input width of a network of vectors)."""
        return math.prod(self.input_shape)

    @property
    def out_features(self) -> int:
        """Values per example out."""
        return math.prod(self.output_shape)

    # ------------------------------------------------------------------ modes and devices

    @property
    def device(self) -> str:
        return self.backend.device

    def train(self) -> "Sequential":
        self.training = True
        return self

    def eval(self) -> "Sequential":
        self.training = False
        return self

    def to(self, device) -> "Sequential":
        """Move the parameters and every layer's state to `device`; optimizers built before must
        be rebuilt."""
        backend = get_backend(device, self.dtype)
        if backend is self.backend:
            return self
        with self.usage.training("net.to()"), backend.on_device():
            self.store.move_to(backend)
            for layer in self.layers:
                layer.move_to(backend)
            self.backend = backend
            self._last_output_shape = None
        return self

    def parameters(self) -> list:
        return [p for layer in self.layers for p in layer.parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def set_noise_seed(self, seed: int) -> None:
        """The seed of every layer's random draws (dropout masks): the network's own seed, or
        a rank's in data-parallel training, so that ranks drop different elements."""
        for layer in self.layers:
            layer._noise_seed = int(seed)

    # ------------------------------------------------------------------ layer state, generically

    def buffers(self) -> list:
        """Every layer's state buffers (live device arrays), in layer order."""
        return [array for layer in self.layers for array in layer.buffers().values()]

    def counter_values(self) -> list[dict]:
        return [layer.counter_values() for layer in self.layers]

    def set_counters(self, values: list[dict]) -> None:
        for layer, counters in zip(self.layers, values):
            layer.set_counters(counters)

    # ------------------------------------------------------------------ compute

    def forward_internal(self, x, training: bool | None = None):
        """Forward on a device array already checked; returns a workspace (no copy). Runs with
        the device current.

        The layers' caches now hold this batch, so the public backward() is off until the next
        public forward() (a backward after predict() would use predict's activations)."""
        self._last_output_shape = None
        if training is None:
            training = self.training
        if self._users_layers:
            return self._forward_checking_users_layers(x, training)
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward_internal(self, grad, need_input_grad: bool = False):
        """Backward through every layer, overwriting each parameter's .grad; returns dL/dx of
        the network's input when `need_input_grad`, else None (the first layer skips it)."""
        if self._users_layers:
            return self._backward_checking_users_layers(grad, need_input_grad)
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i].backward(grad, need_input_grad or i > 0)
        return grad if need_input_grad else None

    # A user's layer is checked where what it returns enters our code (the next layer, the loss,
    # predict): an array of this backend and dtype, of the shape its build() declared for this
    # batch. Built-in layers are not: they are tested, and their steps are the ones timed.

    def _forward_checking_users_layers(self, x, training: bool):
        rows = x.shape[0]
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, training)
            if i in self._users_layers:
                check_returned(self.backend, x, (rows, *self._layer_shapes[i]), f"layer {i} ({type(layer).__name__}).forward")
        return x

    def _backward_checking_users_layers(self, grad, need_input_grad: bool):
        rows = grad.shape[0]
        for i in range(len(self.layers) - 1, -1, -1):
            layer, wanted = self.layers[i], need_input_grad or i > 0
            grad = layer.backward(grad, wanted)
            if wanted and i in self._users_layers:
                shape = self._layer_shapes[i - 1] if i else self.input_shape
                check_returned(self.backend, grad, (rows, *shape), f"layer {i} ({type(layer).__name__}).backward")
        return grad if need_input_grad else None

    def forward(self, x):
        """The network's output for a batch `x` of shape (rows, *input_shape), as a new device array.

        Keeps what `backward` needs (a copy of x: changing x afterwards changes nothing).
        Dropout and BatchNorm follow train()/eval(). In eval mode, several threads may call it
        at once; in training mode it needs the network to itself (see `Usage`).
        """
        backend = self.backend
        training = self.training
        usage = self.usage
        token = usage.begin_training("a training-mode forward") if training else usage.begin_inference()
        try:
            with backend.on_device():
                x = as_batch(backend, x, self.input_shape, "x", copy=True)
                if training and x.shape[0] < self.min_train_rows:
                    # refused here, before any layer runs: a Dropout in front would already have moved on
                    layer = next(layer for layer in self.layers if layer.min_train_rows == self.min_train_rows)
                    raise ValueError(f"x has {x.shape[0]} row{'s' if x.shape[0] > 1 else ''}, but "
                                     f"{type(layer).__name__} needs at least {self.min_train_rows} in training "
                                     "mode; call net.eval() to run single examples")
                out = self.forward_internal(x, training)
                self._last_output_shape = out.shape
                self._last_forward_thread = threading.get_ident()
                return backend.copy(out)
        finally:
            usage.end_training(token) if training else usage.end_inference()

    __call__ = forward

    def backward(self, grad_output, input_grad: bool = False):
        """Backpropagate dL/d(output) of the latest forward: fills every parameter's .grad
        (overwriting it, regularization included). Returns None, as PyTorch's loss.backward();
        with `input_grad=True`, returns dL/dx of the forward's input as a new device array.
        The forward must have been this thread's: the layers keep one forward's activations."""
        backend = self.backend
        # The guard first: no other thread's forward can then replace the activations checked below.
        token = self.usage.begin_training("backward")
        try:
            shape = self._last_output_shape
            if shape is None:
                raise RuntimeError("backward needs a forward of the same batch just before it; call net(x) "
                                   "again (predict, evaluate and fit run their own forwards)")
            if self._last_forward_thread != threading.get_ident():
                raise RuntimeError("backward needs this thread's forward just before it, but the latest forward "
                                   "ran in another thread; a network keeps one forward's activations, so train "
                                   "it from one thread at a time")
            with backend.on_device():
                grad = as_batch(backend, grad_output, shape[1:], "grad_output", rows=shape[0])
                grad_x = self.backward_internal(grad, need_input_grad=input_grad)
                return backend.copy(grad_x) if input_grad else None
        finally:
            self.usage.end_training(token)

    def penalty(self) -> float:
        """The regularization term (l1 sum|W| + l2 sum W^2 of Dense, or a user layer's) as a float."""
        with self.backend.on_device():
            total = self.penalty_internal()
            return 0.0 if total is None else self.backend.to_scalar(total)

    def penalty_internal(self):
        total = None
        for layer in self.layers:
            term = layer.penalty()
            if term is not None:
                total = term if total is None else total + term
        return total

    # ------------------------------------------------------------------ description

    def config(self) -> dict:
        return {"layers": [layer.config() for layer in self.layers], "dtype": self.dtype, "seed": self.seed,
                "input_shape": list(self.input_shape)}

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts, with the device and dtype."""
        lines = [f"Sequential on {self.device} ({self.dtype}), seed {self.seed}, input {_shape_text(self.input_shape)}",
                 f"{'#':<3}{'layer':<32}{'output':<18}{'params':>10}"]
        for i, (layer, shape) in enumerate(zip(self.layers, self._layer_shapes)):
            count = sum(p.size for p in layer.parameters())
            lines.append(f"{i:<3}{layer.label():<32}{_shape_text(shape):<18}{count:>10,}")
        lines.append(f"total trainable parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}, device={self.device!r}, dtype={self.dtype!r})"

    # ------------------------------------------------------------------ copies and pickles

    def __reduce__(self):
        """Pickling and deep copies rebuild the network from its record (as a checkpoint does),
        on its device, or on the CPU with a warning where that device is not usable."""
        with self.usage.inference(), self.backend.on_device():
            record = {"config": self.config(), "classes": [type(layer) for layer in self.layers],
                      "device": self.device, "data": self.backend.to_host(self.store.data),
                      "grad": self.backend.to_host(self.store.grad),
                      "states": [layer.state() for layer in self.layers],
                      "training": self.training, "epochs_trained": self.epochs_trained}
        return _rebuild_network, (record,)


class Usage:
    """Which threads are inside a call on one network. Inference (predict, evaluate, an
    eval-mode forward) may run in several threads at once: each thread has its own workspaces,
    and nothing in an eval-mode forward writes state. Training (fit, a training-mode forward,
    backward, an optimizer step) changes the weights and the layers' state, so it needs the
    network to itself: it is refused while another thread is inside any call on the network,
    and every call from another thread is refused while it runs. Refusing is the point: waiting
    would make a predict silently see weights from the middle of an epoch."""

    def __init__(self):
        self._lock = threading.Lock()
        self._trainer: tuple[int, str] | None = None  # (thread, what) of the training call under way
        self._readers: dict[int, int] = {}  # thread -> inference calls under way

    def begin_training(self, what: str):
        """Enter a training call; returns the token `end_training` takes (calls nest in one thread)."""
        me = threading.get_ident()
        with self._lock:
            trainer = self._trainer
            if trainer is not None and trainer[0] != me:
                raise RuntimeError(f"{what} refused: another thread is training this network ({trainer[1]}); "
                                   "a network trains in one thread at a time")
            if self._readers and any(thread != me for thread in self._readers):
                raise RuntimeError(f"{what} refused: another thread is running inference on this network; "
                                   "training changes the weights it reads, so train when it is done "
                                   "(or train a copy: copy.deepcopy(net))")
            self._trainer = (me, what)
        return trainer

    def end_training(self, token) -> None:
        self._trainer = token  # one assignment: atomic, and a racing begin_* sees either value

    def begin_inference(self) -> None:
        me = threading.get_ident()
        with self._lock:
            trainer = self._trainer
            if trainer is not None and trainer[0] != me:
                raise RuntimeError(f"inference refused: another thread is training this network ({trainer[1]}); "
                                   "predict when it is done, or on a copy (copy.deepcopy(net))")
            self._readers[me] = self._readers.get(me, 0) + 1

    @contextlib.contextmanager
    def training(self, what: str):
        """`with usage.training("net.to()"):` begin_training and end_training around a block."""
        token = self.begin_training(what)
        try:
            yield
        finally:
            self.end_training(token)

    @contextlib.contextmanager
    def inference(self):
        """`with usage.inference():` begin_inference and end_inference around a block."""
        self.begin_inference()
        try:
            yield
        finally:
            self.end_inference()

    def end_inference(self) -> None:
        me = threading.get_ident()
        with self._lock:
            count = self._readers[me] - 1
            if count:
                self._readers[me] = count
            else:
                del self._readers[me]


def declared_network(layers, device="cpu", dtype: str = "float32", seed: int = 0, input_shape=None) -> Sequential:
    """A network whose parameters and buffers are declared but not yet allocated: a checkpoint
    reader checks the declared sizes against its file first, then calls `_allocate()`."""
    net = Sequential.__new__(Sequential)
    net._setup(tuple(layers), device, dtype, seed, input_shape)
    return net


def _example_shape(layers, input_shape) -> tuple[int, ...]:
    """The shape of one example: `input_shape`, or the one the first layer fixes."""
    declared = layers[0].input_shape
    if input_shape is None:
        if declared is None:
            raise ValueError(f"the first layer ({type(layers[0]).__name__}) does not fix the shape of an example; "
                             "pass input_shape=, e.g. Sequential(..., input_shape=(64,))")
        return tuple(declared)
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(check_int("input_shape", s) for s in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of positive integers, got {input_shape!r}") from None
    if not shape:
        raise ValueError("input_shape must have at least one axis, got ()")
    return shape


def _shape_text(shape) -> str:
    return "(None, " + ", ".join(str(s) for s in shape) + ")"


def _usable_or_cpu(device: str) -> str:
    """`device` where it is usable here, else the CPU with a warning (as bp.load does)."""
    try:
        return resolve_device(device)
    except DeviceUnavailableError as exc:
        warnings.warn(f"the network was on {device}, which is not usable here ({exc}); it is on the CPU",
                      RuntimeWarning, stacklevel=3)
        return "cpu"


def _rebuild_network(record: dict) -> Sequential:
    layers = []
    for cls, config in zip(record["classes"], record["config"]["layers"]):
        layers.append(cls(**{k: v for k, v in config.items() if k != "type"}))
    config = record["config"]
    device = _usable_or_cpu(record["device"])
    net = Sequential(*layers, device=device, dtype=config["dtype"], seed=config["seed"],
                     input_shape=config.get("input_shape"))
    with net.backend.on_device():
        net.store.data[...] = net.backend.asarray(record["data"])
        net.store.grad[...] = net.backend.asarray(record["grad"])
        for layer, state in zip(net.layers, record["states"]):
            layer.load_state(state)
    net.training, net.epochs_trained = record["training"], record["epochs_trained"]
    return net
