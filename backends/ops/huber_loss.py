"""Huber loss fused with its gradient (torch.nn.HuberLoss). Kernel: `huber_loss` in kernels/losses.cu."""

from __future__ import annotations

import math

from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale


@fused_op
def huber_loss(backend, pred, target, delta: float, reduction: str = "mean"):
    """Huber loss, with d = p - t over all N elements; returns (0-d loss, dL/dp):

    l = d^2 / 2 where |d| < delta, else delta (|d| - delta / 2)
    dL/dp = (d where |d| < delta, else delta sign(d)) / N
    """
    xp = backend.xp
    diff = pred - target
    size = xp.abs(diff)
    inside = size < delta
    per = xp.where(inside, 0.5 * diff * diff, delta * (size - 0.5 * delta))
    n = math.prod(pred.shape)
    loss = reduce_total(xp.sum(per), n, reduction)
    grad = xp.where(inside, diff, delta * xp.sign(diff))
    return loss, reduction_scale(n, reduction) * grad


@huber_loss.cupy
def _(backend, pred, target, delta: float, reduction: str = "mean"):
    return backend._elementwise_loss("huber_loss", pred, target, reduction, 1.0, 1.0, (delta,))


@huber_loss.case()
def _(backend, a):
    # delta 1.5: |x - dy| falls on both sides of it
    return [*huber_loss(backend, a["x"], a["dy"], 1.5, "mean"), *huber_loss(backend, a["x"], a["dy"], 1.5, "sum")]
