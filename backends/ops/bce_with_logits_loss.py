"""Binary cross-entropy on logits, the sigmoid fused in (torch.nn.BCEWithLogitsLoss).
Kernel: `bce_logits_loss` in kernels/losses.cu."""

from __future__ import annotations

import math

from backprop.backends.activations import sigmoid
from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale


@fused_op
def bce_with_logits_loss(backend, logits, target, reduction: str = "mean"):
    """Sigmoid fused into binary cross-entropy over all N elements, stable for any logit x;
    returns (0-d loss, dL/dx):

    L = mean(max(x, 0) - x t + log(1 + e^-|x|))
    dL/dx = (sigmoid(x) - t) / N
    """
    xp = backend.xp
    x = logits
    per = xp.clip(x, min=0.0) - x * target + xp.log1p(xp.exp(-xp.abs(x)))
    n = math.prod(x.shape)
    loss = reduce_total(xp.sum(per), n, reduction)
    return loss, reduction_scale(n, reduction) * (sigmoid(xp, x) - target)


@bce_with_logits_loss.cupy
def _(backend, logits, target, reduction: str = "mean"):
    return backend._elementwise_loss("bce_logits_loss", logits, target, reduction, 1.0, 1.0)


@bce_with_logits_loss.case()
def _(backend, a):
    return [*bce_with_logits_loss(backend, a["x"], a["t01"], "mean"),
            *bce_with_logits_loss(backend, a["x"], a["t01"], "sum")]
