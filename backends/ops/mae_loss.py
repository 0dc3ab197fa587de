"""Mean absolute error fused with its gradient (torch.nn.L1Loss). Kernel: `mae_loss` in kernels/losses.cu."""

from __future__ import annotations

import math

from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale


@fused_op
def mae_loss(backend, pred, target, reduction: str = "mean"):
    """Absolute error over all N elements; returns (0-d loss, dL/dp):

    L = mean |p - t|;  dL/dp = sign(p - t) / N  (0 where p == t, as PyTorch)
    """
    xp = backend.xp
    diff = pred - target
    n = math.prod(pred.shape)
    loss = reduce_total(xp.sum(xp.abs(diff)), n, reduction)
    return loss, reduction_scale(n, reduction) * xp.sign(diff)


@mae_loss.cupy
def _(backend, pred, target, reduction: str = "mean"):
    return backend._elementwise_loss("mae_loss", pred, target, reduction, 1.0, 1.0)


@mae_loss.case()
def _(backend, a):
    return [*mae_loss(backend, a["x"], a["dy"], "mean"), *mae_loss(backend, a["x"], a["dy"], "sum")]
