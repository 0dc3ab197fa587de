"""BatchNorm: normalization of each feature over the batch."""

from __future__ import annotations

from backprop.checks import check_int, check_real
from backprop.layers.base import Layer, register_layer


@register_layer
class BatchNorm(Layer):
    """Batch normalization over the feature axis (PyTorch's BatchNorm1d defaults).

    Training: y = gamma (x - mu_B) / sqrt(var_B + eps) + beta with the batch's statistics, and
    running = (1 - momentum) running + momentum batch (unbiased variance). Eval: the running
    statistics instead. `momentum` = 0.1, `eps` = 1e-5, as in PyTorch. The running statistics
    are buffers; a training batch needs at least 2 rows.
    """

    min_train_rows = 2

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.num_features = check_int("num_features", num_features)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0)
        self.eps = check_real("eps", eps, low_open=True)
        self.input_shape = (self.num_features,)

    def build(self, input_shape):
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"normalizes {self.num_features} features but the layer before it gives shape "
                             f"{tuple(input_shape)}")
        self._declare_state()
        return self.input_shape

    def _declare_state(self) -> None:
        """gamma and beta, the running statistics: one of each per feature."""
        n = self.num_features
        self.gamma = self.add_parameter("gamma", (n,), "ones")
        self.beta = self.add_parameter("beta", (n,), "zeros")
        self.add_buffer("running_mean", (n,), 0.0)
        self.add_buffer("running_var", (n,), 1.0, minimum=0.0)  # a variance

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
        self.backend.copy(grad_gamma, out=self.gamma.grad)
        self.backend.copy(grad_beta, out=self.beta.grad)
        return grad_x

    def label(self) -> str:
        return f"BatchNorm {self.num_features}"
