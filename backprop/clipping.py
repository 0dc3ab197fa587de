"""Gradient clipping by global norm, as PyTorch's `torch.nn.utils.clip_grad_norm_`:

    norm = sqrt(sum over every parameter's gradient of g^2)        (the L2 norm of all of them)
    g   <- g * min(1, max_norm / (norm + 1e-6))

`clip_grad_norm(net, max_norm)` is the call for a loop of one's own; `fit(clip_norm=c)` clips
every step's gradient the same way, after the data-parallel allreduce (every rank then holds the
same gradient and computes the same norm), with the norm taken from the reduction that checks
the step for finiteness.
"""

from __future__ import annotations

import math

import numpy as np

from backprop.checks import check_real

CLIP_EPS = 1e-6  # PyTorch's: keeps the scale finite when the norm is zero


def squared_norm(backend, grad):
    """sum(g^2) of the flat gradient buffer as a 1x1 device array: one matrix product g g^T
    (a BLAS dot on the CPU, a cuBLAS GEMM on a GPU; no atomics)."""
    row = backend.reshape(grad, (1, grad.shape[0]))
    return backend.matmul(row, row, transpose_b=True)


def global_norm(backend, grad, squared: float) -> float:
    """The L2 norm from its square `squared` (a float from `squared_norm`); when that sum
    overflowed while every element is finite, taken again in float64 on the host."""
    if math.isinf(squared) and backend.all_finite(grad):
        return float(np.linalg.norm(backend.to_host(grad).astype(np.float64)))
    return math.sqrt(squared)


def scale_to_norm(grad, norm: float, max_norm: float) -> None:
    """g <- g * min(1, max_norm / (norm + 1e-6)), in place (one pass, skipped when the factor is 1;
    a NaN norm makes every gradient NaN, as in PyTorch)."""
    coef = max_norm / (norm + CLIP_EPS)
    if coef < 1.0 or math.isnan(coef):
        grad *= coef


def clip_grad_norm(net, max_norm: float) -> float:
    """Scale every gradient of `net` by min(1, max_norm / (norm + 1e-6)), `norm` being the L2
    norm over all of them (PyTorch's clip_grad_norm_); returns that norm, before clipping, as a
    float. Call it between `net.backward(...)` and `opt.step()`."""
    max_norm = check_real("max_norm", max_norm, low_open=True)
    backend = net.backend
    with net.usage.training("clip_grad_norm"), backend.on_device():
        grad = net.store.grad
        norm = global_norm(backend, grad, backend.to_scalar(squared_norm(backend, grad)[0, 0]))
        scale_to_norm(grad, norm, max_norm)
        return norm
