"""Softmax fused into cross-entropy (torch.nn.CrossEntropyLoss on logits), its target as
probability rows (`cross_entropy_loss`) or as integer class labels (`cross_entropy_labels_loss`).
Kernels: `cross_entropy_loss` and `cross_entropy_labels_loss` in kernels/losses.cu."""

from __future__ import annotations

import numpy as np

from backprop.backends.ops import fused_op
from backprop.backends.ops.reduction import reduce_total, reduction_scale


@fused_op
def cross_entropy_loss(backend, logits, target, reduction: str = "mean"):
    """Softmax fused into cross-entropy over rows; `target` holds one probability row per
    example (one-hot for hard labels). Log-sum-exp keeps every logit finite:

    log softmax(x)_j = x_j - m - log sum_k e^(x_k - m),  m = max_k x_k
    L = mean over rows of -sum_j t_j log softmax(x)_j
    dL/dx_j = (softmax(x)_j sum_k t_k - t_j) / rows

    x_j - m is clamped at the dtype's lowest finite number: logits spanning more than its
    range (+-3e38 in float32) make the difference -inf, and a zero target times -inf is
    NaN; clamped, a class of target 0 adds 0 and the right class's loss stays finite.
    """
    xp = backend.xp
    lowest = float(xp.finfo(backend.dtype).min)
    shifted = xp.clip(logits - xp.max(logits, axis=1, keepdims=True), min=lowest)
    e = xp.exp(shifted)
    s = xp.sum(e, axis=1, keepdims=True)
    log_softmax = shifted - xp.log(s)
    rows = logits.shape[0]
    loss = reduce_total(-xp.sum(target * log_softmax), rows, reduction)
    t_sum = xp.sum(target, axis=1, keepdims=True)
    grad = reduction_scale(rows, reduction) * ((e / s) * t_sum - target)
    return loss, grad


@fused_op
def cross_entropy_labels_loss(backend, logits, labels, reduction: str = "mean"):
    """`cross_entropy_loss` with integer class labels (int64, shape (rows,)) instead of
    probability rows: the same loss and gradient as with the one-hot rows of the labels,
    without making them:

    L = mean over rows of -log softmax(x)_label,  dL/dx_j = (softmax(x)_j - [j = label]) / rows
    """
    xp = backend.xp
    classes = xp.arange(logits.shape[1], dtype=labels.dtype)
    onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(classes, (1, -1)), backend.dtype)
    return cross_entropy_loss(backend, logits, onehot, reduction)


# ---------------------------------------------------------------------- NumPy


def _cross_entropy_arrays(backend, shape):
    rows, classes = shape
    row_max = np.empty((rows, 1), backend.dtype)
    lowest = backend._const(float(np.finfo(backend.dtype).min), shape)
    return (np.empty(shape, backend.dtype), row_max, row_max.reshape(rows), np.empty((rows, 1), backend.dtype),
            backend._const(1.0, (classes, 1)), lowest)


def _shifted_logits(backend, logits):
    """(x - m, e = exp(x - m), sum_k e_k, log sum_k e_k as a column and flat, a (classes, 1)
    column of ones) of each row, as the reference computes them: x - m clamped at the lowest finite number, e summed by a
    GEMV (faster than add.reduce(axis=1)); log softmax(x) = (x - m) - log sum_k e_k. All but e
    are scratch arrays."""
    shifted, row_max, row_max_flat, row_sum, ones, lowest = backend._work(
        "cross_entropy", logits.shape, lambda shape: _cross_entropy_arrays(backend, shape))
    # into a 1-D view, arguments positional: keepdims=/out= keywords cost more than the max
    np.maximum.reduce(logits, 1, None, row_max_flat)
    np.subtract(logits, row_max, out=shifted)
    np.maximum(shifted, lowest, out=shifted)
    e = np.exp(shifted)  # becomes the caller's gradient in place
    np.dot(e, ones, out=row_sum)
    np.log(row_sum, out=row_max)
    return shifted, e, row_sum, row_max, row_max_flat, ones


@cross_entropy_loss.numpy
def _(backend, logits, target, reduction: str = "mean"):
    rows = logits.shape[0]
    shifted, grad, row_sum, log_sum, _, ones = _shifted_logits(backend, logits)
    log_softmax = np.subtract(shifted, log_sum, out=shifted)
    np.multiply(target, log_softmax, out=log_softmax)
    loss = reduce_total(-backend.sum_all(log_softmax), rows, reduction)
    np.divide(grad, row_sum, out=grad)  # softmax
    np.dot(target, ones, out=row_sum)  # sum_k t_k
    np.multiply(grad, row_sum, out=grad)
    np.subtract(grad, target, out=grad)
    backend._scale_in_place(grad, reduction_scale(rows, reduction))
    return loss, grad


def _label_arrays(backend, shape):
    rows, classes = shape
    return np.arange(0, rows * classes, classes), np.empty(rows, np.int64), backend._const(1.0, (rows,))


@cross_entropy_labels_loss.numpy
def _(backend, logits, labels, reduction: str = "mean"):
    # The one-hot path's numbers without the one-hot rows: the loss picks each row's
    # log softmax at its label; the gradient is softmax with 1 taken off at the label (the
    # reference's softmax * 1 - 1 there, the same single rounding). Plain indexing of the
    # flat arrays: cheaper than np.take/np.put's wrappers here.
    rows = logits.shape[0]
    shifted, grad, row_sum, _, log_sum, _ = _shifted_logits(backend, logits)
    row_starts, flat_index, one = backend._work("cross_entropy_labels", logits.shape,
                                                lambda shape: _label_arrays(backend, shape))
    np.add(row_starts, labels, out=flat_index)
    # log softmax at the labels only: (x - m) - log sum e, the same subtraction per element
    picked = shifted.reshape(-1)[flat_index]
    np.subtract(picked, log_sum, out=picked)
    loss = reduce_total(-backend.sum_all(picked), rows, reduction)
    np.divide(grad, row_sum, out=grad)  # softmax
    flat_grad = grad.reshape(-1)
    at_labels = flat_grad[flat_index]
    np.subtract(at_labels, one, out=at_labels)
    flat_grad[flat_index] = at_labels
    backend._scale_in_place(grad, reduction_scale(rows, reduction))
    return loss, grad


# ---------------------------------------------------------------------- CuPy


@cross_entropy_loss.cupy
def _(backend, logits, target, reduction: str = "mean"):
    return backend._row_loss("cross_entropy_loss", logits, target, reduction)


@cross_entropy_labels_loss.cupy
def _(backend, logits, labels, reduction: str = "mean"):
    return backend._row_loss("cross_entropy_labels_loss", logits, labels, reduction)


# ---------------------------------------------------------------------- cases


@cross_entropy_loss.case()
def _(backend, a):
    return [*cross_entropy_loss(backend, a["x"], a["onehot"], "mean"),
            *cross_entropy_loss(backend, a["x"], a["onehot"], "sum")]


@cross_entropy_labels_loss.case()
def _(backend, a):
    return [*cross_entropy_labels_loss(backend, a["x"], a["labels"], "mean"),
            *cross_entropy_labels_loss(backend, a["x"], a["labels"], "sum")]
