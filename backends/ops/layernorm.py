"""Layer normalization's forward and backward passes. Kernels: kernels/layernorm.cu."""

from __future__ import annotations

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, row_block, row_blocks, tiles
from backprop.backends.ops import fused_op


@fused_op
def layernorm_forward(backend, x, gamma, beta, eps: float):
    """Normalize each row of x (rows, n) over its n values:

    mu = mean_j x_j, var = mean_j (x_j - mu)^2 (biased), inv_std = 1 / sqrt(var + eps)
    xhat = (x - mu) inv_std,  y = gamma xhat + beta
    Returns `(y, xhat, inv_std)` with inv_std of shape (rows, 1); backward needs xhat and inv_std.
    """
    xp = backend.xp
    n = x.shape[1]
    mean = xp.sum(x, axis=1, keepdims=True) / n
    centered = x - mean
    var = xp.sum(centered * centered, axis=1, keepdims=True) / n
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = centered * inv_std
    return gamma * xhat + beta, xhat, inv_std


@fused_op
def layernorm_backward(backend, grad_y, xhat, gamma, inv_std):
    """Gradients of the layer norm, per row of n values, with g = dL/dy gamma:

    dL/dx = inv_std / n (n g - sum_j g_j - xhat sum_j g_j xhat_j)
    dL/dgamma = sum over rows of dL/dy xhat,  dL/dbeta = sum over rows of dL/dy
    Returns `(grad_x, grad_gamma, grad_beta)`.
    """
    xp = backend.xp
    n = grad_y.shape[1]
    g = grad_y * gamma
    sum_g = xp.sum(g, axis=1, keepdims=True)
    sum_g_xhat = xp.sum(g * xhat, axis=1, keepdims=True)
    grad_x = (inv_std / n) * (n * g - sum_g - xhat * sum_g_xhat)
    return grad_x, xp.sum(grad_y * xhat, axis=0), xp.sum(grad_y, axis=0)


# ---------------------------------------------------------------------- CuPy: a block per row


@layernorm_forward.cupy
def _(backend, x, gamma, beta, eps: float):
    rows, cols = x.shape
    y, xhat, inv_std = backend.empty(x.shape), backend.empty(x.shape), backend.empty((rows, 1))
    backend._launch("layernorm_fwd", row_blocks(rows, MAX_GRID), row_block(cols), x, gamma, beta, y, xhat, inv_std,
                    rows, cols, eps)
    return y, xhat, inv_std


@layernorm_backward.cupy
def _(backend, grad_y, xhat, gamma, inv_std):
    rows, cols = grad_y.shape
    grad_x, grad_gamma, grad_beta = backend.empty(grad_y.shape), backend.empty((cols,)), backend.empty((cols,))
    backend._launch("layernorm_bwd", row_blocks(rows, MAX_GRID), row_block(cols), grad_y, xhat, gamma, inv_std,
                    grad_x, rows, cols)
    backend._launch("layernorm_param_grads", tiles(cols), BLOCK, grad_y, xhat, grad_gamma, grad_beta, rows, cols)
    return grad_x, grad_gamma, grad_beta


@layernorm_forward.case()
def _(backend, a):
    y, xhat, inv_std = layernorm_forward(backend, a["x"], a["gamma"], a["beta"], 1e-5)
    dx, dgamma, dbeta = layernorm_backward(backend, a["dy"], xhat, a["gamma"], inv_std)
    return [y, xhat, inv_std, dx, dgamma, dbeta]
