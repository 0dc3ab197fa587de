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
    """The NumPy path's scratch, one array per intermediate (see the note below), and its
    constants: [log p, log(1 - p)] side by side, and clamped side by side (one call each)."""
    logs, clamped = np.empty((2, 2) + shape, backend.dtype)
    scratch = np.empty((6,) + shape, backend.dtype)
    return (logs, logs[0], logs[1], clamped, clamped[0], clamped[1], *scratch,
            backend._const(BCE_LOG_FLOOR, (2,) + shape), backend._const(1.0, shape),
            backend._const(BCE_GRAD_EPS, shape))


# No call writes into one of its own inputs: on a one-element array (a batch of one with one
# output) NumPy's in-place ufuncs take a slower path than writing into another array.
@bce_loss.numpy
def _(backend, prob, target, reduction: str = "mean"):
    n = prob.size
    (logs, log_p, log_q, clamped, clamped_p, clamped_q, minus_p, t_log_p, q, q_log_q, terms, pq,
     floor, one, grad_eps) = backend._work("bce", prob.shape, lambda s: _bce_arrays(backend, s))
    np.log(prob, out=log_p)
    np.negative(prob, out=minus_p)
    np.log1p(minus_p, out=log_q)
    np.maximum(logs, floor, out=clamped)  # clip(min=) with NaN kept, as clip does
    np.multiply(target, clamped_p, out=t_log_p)
    np.subtract(one, target, out=q)
    np.multiply(q, clamped_q, out=q_log_q)
    np.add(t_log_p, q_log_q, out=terms)
    loss = reduce_total(-backend.sum_all(terms), n, reduction)
    # dL/dp = scale (p - t) / max(p (1 - p), 1e-12), in the reference's order
    np.subtract(one, prob, out=q)
    np.multiply(prob, q, out=pq)
    np.maximum(pq, grad_eps, out=q)
    diff = np.subtract(prob, target, out=minus_p)
    backend._scale_in_place(diff, reduction_scale(n, reduction))
    return loss, np.divide(diff, q)  # a new array: the caller keeps the gradient


@bce_loss.cupy
def _(backend, prob, target, reduction: str = "mean"):
    return backend._elementwise_loss("bce_loss", prob, target, reduction, 1.0, -1.0)


@bce_loss.case()
def _(backend, a):
    return [*bce_loss(backend, a["prob"], a["t01"], "mean"), *bce_loss(backend, a["prob"], a["t01"], "sum")]
