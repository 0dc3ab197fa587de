"""Batch normalization's passes: training forward and backward (the batch's statistics), the
running statistics' update, and eval forward and backward (the running statistics, constants).
Kernels: kernels/batchnorm.cu."""

from __future__ import annotations

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks, tiles
from backprop.backends.ops import fused_op


@fused_op
def batchnorm_forward_train(backend, x, gamma, beta, eps: float):
    """Normalize each feature over the batch:

    mu = mean_i x_i, var = mean_i (x_i - mu)^2 (biased), xhat = (x - mu) / sqrt(var + eps)
    y = gamma xhat + beta
    Returns `(y, xhat, mean, var, inv_std)`; backward needs xhat and inv_std.
    """
    xp = backend.xp
    n = x.shape[0]
    mean = xp.sum(x, axis=0) / n
    centered = x - mean
    var = xp.sum(centered * centered, axis=0) / n
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = centered * inv_std
    return gamma * xhat + beta, xhat, mean, var, inv_std


@fused_op
def batchnorm_backward(backend, grad_y, xhat, gamma, inv_std):
    """Gradients of the training-mode batch norm (n rows):

    dL/dbeta  = sum_i dL/dy_i
    dL/dgamma = sum_i dL/dy_i xhat_i
    dL/dx_i   = gamma inv_std / n (n dL/dy_i - dL/dbeta - xhat_i dL/dgamma)
    Returns `(grad_x, grad_gamma, grad_beta)`.
    """
    xp = backend.xp
    n = grad_y.shape[0]
    grad_beta = xp.sum(grad_y, axis=0)
    grad_gamma = xp.sum(grad_y * xhat, axis=0)
    grad_x = (gamma * inv_std / n) * (n * grad_y - grad_beta - xhat * grad_gamma)
    return grad_x, grad_gamma, grad_beta


@fused_op
def update_running_stats(backend, running_mean, running_var, mean, var, momentum: float, n: int):
    """PyTorch's running statistics, in place: r = (1 - m) r + m batch, with the unbiased
    variance var * n / (n - 1)."""
    running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    unbiased = var * (n / (n - 1))
    running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased


@fused_op
def batchnorm_forward_eval(backend, x, gamma, beta, running_mean, running_var, eps: float):
    """y = gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
    inv_std = 1.0 / backend.xp.sqrt(running_var + eps)
    return gamma * ((x - running_mean) * inv_std) + beta


@fused_op
def batchnorm_backward_eval(backend, grad_y, x, gamma, running_mean, running_var, eps: float):
    """Gradients of the eval-mode batch norm, whose statistics are constants:

    xhat = (x - running_mean) inv_std, inv_std = 1 / sqrt(running_var + eps)
    dL/dx = dL/dy gamma inv_std,  dL/dgamma = sum_i dL/dy_i xhat_i,  dL/dbeta = sum_i dL/dy_i
    Returns `(grad_x, grad_gamma, grad_beta)`.
    """
    xp = backend.xp
    inv_std = 1.0 / xp.sqrt(running_var + eps)
    xhat = (x - running_mean) * inv_std
    return grad_y * (gamma * inv_std), xp.sum(grad_y * xhat, axis=0), xp.sum(grad_y, axis=0)


# ---------------------------------------------------------------------- CuPy (eval backward: the reference on CuPy)


@batchnorm_forward_train.cupy
def _(backend, x, gamma, beta, eps: float):
    rows, cols = x.shape
    y, xhat = backend.empty(x.shape), backend.empty(x.shape)
    mean, var, inv_std = backend.empty((cols,)), backend.empty((cols,)), backend.empty((cols,))
    backend._launch("batchnorm_fwd_train", tiles(cols), BLOCK,
                    x, gamma, beta, y, xhat, mean, var, inv_std, rows, cols, eps)
    return y, xhat, mean, var, inv_std


@batchnorm_backward.cupy
def _(backend, grad_y, xhat, gamma, inv_std):
    rows, cols = grad_y.shape
    grad_x, grad_gamma, grad_beta = backend.empty(grad_y.shape), backend.empty((cols,)), backend.empty((cols,))
    backend._launch("batchnorm_bwd", tiles(cols), BLOCK,
                    grad_y, xhat, gamma, inv_std, grad_x, grad_gamma, grad_beta, rows, cols)
    return grad_x, grad_gamma, grad_beta


@update_running_stats.cupy
def _(backend, running_mean, running_var, mean, var, momentum: float, n: int):
    cols = running_mean.size
    backend._launch("running_stats", blocks(cols, MAX_GRID), BLOCK, running_mean, running_var, mean, var,
                    cols, momentum, 1.0 - momentum, n / (n - 1))


@batchnorm_forward_eval.cupy
def _(backend, x, gamma, beta, running_mean, running_var, eps: float):
    rows, cols = x.shape
    y = backend.empty(x.shape)
    backend._launch("batchnorm_fwd_eval", blocks(x.size, MAX_GRID), BLOCK, x, gamma, beta, running_mean,
                    running_var, y, rows, cols, eps)
    return y


# ---------------------------------------------------------------------- case: every pass, two rows at least


@batchnorm_forward_train.case(min_rows=2)
def _(backend, a):
    x, gamma, beta, dy = a["x"], a["gamma"], a["beta"], a["dy"]
    y, xhat, mean, var, inv_std = batchnorm_forward_train(backend, x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = batchnorm_backward(backend, dy, xhat, gamma, inv_std)
    rm, rv = backend.copy(beta), backend.copy(gamma)
    update_running_stats(backend, rm, rv, mean, var, 0.1, x.shape[0])
    ye = batchnorm_forward_eval(backend, x, gamma, beta, rm, rv, 1e-5)
    dxe, dge, dbe = batchnorm_backward_eval(backend, dy, x, gamma, rm, rv, 1e-5)
    return [y, xhat, mean, var, inv_std, dx, dgamma, dbeta, rm, rv, ye, dxe, dge, dbe]
