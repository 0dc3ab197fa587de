"""Losses: the loss protocol, and the built-in losses written through it.

A loss computes its value and its gradient dL/dpred together, in one call:

    value_and_grad(backend, pred, target) -> (loss as a 0-d array, dL/dpred)
        `pred` is a (rows, outputs) array of the backend's device and dtype, `target` the same
        rows of the target in the form `check_target` gave it. Write it with the backend's ops or
        with `backend.xp` (the Array API namespace: array-api-compat's for NumPy on the CPU, for
        CuPy on a GPU), and finish with
        `self.reduced(per_element_loss, per_element_grad)` for "mean"/"sum".

and, where they apply,

    check_target(target, outputs, name) -> host array
        Checks and converts the whole target once, on the host, before anything trains (class
        labels stay labels: the per-batch work is the loss's own). The default checks that it
        has the prediction's shape.
    count_correct(backend, pred, target) -> (hits as a 0-d array, predictions scored) or None
        Accuracy, where it means something (classes, binary outputs).
    row_losses(backend, pred, target) -> (l, dl/dpred)
        Each row's loss l_i as a (rows, 1) column, such that the "mean" reduction is the mean of
        l over the rows (the mean over a row's outputs, for a loss of elements), and its
        gradient per row; what `fit(sample_weight=...)` weighs. Without it, a loss trains
        unweighted only.
    check_network(net)
        Refuse a network whose output the loss would misread.

`fit`, `evaluate`, `gradcheck` and the public call `loss_fn(pred, target)` use only these, so a
user's subclass works wherever a built-in does. The built-ins call one fused backend op each
(CrossEntropyLoss and BCEWithLogitsLoss take logits and fuse the softmax/sigmoid into the loss;
BCELoss takes probabilities and clamps its logs as PyTorch does).
"""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy
import numpy as np

from backprop.backends import get_backend
from backprop.backends.ops.bce_loss import BCE_GRAD_EPS, BCE_LOG_FLOOR
from backprop.backends.numpy_backend import SMALL
from backprop.boundary import check_finite, host_numeric, is_cupy_array
from backprop.checks import check_real

REDUCTIONS = ("mean", "sum")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NUMPY_API = array_api_compat.numpy


_BACKENDS: dict = {}


def backend_for(array):
    """The backend that owns a prediction array: its device and its float dtype (looked up once
    per device and dtype: the public loss call runs every step)."""
    device = f"cuda:{array.device.id}" if is_cupy_array(array) else "cpu"
    key = (device, array.dtype == np.float64)
    backend = _BACKENDS.get(key)
    if backend is None:
        backend = _BACKENDS[key] = get_backend(device, "float64" if key[1] else "float32")
    return backend


def target_on_device(backend, host: np.ndarray):
    """A checked target on the backend's device: class labels (one integer per row) as int64,
    anything else (rows of values, integer or not) in the backend's float dtype."""
    return backend.asarray_int(host) if host.ndim == 1 and host.dtype.kind in "iu" else backend.asarray(host)


class Loss:
    """Base of the losses; see the module docstring for the protocol."""

    def __init__(self, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._grad = None

    # ------------------------------------------------------------------ the protocol

    def value_and_grad(self, backend, pred, target):
        raise NotImplementedError(f"{type(self).__name__} must define value_and_grad(self, backend, pred, target) "
                                  "returning (loss as a 0-d array, dL/dpred)")

    def check_target(self, target: np.ndarray, outputs: int, name: str = "target") -> np.ndarray:
        """`target` (rows first, checked finite) in the form value_and_grad takes: here the
        prediction's shape (rows, outputs); a 1-D target of a one-output network is a column."""
        if target.ndim == 1 and outputs == 1:
            target = target.reshape(-1, 1)
        if target.shape[1:] != (outputs,):
            raise ValueError(f"{name} must have shape ({target.shape[0]}, {outputs}), a row of {outputs} per "
                             f"example, got {target.shape}")
        return target

    def count_correct(self, backend, pred, target):
        """(hits, predictions scored) of a batch, or None where accuracy means nothing."""
        return None

    def row_losses(self, backend, pred, target):
        """(each row's loss as a (rows, 1) column, its gradient per row): see the module docstring."""
        raise NotImplementedError(f"{type(self).__name__} has no row_losses(backend, pred, target), which "
                                  "sample weights need")

    def check_network(self, net) -> None:
        """Refuse a network whose output this loss would misread (see the subclasses)."""

    # ------------------------------------------------------------------ helpers for subclasses

    def reduced(self, per_element, grad):
        """(loss, dL/dpred) of a loss that is the mean ("mean") or the sum ("sum") of its
        per-element values: L = (1/N) sum_i l_i, dL/dp_i = l_i'(p_i) / N (N = every element)."""
        xp = _namespace(per_element)
        total = xp.sum(per_element)
        if self.reduction == "sum":
            return total, grad
        n = per_element.size
        return total / n, grad / n

    # ------------------------------------------------------------------ the public call

    def __call__(self, pred, target) -> float:
        """The loss of `pred` against `target`, as a float; keeps dL/dpred for backward()."""
        if not is_cupy_array(pred) and not (isinstance(pred, np.ndarray) and pred.dtype in _FLOATS):
            pred = host_numeric(pred, "pred").astype(np.float32)
        if pred.ndim == 1:
            pred = pred.reshape(-1, 1)
        if pred.ndim != 2 or pred.shape[0] == 0:
            raise ValueError(f"pred must be a non-empty 2-D array (rows, outputs), got shape {tuple(pred.shape)}")
        backend = backend_for(pred)
        with backend.on_device():
            if not pred.flags.c_contiguous:
                pred = backend.asarray(pred)
            self.check_pred(backend, pred)
            host = checked_target(self, target, pred.shape[0], pred.shape[1], "target", "pred", "rows")
            loss, self._grad = self.value_and_grad(backend, pred, target_on_device(backend, host))
            return backend.to_scalar(loss)

    def check_pred(self, backend, pred) -> None:
        """Refuse predictions the loss cannot take: non-finite ones (and, for BCELoss, values
        outside [0, 1])."""
        if not backend.all_finite(pred):
            check_finite(backend.to_host(pred), "pred")
            raise ValueError("pred must be finite, but it holds NaN or inf")

    def backward(self):
        """dL/dpred of the latest call."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before the loss was computed")
        return self._grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


def per_row(xp, per_element, grad):
    """(mean over each row's k outputs as a column, grad / k): the row losses of a loss that is
    a mean over elements."""
    k = per_element.shape[1]
    return xp.sum(per_element, axis=1, keepdims=True) / k, grad / k


def _namespace(array):
    """The Array API namespace of `array`, array-api-compat's for NumPy and CuPy arrays (as
    `backend.xp`); NumPy's for a Python number."""
    return array_api_compat.array_namespace(array) if array_api_compat.is_array_api_obj(array) else _NUMPY_API


def checked_target(loss: Loss, target, rows: int, outputs: int, name: str = "y", rows_name: str = "X",
                   what: str = "samples") -> np.ndarray:
    """The whole target, checked once: numbers, finite, `rows` rows, then the loss's own check.
    `what` names the rows ("samples" of a data set, "rows" of a batch)."""
    host = host_numeric(target, name)
    if host.shape[0:1] != (rows,):
        raise ValueError(f"{name} has {host.shape[0] if host.ndim else 0} {what} but {rows_name} has {rows}")
    check_finite(host, name)
    return loss.check_target(host, outputs, name)


def last_activation(net) -> str:
    """The activation of the last layer that has one ("linear" when none has)."""
    last = next((layer for layer in reversed(net.layers) if hasattr(layer, "activation")), None)
    return getattr(last, "activation", "linear")


def check_loss(loss, net) -> None:
    """`loss` is a backprop loss that fits `net`'s output (TypeError/ValueError otherwise)."""
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a backprop loss (e.g. bp.CrossEntropyLoss()), got {type(loss).__name__}")
    loss.check_network(net)


class MSELoss(Loss):
    """Mean squared error over all elements: L = mean (p - t)^2;  dL/dp = 2 (p - t) / N."""

    def value_and_grad(self, backend, pred, target):
        return backend.mse_loss(pred, target, self.reduction)

    def row_losses(self, backend, pred, target):
        diff = pred - target
        return per_row(backend.xp, diff * diff, 2.0 * diff)


class MAELoss(Loss):
    """Mean absolute error over all elements: L = mean |p - t|;  dL/dp = sign(p - t) / N."""

    def value_and_grad(self, backend, pred, target):
        return backend.mae_loss(pred, target, self.reduction)

    def row_losses(self, backend, pred, target):
        diff = pred - target
        return per_row(backend.xp, backend.xp.abs(diff), backend.xp.sign(diff))


class HuberLoss(Loss):
    """Huber loss over all elements, as torch.nn.HuberLoss, with d = p - t:

        l = d^2 / 2                  where |d| < delta
        l = delta (|d| - delta / 2)  elsewhere
        dl/dp = d where |d| < delta, else delta sign(d)

    Quadratic near the target, linear far from it: large errors pull with a bounded force.
    """

    def __init__(self, delta: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.delta = check_real("delta", delta, low_open=True)

    def value_and_grad(self, backend, pred, target):
        return backend.huber_loss(pred, target, self.delta, self.reduction)

    def row_losses(self, backend, pred, target):
        xp = backend.xp
        diff = pred - target
        size = xp.abs(diff)
        inside = size < self.delta
        per = xp.where(inside, 0.5 * diff * diff, self.delta * (size - 0.5 * self.delta))
        return per_row(xp, per, xp.where(inside, diff, self.delta * xp.sign(diff)))

    def __repr__(self) -> str:
        return f"HuberLoss(delta={self.delta!r}, reduction={self.reduction!r})"


def _in_unit_interval(values: np.ndarray) -> bool:
    """Every value in [0, 1] (False for NaN, which fails every comparison)."""
    if values.size <= SMALL:  # a Python loop beats two NumPy reductions here
        return all(0.0 <= v <= 1.0 for v in values.flat)
    return bool(0.0 <= np.minimum.reduce(values, None) and np.maximum.reduce(values, None) <= 1.0)


def _strictly_inside(pred) -> bool:
    """A small NumPy array of values in (0, 1), known at the cost of a short loop: neither
    log(p) nor log(1 - p) can divide by zero (False says only "not known")."""
    return isinstance(pred, np.ndarray) and pred.size <= SMALL and all(0.0 < v < 1.0 for v in pred.flat)


def _check_binary(host: np.ndarray, name: str) -> None:
    if not _in_unit_interval(host):
        raise ValueError(f"{name} must hold values in [0, 1], got values from {host.min()} to {host.max()}")


class _Thresholded(Loss):
    """Binary outputs: a prediction is right when (pred > score_threshold) == (target > target_threshold)."""

    score_threshold = 0.5
    target_threshold = 0.5

    def count_correct(self, backend, pred, target):
        hits = backend.count_threshold_matches(pred, target, self.score_threshold, self.target_threshold)
        return hits, pred.size


class BCELoss(_Thresholded):
    """Binary cross-entropy on probabilities (a sigmoid output), PyTorch's clamped logs:
    L = -mean(t log p + (1 - t) log(1 - p)), each log clamped at -100."""

    def __call__(self, pred, target) -> float:
        if _strictly_inside(pred):  # no log of 0 to silence: spare the errstate's cost a call
            return super().__call__(pred, target)
        with np.errstate(divide="ignore"):  # log(0) = -inf is clamped by design: no warning
            return super().__call__(pred, target)

    def value_and_grad(self, backend, pred, target):
        return backend.bce_loss(pred, target, self.reduction)

    def row_losses(self, backend, pred, target):
        xp = backend.xp
        log_p = xp.clip(xp.log(pred), min=BCE_LOG_FLOOR)
        log_q = xp.clip(xp.log1p(-pred), min=BCE_LOG_FLOOR)
        per = -(target * log_p + (1.0 - target) * log_q)
        return per_row(xp, per, (pred - target) / xp.clip(pred * (1.0 - pred), min=BCE_GRAD_EPS))

    def check_pred(self, backend, pred) -> None:
        if is_cupy_array(pred):  # finiteness only: the range would cost a read-back per call
            super().check_pred(backend, pred)
            return
        # One check for both: NaN fails every comparison, so a non-finite value is named below.
        if not _in_unit_interval(pred):
            check_finite(pred, "pred")
            _check_binary(pred, "pred (probabilities for BCELoss)")

    def check_target(self, target, outputs, name="target"):
        _check_binary(target, name)
        return super().check_target(target, outputs, name)

    def check_network(self, net):
        activation = last_activation(net)
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"BCELoss takes probabilities, but the last layer's activation is {activation!r}; "
                             "use activation='sigmoid', or BCEWithLogitsLoss on logits")


class BCEWithLogitsLoss(_Thresholded):
    """Binary cross-entropy on logits, the sigmoid fused in:
    L = mean(max(x, 0) - x t + log(1 + e^-|x|))."""

    score_threshold = 0.0  # logit 0 is probability 0.5

    def value_and_grad(self, backend, pred, target):
        return backend.bce_with_logits_loss(pred, target, self.reduction)

    def row_losses(self, backend, pred, target):
        xp = backend.xp
        per = xp.clip(pred, min=0.0) - pred * target + xp.log1p(xp.exp(-xp.abs(pred)))
        return per_row(xp, per, backend.activation_forward(pred, "sigmoid") - target)

    def check_target(self, target, outputs, name="target"):
        _check_binary(target, name)
        return super().check_target(target, outputs, name)

    def check_network(self, net):
        if last_activation(net) == "sigmoid":
            raise ValueError("BCEWithLogitsLoss takes logits and applies sigmoid itself, but the last layer "
                             "already has activation='sigmoid'; use activation=None, or BCELoss")


class HingeLoss(_Thresholded):
    """Hinge loss: L = mean max(0, 1 - t p), targets -1/+1 (0/1 are mapped to -1/+1)."""

    score_threshold = target_threshold = 0.0  # targets are -1/+1

    def value_and_grad(self, backend, pred, target):
        return backend.hinge_loss(pred, target, self.reduction)

    def row_losses(self, backend, pred, target):
        xp = backend.xp
        margin = 1.0 - target * pred
        return per_row(xp, xp.clip(margin, min=0.0), xp.where(margin > 0, -target, xp.zeros_like(target)))

    def check_target(self, target, outputs, name="target"):
        values = np.unique(target)
        if np.all(np.isin(values, (0, 1))):
            target = 2.0 * target - 1.0
        elif not np.all(np.isin(values, (-1, 1))):
            raise ValueError(f"{name} for HingeLoss must hold -1/+1 or 0/1, got values {values[:5]}")
        return super().check_target(target, outputs, name)


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits: L = mean over rows of -sum_j t_j log softmax(x)_j.

    Targets are integer class labels of shape (rows,) (kept as labels: no one-hot copy is made)
    or one probability row per example (one-hot) of the logits' shape.
    """

    def value_and_grad(self, backend, pred, target):
        if target.ndim == 1:  # one label per row
            return backend.cross_entropy_labels_loss(pred, target, self.reduction)
        return backend.cross_entropy_loss(pred, target, self.reduction)

    def check_target(self, target, outputs, name="target"):
        if outputs < 2:
            raise ValueError(f"CrossEntropyLoss needs one output per class, at least 2, but the network has "
                             f"{outputs}; give the last layer 2 outputs, or use BCEWithLogitsLoss with 1")
        return class_targets(target, outputs, name)

    def row_losses(self, backend, pred, target):
        """l_i = log sum_j e^x_j - sum_j t_j x_j (rows of t summing to 1; labels as one-hot),
        dl_i/dx_j = softmax(x)_j sum_k t_k - t_j."""
        xp = backend.xp
        if target.ndim == 1:
            classes = xp.arange(pred.shape[1], dtype=target.dtype)
            target = xp.astype(xp.reshape(target, (-1, 1)) == xp.reshape(classes, (1, -1)), pred.dtype)
        shifted = xp.clip(pred - xp.max(pred, axis=1, keepdims=True), min=float(xp.finfo(pred.dtype).min))
        e = xp.exp(shifted)
        s = xp.sum(e, axis=1, keepdims=True)
        losses = -xp.sum(target * (shifted - xp.log(s)), axis=1, keepdims=True)
        return losses, (e / s) * xp.sum(target, axis=1, keepdims=True) - target

    def count_correct(self, backend, pred, target):
        if target.ndim == 1:  # one label per row
            return backend.count_label_matches(pred, target), pred.shape[0]
        return backend.count_argmax_matches(pred, target), pred.shape[0]

    def check_network(self, net):
        if last_activation(net) == "softmax":
            raise ValueError("CrossEntropyLoss takes logits and applies softmax itself, but the last layer "
                             "already has activation='softmax'; use activation=None on the last layer")


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _any_outside(labels: np.ndarray, classes: int) -> bool:
    """Any label < 0 or >= classes. Integer labels seen as unsigned need one maximum (a negative
    label is then 2^(bits - 1) or more): half the cost of a minimum and a maximum."""
    if labels.dtype.kind in "iu" and labels.dtype.isnative:
        return bool(np.maximum.reduce(labels.view(_UNSIGNED[labels.dtype.itemsize]), None) >= classes)
    return bool(np.minimum.reduce(labels, None) < 0 or np.maximum.reduce(labels, None) >= classes)


def class_targets(host: np.ndarray, classes: int, name: str) -> np.ndarray:
    """Integer labels (checked in [0, classes)) as int64, or probability rows as they are."""
    if host.ndim == 1 or (host.ndim == 2 and host.shape[1] == 1):
        labels = host.reshape(-1)
        if labels.dtype.kind == "b":
            raise TypeError(f"{name} holds class labels, which must be integers, got booleans")
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise ValueError(f"{name} holds class labels, which must be whole numbers; got "
                             f"{labels[labels != np.round(labels)][:3]}")
        if labels.size and _any_outside(labels, classes):  # the first outside is found only to name it
            outside = (labels < 0) | (labels >= classes)
            raise ValueError(f"{name} labels must be in [0, {classes - 1}] for {classes} classes, got "
                             f"{labels[outside][0].item()}")
        return labels.astype(np.int64, copy=False)
    if host.ndim == 2 and host.shape[1] == classes:
        if host.size and host.min() < 0:
            raise ValueError(f"{name} rows must be probabilities (>= 0), got {host.min()}")
        return host
    raise ValueError(f"{name} must be labels of shape (rows,) or rows of {classes} probabilities, "
                     f"got shape {host.shape}")
