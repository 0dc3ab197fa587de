"""Mean squared error fused with its gradient (torch.nn.MSELoss). Kernel: `mse_loss` in kernels/losses.cu."""

from __future__ import annotations

import math

from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale


@fused_op
def mse_loss(backend, pred, target, reduction: str = "mean"):
    """Squared error over all N elements; returns (0-d loss, dL/dp):

    L = mean (p - t)^2;  dL/dp = 2 (p - t) / N
    """
    diff = pred - target
    n = math.prod(pred.shape)
    loss = reduce_total(backend.xp.sum(diff * diff), n, reduction)
    return loss, (2.0 * reduction_scale(n, reduction)) * diff


@mse_loss.cupy
def _(backend, pred, target, reduction: str = "mean"):
    return backend._elementwise_loss("mse_loss", pred, target, reduction, 2.0, 1.0)


@mse_loss.case()
def _(backend, a):
    return [*mse_loss(backend, a["x"], a["dy"], "mean"), *mse_loss(backend, a["x"], a["dy"], "sum")]
