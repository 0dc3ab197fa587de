"""LayerNorm: normalization of each example over its last axis."""

from __future__ import annotations

from backprop.checks import check_int, check_real
from backprop.layers.base import Layer, register_layer


@register_layer
class LayerNorm(Layer):
    """Layer normalization over the last axis (PyTorch's LayerNorm(n) defaults):

        y = gamma (x - mu) / sqrt(var + eps) + beta,  mu, var: mean and (biased) variance of
        each example's last-axis vector of n values; gamma, beta: n learned values each.

    Backward, per vector, with xhat = (x - mu) inv_std and g = dL/dy * gamma:
        dL/dx = inv_std / n (n g - sum(g) - xhat sum(g xhat))
        dL/dgamma = sum over vectors of dL/dy xhat,  dL/dbeta = sum over vectors of dL/dy
    The same in training and in eval (no running statistics), and for any number of rows.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5):
        super().__init__()
        self.normalized_shape = check_int("normalized_shape", normalized_shape)
        self.eps = check_real("eps", eps, low_open=True)

    def build(self, input_shape):
        if not input_shape or input_shape[-1] != self.normalized_shape:
            raise ValueError(f"normalizes the last axis of {self.normalized_shape} values but the layer before "
                             f"it gives shape {tuple(input_shape)}")
        n = self.normalized_shape
        self.gamma = self.add_parameter("gamma", (n,), "ones")
        self.beta = self.add_parameter("beta", (n,), "zeros")
        return tuple(input_shape)

    def forward(self, x, training: bool):
        backend = self.backend
        rows = x.size // self.normalized_shape  # every last-axis vector is a row to normalize
        flat = backend.reshape(x, (rows, self.normalized_shape))
        y, self._xhat, self._inv_std = backend.layernorm_forward(flat, self.gamma.data, self.beta.data, self.eps)
        return backend.reshape(y, x.shape)

    def backward(self, grad_y, need_input_grad: bool = True):
        backend = self.backend
        flat = backend.reshape(grad_y, self._xhat.shape)
        grad_x, grad_gamma, grad_beta = backend.layernorm_backward(flat, self._xhat, self.gamma.data, self._inv_std)
        backend.copy(grad_gamma, out=self.gamma.grad)
        backend.copy(grad_beta, out=self.beta.grad)
        return backend.reshape(grad_x, grad_y.shape) if need_input_grad else None

    def label(self) -> str:
        return f"LayerNorm {self.normalized_shape}"
