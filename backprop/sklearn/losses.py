"""scikit-learn's MLP objectives, written through backprop's loss protocol.

scikit-learn's MLPs minimize, for each batch of rows i with sample weights w_i,

    J = (sum_i w_i l_i + (alpha / 2) sum over layers of ||W||^2) / s,    s = sum_i w_i

(s is the batch's row count when no weights are given). `l_i` is the row's loss: the softmax
cross-entropy (several classes), the sum of the sigmoid cross-entropies of its outputs (two
classes, or several labels) or half the squared error (regression), each on the network's
last linear output z, where all three have the gradient dl_i/dz = p_i - t_i (p = softmax(z),
sigmoid(z) or z).

The losses here take the weights as the target's last column ([t | w], see `packed_target`),
so `bp.fit` shuffles and slices them with the rows. The penalty is the Dense layers' own
`l2 sum W^2` term (and its gradient `2 l2 W`): only the loss sees the batch's weights, so for
each batch it sets `l2 = alpha / (2 s)` on the layers it was given, before the network adds
the term.
"""

from __future__ import annotations

import numpy as np

from backprop.losses import Loss


def packed_target(target: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """[target | sample_weight]: a (rows, outputs) target with each row's weight appended."""
    return np.concatenate([target, sample_weight.reshape(-1, 1)], axis=1)


class SampleWeightedLoss(Loss):
    """Base of the losses below: J's data term, sum_i w_i l_i / s, and the penalty's scale.

    A subclass defines `row_losses(backend, z, t) -> (l, dl/dz)`, l of shape (rows, 1).
    `penalized` are the Dense layers whose weights `alpha` penalizes.
    """

    def __init__(self, alpha: float = 0.0, penalized=()):
        super().__init__("mean")
        self.alpha = alpha
        self.penalized = list(penalized)

    def row_losses(self, backend, z, t):
        raise NotImplementedError

    def check_target(self, target, outputs, name="target"):
        if target.ndim != 2 or target.shape[1] != outputs + 1:
            raise ValueError(f"{name} must have shape ({target.shape[0]}, {outputs + 1}): {outputs} target "
                             f"column(s) and the sample weight, got {target.shape}")
        return target

    def value_and_grad(self, backend, pred, target):
        xp = backend.xp
        t, w = target[:, :-1], target[:, -1:]
        s = xp.sum(w)
        if self.alpha:
            l2 = 0.5 * self.alpha / backend.to_scalar(s)
            for layer in self.penalized:
                layer.l2 = l2
        losses, grad = self.row_losses(backend, pred, t)
        return xp.sum(w * losses) / s, grad * (w / s)


class SoftmaxCrossEntropy(SampleWeightedLoss):
    """l = -sum_j t_j log softmax(z)_j = log sum_j e^z_j - sum_j t_j z_j (rows of t sum to 1);
    dl/dz = softmax(z) - t. Computed with the row's largest logit subtracted first."""

    def row_losses(self, backend, z, t):
        xp = backend.xp
        shifted = z - xp.max(z, axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = xp.sum(exp, axis=1, keepdims=True)
        losses = xp.sum(t * (xp.log(total) - shifted), axis=1, keepdims=True)
        return losses, exp / total - t


class SigmoidCrossEntropy(SampleWeightedLoss):
    """l = sum_j [max(z_j, 0) - z_j t_j + log(1 + e^-|z_j|)] (the binary cross-entropy of
    sigmoid(z_j), summed over the outputs); dl/dz = sigmoid(z) - t."""

    def row_losses(self, backend, z, t):
        xp = backend.xp
        per_output = xp.maximum(z, 0.0) - z * t + xp.log1p(xp.exp(-xp.abs(z)))
        return xp.sum(per_output, axis=1, keepdims=True), backend.activation_forward(z, "sigmoid") - t


class HalfSquaredError(SampleWeightedLoss):
    """l = sum_j (z_j - t_j)^2 / (2 k) over the k outputs, as scikit-learn reports its `loss_`;
    the gradient is scikit-learn's, z - t: that of half the squared error summed over the
    outputs, so with k > 1 outputs it is k times dl/dz (the same for one output)."""

    def row_losses(self, backend, z, t):
        xp = backend.xp
        diff = z - t
        return xp.sum(diff * diff, axis=1, keepdims=True) / (2.0 * diff.shape[1]), diff
