"""Layers: Dense, Dropout and BatchNorm.

A layer declares its parameters (`param_shapes`), fills their initial values once the network
has allocated its flat buffer (`initialize`), and runs `forward(x, training)` and
`backward(grad_y, need_input_grad)` through its network's backend, never through NumPy or CuPy
directly. Intermediate arrays live in per-layer workspaces reused across steps of the same
batch size, so a training step allocates nothing after the first.
"""

from __future__ import annotations

import math

import numpy as np

from backprop.backends.base import ACTIVATIONS, dropout_key
from backprop.checks import check_int, check_real
from backprop.parameters import Parameter

INITS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "zeros")


def check_activation(activation) -> str:
    """The canonical activation name ("linear" for None); ValueError for an unknown one."""
    if activation is None:
        return "linear"
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
    return activation.lower()


class Layer:
    """Base of every layer. `in_features`/`out_features` are None for width-preserving layers."""

    in_features: int | None = None
    out_features: int | None = None

    def __init__(self):
        self.backend = None
        self._workspaces: dict = {}

    # -- lifecycle, called by Sequential
    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return []

    def bind(self, backend, params: dict[str, Parameter], width: int, position: int, seed: int) -> None:
        """Attach to the network: its backend, this layer's parameters, the width it receives."""
        self.backend = backend
        self.params = params
        self.width = width
        self.position = position
        self.seed = seed
        self._workspaces.clear()

    def initialize(self, rng: np.random.Generator) -> None:
        """Write initial values into the parameter views (drawn on the host, seeded)."""

    def to_backend(self, backend) -> None:
        """Follow the network to another backend (parameters are moved by the network)."""
        self.backend = backend
        self._workspaces.clear()

    # -- state beyond the parameters (running statistics, counters), for checkpoints
    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def config(self) -> dict:
        raise NotImplementedError

    def _workspace(self, name: str, shape):
        """A reusable array of `shape` for intermediate `name` (reallocated when the shape changes)."""
        array = self._workspaces.get(name)
        if array is None or array.shape != shape:
            array = self.backend.empty(shape)
            self._workspaces[name] = array
        return array

    def parameters(self) -> list[Parameter]:
        return list(getattr(self, "params", {}).values())

    def penalty(self):
        """This layer's regularization term as a 0-d array, or None."""
        return None

    def label(self) -> str:
        """The layer in a few words, for summaries: "BatchNorm 256"."""
        return f"{type(self).__name__} {self.in_features}"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """A fully connected layer: y = act(x @ W + b), W of shape (in, out), b of shape (out,).

    Backward, with dz = dL/dy * act'(x @ W + b):
        dL/dW = x.T @ dz,  dL/db = sum over rows of dz,  dL/dx = dz @ W.T
    `l1` and `l2` add l1 sum|W| + l2 sum W^2 to the loss (Keras's definitions), and
    l1 sign(W) + 2 l2 W to dL/dW.
    """

    def __init__(self, in_features: int, out_features: int, activation=None, l1: float = 0.0,
                 l2: float = 0.0, init: str | None = None, slope: float = 0.01):
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        self.activation = check_activation(activation)
        self.l1 = check_real("l1", l1)
        self.l2 = check_real("l2", l2)
        self.slope = check_real("slope", slope)
        if init is None:
            init = "he_normal" if self.activation in ("relu", "leaky_relu", "gelu") else "glorot_uniform"
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init

    def param_shapes(self):
        return [("weight", (self.in_features, self.out_features)), ("bias", (self.out_features,))]

    @property
    def weight(self) -> Parameter:
        return self.params["weight"]

    @property
    def bias(self) -> Parameter:
        return self.params["bias"]

    def initialize(self, rng):
        """Glorot for sigmoid/tanh/linear/softmax, He for the ReLU family; biases at zero.

        Drawn in float64 on the host from the network's seeded generator, so the same seed gives
        the same weights on every device and dtype.
        """
        fan_in, fan_out = self.in_features, self.out_features
        shape = (fan_in, fan_out)
        if self.init == "he_normal":
            w = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
        elif self.init == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            w = rng.uniform(-limit, limit, size=shape)
        elif self.init == "glorot_normal":
            w = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
        elif self.init == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, size=shape)
        else:
            w = np.zeros(shape)
        self.weight.data = w
        self.bias.data = np.zeros(fan_out)

    def forward(self, x, training: bool):
        backend, params = self.backend, self.params  # (params: no property calls on the hot path)
        rows = x.shape[0]
        shape = (rows, self.out_features)
        z = backend.matmul(x, params["weight"].data, out=self._workspace("z", shape))
        y, pre = backend.bias_activation_forward(
            z, params["bias"].data, self.activation, self.slope, out=self._workspace("y", shape))
        self._x, self._y, self._pre = x, y, pre
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        backend = self.backend
        if self.activation == "linear":
            dz = grad_y
        else:
            dz = backend.activation_backward(grad_y, self._y, self._pre, self.activation, self.slope,
                                             out=self._workspace("dz", grad_y.shape))
        weight = self.params["weight"]
        backend.matmul(self._x, dz, transpose_a=True, out=weight.grad)
        backend.sum_rows(dz, out=self.params["bias"].grad)
        if self.l1 or self.l2:
            backend.l1_l2_penalty_grad(weight.data, weight.grad, self.l1, self.l2)
        if not need_input_grad:
            return None
        return backend.matmul(dz, weight.data, transpose_b=True,
                              out=self._workspace("dx", self._x.shape))

    def label(self) -> str:
        """"Dense 64->256 relu l2 0.01"."""
        act = "" if self.activation == "linear" else f" {self.activation}"
        penalty = "".join(f" {k} {v:g}" for k, v in (("l1", self.l1), ("l2", self.l2)) if v)
        return f"Dense {self.in_features}->{self.out_features}{act}{penalty}"

    def penalty(self):
        if not (self.l1 or self.l2):
            return None
        return self.backend.l1_l2_penalty(self.weight.data, self.l1, self.l2)

    def config(self):
        return {"type": "Dense", "in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "l1": self.l1, "l2": self.l2, "init": self.init,
                "slope": self.slope}


class Dropout(Layer):
    """Inverted dropout: in training, y = x * m with m_i = 0 (probability p) or 1 / (1 - p);
    in eval, y = x. dL/dx = dL/dy * m.

    The mask comes from a counter-based hash of (network seed, layer position, step), so every
    backend draws the same mask and a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_real("p", p, 0.0, 1.0, high_open=True)
        self.step = 0

    def forward(self, x, training: bool):
        self._mask = None
        if not training or self.p == 0.0:
            return x
        key = dropout_key(self.seed, self.position, self.step)
        self.step += 1
        y, self._mask = self.backend.dropout_forward(x, self.p, key, out=self._workspace("y", x.shape))
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        if self._mask is None:
            return grad_y
        return self.backend.dropout_backward(grad_y, self._mask, out=self._workspace("dx", grad_y.shape))

    def label(self) -> str:
        return f"Dropout {self.p:g}"

    def state(self):
        return {"step": np.array(self.step, dtype=np.int64)}

    def load_state(self, state):
        self.step = int(state["step"])

    def config(self):
        return {"type": "Dropout", "p": self.p}


class BatchNorm(Layer):
    """Batch normalization over the feature axis (PyTorch's BatchNorm1d defaults).

    Training: y = gamma (x - mu_B) / sqrt(var_B + eps) + beta with the batch's statistics, and
    running = (1 - momentum) running + momentum batch (unbiased variance). Eval: the running
    statistics instead. `momentum` = 0.1, `eps` = 1e-5, as in PyTorch.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.in_features = self.out_features = check_int("num_features", num_features)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0)
        self.eps = check_real("eps", eps)
        if self.eps == 0.0:
            raise ValueError("eps must be > 0, got 0.0")
        self.running_mean = None
        self.running_var = None

    def param_shapes(self):
        n = self.in_features
        return [("gamma", (n,)), ("beta", (n,))]

    @property
    def gamma(self) -> Parameter:
        return self.params["gamma"]

    @property
    def beta(self) -> Parameter:
        return self.params["beta"]

    def initialize(self, rng):
        n = self.in_features
        self.gamma.data = np.ones(n)
        self.beta.data = np.zeros(n)
        self.running_mean = self.backend.asarray(np.zeros(n))
        self.running_var = self.backend.asarray(np.ones(n))

    def to_backend(self, backend):
        mean, var = self.backend.to_host(self.running_mean), self.backend.to_host(self.running_var)
        super().to_backend(backend)
        self.running_mean, self.running_var = backend.asarray(mean), backend.asarray(var)

    def forward(self, x, training: bool):
        backend = self.backend
        if not training:
            self._cache = None
            self._eval_input = x
            return backend.batchnorm_forward_eval(x, self.gamma.data, self.beta.data,
                                                  self.running_mean, self.running_var, self.eps)
        rows = x.shape[0]
        if rows < 2:
            raise ValueError(f"BatchNorm in training mode needs a batch of at least 2 rows, got {rows}")
        y, xhat, mean, var, inv_std = backend.batchnorm_forward_train(x, self.gamma.data, self.beta.data, self.eps)
        backend.update_running_stats(self.running_mean, self.running_var, mean, var, self.momentum, rows)
        self._cache = (xhat, inv_std)
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        if self._cache is None:  # eval mode: the running statistics are constants
            grad_x, grad_gamma, grad_beta = self.backend.batchnorm_backward_eval(
                grad_y, self._eval_input, self.gamma.data, self.running_mean, self.running_var, self.eps)
        else:
            xhat, inv_std = self._cache
            grad_x, grad_gamma, grad_beta = self.backend.batchnorm_backward(grad_y, xhat, self.gamma.data, inv_std)
        self.gamma.grad[...] = grad_gamma
        self.beta.grad[...] = grad_beta
        return grad_x

    def state(self):
        return {"running_mean": self.backend.to_host(self.running_mean),
                "running_var": self.backend.to_host(self.running_var)}

    def load_state(self, state):
        self.running_mean = self.backend.asarray(state["running_mean"])
        self.running_var = self.backend.asarray(state["running_var"])

    def config(self):
        return {"type": "BatchNorm", "num_features": self.in_features, "momentum": self.momentum,
                "eps": self.eps}


LAYER_TYPES = {"Dense": Dense, "Dropout": Dropout, "BatchNorm": BatchNorm}


def layer_from_config(config: dict) -> Layer:
    """Rebuild a layer from its `config()` (used by checkpoints)."""
    kind = config.get("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r} in the architecture; expected one of {sorted(LAYER_TYPES)}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    return LAYER_TYPES[kind](**kwargs)
