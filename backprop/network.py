"""Sequential: a stack of layers sharing one backend and one flat parameter buffer."""

from __future__ import annotations


import numpy as np

from backprop.backends import get_backend
from backprop.boundary import as_features
from backprop.checks import check_int
from backprop.layers import BatchNorm, Layer
from backprop.parameters import FlatStore, Parameter


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**31))


class Sequential:
    """Layers applied in order: forward(x) = layer_n(... layer_1(x)).

    `device` picks the backend ("cpu", "cuda", "cuda:N", "auto"), `dtype` is "float32" or
    "float64", and `seed` fixes the initial weights and the dropout masks (the same seed gives
    the same weights on every device and dtype). A new network is in training mode.
    """

    def __init__(self, *layers: Layer, device="cpu", dtype: str = "float32", seed: int | None = None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a backprop layer (Dense, Dropout, BatchNorm), "
                                f"got {type(layer).__name__}")
            if layer.backend is not None:
                raise ValueError(f"layer {i} ({layer!r}) already belongs to a network; create a new layer")
        seed = _fresh_seed() if seed is None else check_int("seed", seed, 0, wanted="a non-negative integer or None")
        self.in_features = self._check_chain(layers)
        self.layers = list(layers)
        self.seed = int(seed)
        self.dtype = dtype
        self.backend = get_backend(device, dtype)
        self.training = True
        self.epochs_trained = 0  # epochs completed by fit, over all calls: keys each epoch's shuffle
        self.out_features = self._output_width()
        self._build()

    @staticmethod
    def _check_chain(layers) -> int:
        """The network's input width; ValueError when a layer's input does not match its feed."""
        width = layers[0].in_features
        if width is None:
            raise ValueError(f"the first layer must fix the input width (Dense or BatchNorm), got {layers[0]!r}")
        for i, layer in enumerate(layers):
            if layer.in_features is not None and layer.in_features != width:
                raise ValueError(f"layer {i} ({layer!r}) expects {layer.in_features} inputs but the layer "
                                 f"before it gives {width}")
            if layer.out_features is not None:
                width = layer.out_features
        return layers[0].in_features

    def _output_width(self) -> int:
        width = self.in_features
        for layer in self.layers:
            if layer.out_features is not None:
                width = layer.out_features
        return width

    def _build(self) -> None:
        specs = []
        for i, layer in enumerate(self.layers):
            for name, shape in layer.param_shapes():
                specs.append((i, name, Parameter(f"layers.{i}.{name}", shape)))
        total = sum(p.size for _, _, p in specs)
        self.store = FlatStore(self.backend, total)
        offset = 0
        per_layer: list[dict] = [{} for _ in self.layers]
        for i, name, param in specs:
            param.attach(self.store, offset)
            offset += param.size
            per_layer[i][name] = param
        rng = np.random.default_rng(self.seed)
        width = self.in_features
        for i, layer in enumerate(self.layers):
            layer.bind(self.backend, per_layer[i], width, i, self.seed)
            layer.initialize(rng)
            if layer.out_features is not None:
                width = layer.out_features

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
        """Move the parameters (and layer state) to `device`; optimizers built before must be rebuilt."""
        backend = get_backend(device, self.dtype)
        if backend is self.backend:
            return self
        self.store.move_to(backend)
        for layer in self.layers:
            layer.to_backend(backend)
        self.backend = backend
        return self

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def num_parameters(self) -> int:
        return self.store.size

    # ------------------------------------------------------------------ compute

    def forward_internal(self, x, training: bool | None = None):
        """Forward on a device array already checked; returns a workspace (no copy).

        The layers' caches now hold this batch, so the public backward() is off until the next
        public forward() (a backward after predict() would use predict's activations)."""
        self._last_output_shape = None
        if training is None:
            training = self.training
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward_internal(self, grad, need_input_grad: bool = True):
        """Backward through every layer, overwriting each parameter's .grad; returns dL/dx or None."""
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i].backward(grad, need_input_grad or i > 0)
        return grad

    def forward(self, x):
        """The network's output for a batch `x` of shape (rows, in_features), as a new device array.

        Keeps what `backward` needs. Dropout and BatchNorm follow train()/eval().
        """
        x = as_features(self.backend, x, self.in_features, "x")
        if self.training and x.shape[0] < 2 and any(isinstance(layer, BatchNorm) for layer in self.layers):
            # refused here, before any layer runs: a Dropout in front would already have moved on
            raise ValueError(f"x has {x.shape[0]} row, but BatchNorm needs at least 2 in training mode; "
                             "call net.eval() to run single examples")
        out = self.forward_internal(x)
        self._last_output_shape = out.shape
        return self.backend.copy(out)

    __call__ = forward

    def backward(self, grad_output):
        """Backpropagate dL/d(output) of the latest forward; fills every parameter's .grad
        (overwriting it, regularization included) and returns dL/dx as a new device array."""
        shape = getattr(self, "_last_output_shape", None)
        if shape is None:
            raise RuntimeError("backward needs a forward of the same batch just before it; call net(x) "
                               "again (predict, evaluate and fit run their own forwards)")
        grad = as_features(self.backend, grad_output, shape[1], "grad_output", rows=shape[0])
        grad_x = self.backward_internal(grad, need_input_grad=True)
        return self.backend.copy(grad_x)

    def penalty(self) -> float:
        """The regularization term l1 sum|W| + l2 sum W^2 over every Dense layer, as a float."""
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
        return {"layers": [layer.config() for layer in self.layers], "dtype": self.dtype, "seed": self.seed}

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts, with the device and dtype."""
        lines = [f"Sequential on {self.device} ({self.dtype}), seed {self.seed}",
                 f"{'#':<3}{'layer':<32}{'output':<14}{'params':>10}"]
        width = self.in_features
        for i, layer in enumerate(self.layers):
            if layer.out_features is not None:
                width = layer.out_features
            count = sum(p.size for p in layer.parameters())
            lines.append(f"{i:<3}{layer.label():<32}{'(None, ' + str(width) + ')':<14}{count:>10,}")
        lines.append(f"total trainable parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}, device={self.device!r}, dtype={self.dtype!r})"
