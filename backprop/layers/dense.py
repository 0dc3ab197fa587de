"""Dense: the fully connected layer, with its activation fused in."""

from __future__ import annotations

from backprop.backends.activations import get_activation
from backprop.checks import check_int, check_real
from backprop.initializers import check_init
from backprop.layers.base import Layer, register_layer


@register_layer
class Dense(Layer):
    """A fully connected layer: y = act(x @ W + b), W of shape (in, out), b of shape (out,).

    Backward, with dz = dL/dy * act'(x @ W + b):
        dL/dW = x.T @ dz,  dL/db = sum over rows of dz,  dL/dx = dz @ W.T
    `activation` is a name of backprop.backends.activations (built-in or registered); `slope` is
    leaky_relu's negative slope. `l1` and `l2` add l1 sum|W| + l2 sum W^2 to the loss (Keras's
    definitions), and l1 sign(W) + 2 l2 W to dL/dW. `init` (backprop.initializers) defaults to
    the activation's: He for the ReLU family, Glorot otherwise; biases start at zero.
    """

    def __init__(self, in_features: int, out_features: int, activation=None, l1: float = 0.0,
                 l2: float = 0.0, init=None, slope: float = 0.01):
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        self.activation = get_activation(activation).name
        self.l1 = check_real("l1", l1)
        self.l2 = check_real("l2", l2)
        self.slope = check_real("slope", slope)
        self.init = check_init(get_activation(activation).init if init is None else init)
        self.input_shape = (self.in_features,)

    def build(self, input_shape):
        if len(input_shape) > 1:
            raise ValueError(f"expects {self.in_features} inputs per example but the layer before it gives shape "
                             f"{tuple(input_shape)}; put a Flatten() before it")
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"expects {self.in_features} inputs but the layer before it gives {input_shape[0]}")
        self.weight = self.add_parameter("weight", (self.in_features, self.out_features), self.init)
        self.bias = self.add_parameter("bias", (self.out_features,), "zeros")
        return (self.out_features,)

    def forward(self, x, training: bool):
        backend = self.backend
        shape = (x.shape[0], self.out_features)
        z = backend.matmul(x, self.weight.data, out=self.workspace("z", shape))
        y, pre = backend.bias_activation_forward(z, self.bias.data, self.activation, self.slope,
                                                 out=self.workspace("y", shape))
        self._x, self._y, self._pre = x, y, pre
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        backend = self.backend
        if self.activation == "linear":
            dz = grad_y
        else:
            dz = backend.activation_backward(grad_y, self._y, self._pre, self.activation, self.slope,
                                             out=self.workspace("dz", grad_y.shape))
        weight = self.weight
        backend.matmul(self._x, dz, transpose_a=True, out=weight.grad)
        backend.sum_rows(dz, out=self.bias.grad)
        if self.l1 or self.l2:
            backend.l1_l2_penalty_grad(weight.data, weight.grad, self.l1, self.l2)
        if not need_input_grad:
            return None
        return backend.matmul(dz, weight.data, transpose_b=True, out=self.workspace("dx", self._x.shape))

    def penalty(self):
        if not (self.l1 or self.l2):
            return None
        return self.backend.l1_l2_penalty(self.weight.data, self.l1, self.l2)

    def label(self) -> str:
        """"Dense 64->256 relu l2 0.01"."""
        act = "" if self.activation == "linear" else f" {self.activation}"
        penalty = "".join(f" {k} {v:g}" for k, v in (("l1", self.l1), ("l2", self.l2)) if v)
        return f"Dense {self.in_features}->{self.out_features}{act}{penalty}"

    def config(self):
        # An init function is not recorded (None: the activation's default): it only drew the
        # first weights, and a checkpoint holds the weights themselves.
        init = self.init if isinstance(self.init, str) else None
        return {"type": self.type_name(), "in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "l1": self.l1, "l2": self.l2, "init": init, "slope": self.slope}
