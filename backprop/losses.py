"""Losses: each computes its value and its gradient dL/dpred together, in one backend op.

`loss_fn(pred, target)` returns the loss as a Python float and keeps dL/dpred for
`loss_fn.backward()`. `CrossEntropyLoss` and `BCEWithLogitsLoss` take logits (the softmax or
sigmoid is fused into the loss, so the last layer has no activation); `BCELoss` takes
probabilities (a sigmoid output layer) and clamps its logs as PyTorch does.
"""

from __future__ import annotations

import numpy as np

from backprop.backends import get_backend
from backprop.boundary import check_finite, host_numeric, is_cupy_array

REDUCTIONS = ("mean", "sum")


def backend_for(array):
    """The backend that owns a prediction array: its device and its float dtype."""
    dtype = "float64" if str(getattr(array, "dtype", "")) == "float64" else "float32"
    if is_cupy_array(array):
        return get_backend(f"cuda:{array.device.id}", dtype)
    return get_backend("cpu", dtype)


class Loss:
    """Base of the losses. Subclasses set `op` (the backend method) and may convert targets."""

    op = ""
    # How fit measures accuracy: "argmax" (classes), "threshold" (binary outputs), or None.
    # "threshold": a prediction is right when (pred > score_threshold) == (target > target_threshold).
    accuracy = None
    score_threshold = 0.5
    target_threshold = 0.5

    def __init__(self, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._grad = None

    def __call__(self, pred, target) -> float:
        """The loss of `pred` against `target`, as a float; keeps dL/dpred for backward()."""
        if not is_cupy_array(pred):
            pred = host_numeric(pred, "pred")
            check_finite(pred, "pred")
            if pred.dtype not in (np.float32, np.float64):
                pred = pred.astype(np.float32)
        if pred.ndim == 1:
            pred = pred.reshape(-1, 1)
        if pred.ndim != 2 or pred.shape[0] == 0:
            raise ValueError(f"pred must be a non-empty 2-D array (rows, outputs), got shape {tuple(pred.shape)}")
        backend = backend_for(pred)
        self.check_pred(pred)
        target = self.prepare_target(backend, target, pred.shape)
        with np.errstate(divide="ignore"):  # BCELoss's log(0) = -inf is clamped by design: no warning
            loss, self._grad = self.compute(backend, backend.asarray(pred), target)
        return backend.to_scalar(loss)

    def compute(self, backend, pred, target):
        """(loss as a 0-d array, dL/dpred), both on the device: the path `fit` uses every step."""
        return getattr(backend, self.op)(pred, target, self.reduction)

    def backward(self):
        """dL/dpred of the latest call."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before the loss was computed")
        return self._grad

    def check_pred(self, pred) -> None:
        """Refuse predictions outside the loss's domain (only BCELoss has one)."""

    def check_target_values(self, host: np.ndarray, shape, name: str = "target") -> np.ndarray:
        """Checks and converts the target's values (host array of the prediction's shape);
        `name` is the argument the user passed them as, for the error messages."""
        return host

    def prepare_target(self, backend, target, shape):
        """`target` checked against the prediction's shape and moved to its device, once."""
        host = host_numeric(target, "target")
        check_finite(host, "target")
        if host.shape[0:1] != (shape[0],):
            raise ValueError(f"target has {host.shape[0] if host.ndim else 0} rows but pred has {shape[0]}")
        if host.ndim == 1 and shape[1] == 1:
            host = host.reshape(-1, 1)
        host = self.check_target_values(host, shape)
        if tuple(host.shape) != tuple(shape):
            raise ValueError(f"target must have the prediction's shape {tuple(shape)}, got {tuple(host.shape)}")
        return backend.asarray(host)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSELoss(Loss):
    """Mean squared error over all elements: L = mean (p - t)^2."""

    op = "mse_loss"


class MAELoss(Loss):
    """Mean absolute error over all elements: L = mean |p - t|."""

    op = "mae_loss"


def _check_binary(host: np.ndarray, name: str) -> None:
    if host.size and (host.min() < 0 or host.max() > 1):
        raise ValueError(f"{name} must hold values in [0, 1], got values from {host.min()} to {host.max()}")


class BCELoss(Loss):
    """Binary cross-entropy on probabilities (a sigmoid output), PyTorch's clamped logs:
    L = -mean(t log p + (1 - t) log(1 - p)), each log clamped at -100."""

    op = "bce_loss"
    accuracy = "threshold"

    def check_pred(self, pred) -> None:
        if not is_cupy_array(pred):
            _check_binary(pred, "pred (probabilities for BCELoss)")

    def check_target_values(self, host, shape, name="target"):
        _check_binary(host, name)
        return host


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits, the sigmoid fused in:
    L = mean(max(x, 0) - x t + log(1 + e^-|x|))."""

    op = "bce_with_logits_loss"
    accuracy = "threshold"
    score_threshold = 0.0  # logit 0 is probability 0.5

    def check_target_values(self, host, shape, name="target"):
        _check_binary(host, name)
        return host


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits: L = mean over rows of -sum_j t_j log softmax(x)_j.

    Targets are integer class labels of shape (rows,) or one probability row per example
    (one-hot) of the logits' shape.
    """

    op = "cross_entropy_loss"
    accuracy = "argmax"

    def check_target_values(self, host, shape, name="target"):
        return as_class_targets(host, shape[1], name)


def as_class_targets(host: np.ndarray, classes: int, name: str) -> np.ndarray:
    """One-hot rows from integer labels (checked in [0, classes)); probability rows pass through."""
    if host.ndim == 1 or (host.ndim == 2 and host.shape[1] == 1 and classes > 1):
        labels = host.reshape(-1)
        if labels.dtype.kind == "f":
            if not np.all(labels == np.round(labels)):
                raise ValueError(f"{name} holds class labels, which must be whole numbers; got {labels[labels != np.round(labels)][:3]}")
        if labels.dtype.kind == "b":
            raise TypeError(f"{name} holds class labels, which must be integers, got booleans")
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            bad = labels[(labels < 0) | (labels >= classes)][0]
            raise ValueError(f"{name} labels must be in [0, {classes - 1}] for {classes} classes, got {bad}")
        onehot = np.zeros((labels.shape[0], classes))
        onehot[np.arange(labels.shape[0]), labels] = 1.0
        return onehot
    if host.ndim == 2 and host.shape[1] == classes:
        if host.size and host.min() < 0:
            raise ValueError(f"{name} rows must be probabilities (>= 0), got {host.min()}")
        return host
    raise ValueError(f"{name} must be labels of shape (rows,) or rows of {classes} probabilities, "
                     f"got shape {host.shape}")


class HingeLoss(Loss):
    """Hinge loss: L = mean max(0, 1 - t p), targets -1/+1 (0/1 are mapped to -1/+1)."""

    op = "hinge_loss"
    accuracy = "threshold"
    score_threshold = target_threshold = 0.0  # targets are -1/+1

    def check_target_values(self, host, shape, name="target"):
        values = np.unique(host)
        if np.all(np.isin(values, (0, 1))):
            return 2.0 * host - 1.0
        if not np.all(np.isin(values, (-1, 1))):
            raise ValueError(f"{name} for HingeLoss must hold -1/+1 or 0/1, got values {values[:5]}")
        return host


LOSSES = {"mse": MSELoss, "mae": MAELoss, "bce": BCELoss, "bce_with_logits": BCEWithLogitsLoss,
          "cross_entropy": CrossEntropyLoss, "hinge": HingeLoss}


def check_loss_fits_network(loss, net) -> None:
    """Refuse pairings that silently compute the wrong thing."""
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a backprop loss (e.g. bp.CrossEntropyLoss()), got {type(loss).__name__}")
    last = next((layer for layer in reversed(net.layers) if hasattr(layer, "activation")), None)
    activation = getattr(last, "activation", "linear")
    if isinstance(loss, CrossEntropyLoss) and activation == "softmax":
        raise ValueError("CrossEntropyLoss takes logits and applies softmax itself, but the last layer "
                         "already has activation='softmax'; use activation=None on the last layer")
    if isinstance(loss, BCEWithLogitsLoss) and activation == "sigmoid":
        raise ValueError("BCEWithLogitsLoss takes logits and applies sigmoid itself, but the last layer "
                         "already has activation='sigmoid'; use activation=None, or BCELoss")
    if isinstance(loss, BCELoss) and activation not in ("sigmoid", "softmax"):
        raise ValueError(f"BCELoss takes probabilities, but the last layer's activation is {activation!r}; "
                         "use activation='sigmoid', or BCEWithLogitsLoss on logits")
