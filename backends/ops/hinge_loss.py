"""Hinge loss fused with its gradient. Kernel: `hinge_loss` in kernels/losses.cu."""

from __future__ import annotations

import math

from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale


@fused_op
def hinge_loss(backend, pred, target, reduction: str = "mean"):
    """Hinge loss with targets in {-1, +1} over all N elements; returns (0-d loss, dL/dp):

    L = mean max(0, 1 - t p);  dL/dp = -t [1 - t p > 0] / N
    """
    xp = backend.xp
    margin = 1.0 - target * pred
    n = math.prod(pred.shape)
    loss = reduce_total(xp.sum(xp.clip(margin, min=0.0)), n, reduction)
    grad = xp.where(margin > 0, -target, xp.zeros_like(target))
    return loss, reduction_scale(n, reduction) * grad


@hinge_loss.cupy
def _(backend, pred, target, reduction: str = "mean"):
    return backend._elementwise_loss("hinge_loss", pred, target, reduction, 1.0, 1.0)


@hinge_loss.case()
def _(backend, a):
    return [*hinge_loss(backend, a["x"], a["tpm"], "mean"), *hinge_loss(backend, a["x"], a["tpm"], "sum")]
