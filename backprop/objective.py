"""What one training step minimises on this rank's shard of a batch, and its share of the epoch's loss.

Without sample weights the loss is the user's loss as it is, plus the layers' penalty P:

    L = loss(pred, y) + P

With sample weights w (fit's `sample_weight`), the loss's per-row values l_i (its `row_losses`)
are averaged with the weights over the whole batch, S = sum_i w_i being the batch's total
weight over every rank's rows:

    L = sum_i w_i l_i / S + P                      penalty_scale="batch" (the default)
    L = (sum_i w_i l_i + P) / S                    penalty_scale="weight" (scikit-learn's MLP)

On N ranks each rank's loss is its estimate of the batch's loss (backprop/parallel.py): a loss
that sums over rows ("sum" reduction, or the weighted sum above) is scaled by b / b_r, the
batch's rows over the shard's.
"""

from __future__ import annotations

import numpy as np

PENALTY_SCALES = ("batch", "weight")


class Objective:
    """The step's loss and gradient (`__call__`), then, after backward, the penalty (`finish`)."""

    def __init__(self, net, loss, parallel, weighted: bool, penalty_scale: str, samples: int):
        self.net, self.loss, self.parallel = net, loss, parallel
        self.backend = net.backend
        self.weighted = weighted
        self.per_weight = weighted and penalty_scale == "weight"
        self.summed = weighted or loss.reduction == "sum"  # scaled by b / b_r on a shard
        with np.errstate(all="ignore"):  # only whether there is one: an overflow is fit's to report
            self.penalized = net.penalty_internal() is not None
        self.samples = samples
        self.plain = not (self.summed or self.penalized)  # the loss as it is: the common case, kept short

    def __call__(self, pred, batch):
        """(the data term of L on this shard, dL/dpred)."""
        if self.plain:
            return self.loss.value_and_grad(self.backend, pred, batch.y)
        if self.weighted:
            value, grad = self._weighted(pred, batch)
        else:
            value, grad = self.loss.value_and_grad(self.backend, pred, batch.y)
        if self.summed:
            value = self.parallel.scale_loss(value, grad, batch.rows, batch.batch_rows)
        return value, grad

    def _weighted(self, pred, batch):
        """sum_i w_i l_i / S and its gradient w_i dl_i/dpred / S; without the 1 / S when the
        penalty joins the sum (`finish` divides then)."""
        xp = self.backend.xp
        losses, grad = self.loss.row_losses(self.backend, pred, batch.y)
        w = batch.w
        if not self.per_weight:
            w = w * (1.0 / batch.weight_sum if batch.weight_sum else 0.0)
        return xp.sum(w * losses), grad * w

    def finish(self, value, batch):
        """(L on this shard, its share of n times the epoch's loss), after backward has added
        the penalty's gradient; with penalty_scale="weight", the whole gradient is divided by S.

        The epoch's loss follows the reduction over the whole epoch, as evaluate() reports it:
        a mean weighs each batch's loss by its rows; "sum" adds each batch's total (on N ranks,
        this rank's part of it: `value` is its own total scaled by b / b_r). The penalty enters
        as a batch-size-weighted mean, so it counts once whatever the number of batches."""
        rows = batch.rows
        if self.plain:
            return value, value * rows
        penalty = self.net.penalty_internal() if self.penalized else None
        if self.per_weight:
            scale = 1.0 / batch.weight_sum if batch.weight_sum else 0.0
            grad = self.net.store.grad
            grad *= scale
            total = (value if penalty is None else value + penalty) * scale
            return total, total * rows
        total = value if penalty is None else value + penalty
        if self.summed and not self.weighted:
            share = value * (self.samples * rows / batch.batch_rows)
            return total, share if penalty is None else share + penalty * rows
        return total, total * rows
