"""Binary cross-entropy on probabilities, PyTorch's clamps (torch.nn.BCELoss).
Kernel: `bce_loss` in kernels/losses.cu."""

from __future__ import annotations

import math

import numpy as np

from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale

# PyTorch clamps the logs of binary cross-entropy at -100 and bounds the gradient's denominator.
BCE_LOG_FLOOR = -100.0
BCE_GRAD_EPS = 1e-12


@fused_op
def bce_loss(backend, prob, target, reduction: str = "mean"):
    """Binary cross-entropy of probabilities p over all N elements; returns (0-d loss, dL/dp):

    L = -mean(t max(log p, -100) + (1 - t) max(log(1 - p), -100))
    dL/dp = (p - t) / max(p (1 - p), 1e-12) / N
    """
    xp = backend.xp
    log_p = xp.clip(xp.log(prob), min=BCE_LOG_FLOOR)
    log_q = xp.clip(xp.log1p(-prob), min=BCE_LOG_FLOOR)
    n = math.prod(prob.shape)
    loss = reduce_total(-xp.sum(target * log_p + (1.0 - target) * log_q), n, reduction)
    denom = xp.clip(prob * (1.0 - prob), min=BCE_GRAD_EPS)
    return loss, reduction_scale(n, reduction) * (prob - target) / denom


def _bce_arrays(backend, shape):
    """The NumPy path's scratch: [log p, log(1 - p)] in one array (clamped in one call), 1 - p,
    and its constants."""
    logs = np.empty((2,) + shape, backend.dtype)
    return (logs, logs[0], logs[1], np.empty(shape, backend.dtype), backend._const(BCE_LOG_FLOOR, (2,) + shape),
            backend._const(1.0, shape), backend._const(BCE_GRAD_EPS, shape))


@bce_loss.numpy
def _(backend, prob, target, reduction: str = "mean"):
    n = prob.size
    logs, log_p, log_q, q, floor, one, grad_eps = backend._work("bce", prob.shape, lambda s: _bce_arrays(backend, s))
    np.log(prob, out=log_p)
    np.negative(prob, out=log_q)
    np.log1p(log_q, out=log_q)
    np.maximum(logs, floor, out=logs)  # clip(min=) with NaN kept, as clip does
    np.multiply(target, log_p, out=log_p)
    np.subtract(one, target, out=q)
    np.multiply(q, log_q, out=log_q)
    np.add(log_p, log_q, out=log_p)
    loss = reduce_total(-np.add.reduce(log_p, None), n, reduction)
    # dL/dp = scale (p - t) / max(p (1 - p), 1e-12), in the reference's order
    np.subtract(one, prob, out=q)
    np.multiply(prob, q, out=q)
    np.maximum(q, grad_eps, out=q)
    grad = np.subtract(prob, target)
    backend._scale_in_place(grad, reduction_scale(n, reduction))
    np.divide(grad, q, out=grad)
    return loss, grad


@bce_loss.cupy
def _(backend, prob, target, reduction: str = "mean"):
    return backend._elementwise_loss("bce_loss", prob, target, reduction, 1.0, -1.0)


@bce_loss.case()
def _(backend, a):
    return [*bce_loss(backend, a["prob"], a["t01"], "mean"), *bce_loss(backend, a["prob"], a["t01"], "sum")]
