"""scikit-learn's MLP objectives, written through backprop's loss protocol.

scikit-learn's MLPs minimize, for each batch of rows i with sample weights w_i,

    J = (sum_i w_i l_i + (alpha / 2) sum over layers of ||W||^2) / s,    s = sum_i w_i

(s is the batch's row count when no weights are given). `l_i` is the row's loss: the softmax
cross-entropy (several classes), the sum of the sigmoid cross-entropies of its outputs (two
classes, or several labels) or half the squared error (regression), each on the network's
last linear output z, where all three have the gradient dl_i/dz = p_i - t_i (p = softmax(z),
sigmoid(z) or z).

The losses here define each row's loss (`row_losses`); `bp.fit` weighs them with its
`sample_weight`, and its `penalty_scale="weight"` divides the Dense layers' penalty
(l2 = alpha / 2 on each, set by the estimator) by s with them: J exactly.
"""

from __future__ import annotations

from backprop.losses import Loss


class RowLoss(Loss):
    """Base of the losses below. A subclass defines `row_losses(backend, z, t) -> (l, dl/dz)`,
    l of shape (rows, 1); unweighted, the loss is the mean of l over the rows."""

    def __init__(self):
        super().__init__("mean")

    def row_losses(self, backend, z, t):
        raise NotImplementedError

    def value_and_grad(self, backend, pred, target):
        losses, grad = self.row_losses(backend, pred, target)
        rows = pred.shape[0]
        return backend.xp.sum(losses) / rows, grad / rows


class SoftmaxCrossEntropy(RowLoss):
    """l = -sum_j t_j log softmax(z)_j = log sum_j e^z_j - sum_j t_j z_j (rows of t sum to 1);
    dl/dz = softmax(z) - t. Computed with the row's largest logit subtracted first."""

    def row_losses(self, backend, z, t):
        xp = backend.xp
        shifted = z - xp.max(z, axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = xp.sum(exp, axis=1, keepdims=True)
        losses = xp.sum(t * (xp.log(total) - shifted), axis=1, keepdims=True)
        return losses, exp / total - t


class SigmoidCrossEntropy(RowLoss):
    """l = sum_j [max(z_j, 0) - z_j t_j + log(1 + e^-|z_j|)] (the binary cross-entropy of
    sigmoid(z_j), summed over the outputs); dl/dz = sigmoid(z) - t."""

    def row_losses(self, backend, z, t):
        xp = backend.xp
        per_output = xp.maximum(z, 0.0) - z * t + xp.log1p(xp.exp(-xp.abs(z)))
        return xp.sum(per_output, axis=1, keepdims=True), backend.activation_forward(z, "sigmoid") - t


class HalfSquaredError(RowLoss):
    """l = sum_j (z_j - t_j)^2 / (2 k) over the k outputs, as scikit-learn reports its `loss_`;
    the gradient is scikit-learn's, z - t: that of half the squared error summed over the
    outputs, so with k > 1 outputs it is k times dl/dz (the same for one output)."""

    def row_losses(self, backend, z, t):
        xp = backend.xp
        diff = z - t
        return xp.sum(diff * diff, axis=1, keepdims=True) / (2.0 * diff.shape[1]), diff
