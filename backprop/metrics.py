"""Metrics of fit and evaluate: `metrics=["f1", "r2", bp.TopKAccuracy(5), ...]`.

Each metric is computed from counts and sums that are kept on the device, in float64, and added
to after every batch without a read-back; they are read once per epoch (in data-parallel
training summed over the ranks first), and the metric computed from them on the host:

- classes (a CrossEntropyLoss network: the predicted class is the argmax of the outputs, the true
  class the label or the argmax of the target row; a one-output BCELoss, BCEWithLogitsLoss or
  HingeLoss network: two classes, predicted 1 where the output is above the loss's threshold,
  probability 0.5, logit 0): the confusion counts C[true, predicted], one matrix product of the
  two one-hot matrices per batch. "precision", "recall" and "f1" are scikit-learn's with
  `average="macro", zero_division=0`: the mean over the classes present in the targets or the
  predictions of TP / (TP + FP), TP / (TP + FN), 2 TP / (2 TP + FP + FN), each 0 where its
  denominator is.
- labels (a multi-output BCE network: each output a binary problem): TP, FP, FN per output;
  precision, recall and F1 are the mean over every output (scikit-learn's multilabel macro).
- values: "mae" = mean |p - t|, "mse" = mean (p - t)^2, "rmse" = sqrt(mse), each over every
  element; "r2" is scikit-learn's r2_score, uniform average over the outputs:
  1 - sum (t - p)^2 / sum (t - mean t)^2 per output (1 where both sums are 0, 0 where only the
  second is).
- "accuracy" is the loss's own (recorded by default for classifiers: the fraction of rows whose
  class is right; of outputs, for a multi-output binary network), `TopKAccuracy(k)` the fraction
  of rows whose true class is among the k highest outputs.
"""

from __future__ import annotations

import math

import numpy as np

from backprop.checks import check_int
from backprop.losses import CrossEntropyLoss, Loss, _Thresholded


class Metric:
    """A metric: its `name` (the History key; "val_" + name on validation data), what it counts
    (`tally`: "classes", "values" or its own `Counter`), and `value(counts)` from the counts
    summed over the epoch. `check(loss, outputs)` refuses a network it does not apply to."""

    name = ""
    tally = "classes"

    def check(self, loss: Loss, outputs: int) -> None:
        if self.tally == "classes" and _class_kind(loss, outputs) is None:
            raise ValueError(f"metric {self.name!r} needs class predictions (CrossEntropyLoss, BCELoss, "
                             f"BCEWithLogitsLoss or HingeLoss), but the loss is {type(loss).__name__}")
        if self.tally == "values" and isinstance(loss, CrossEntropyLoss):
            raise ValueError(f"metric {self.name!r} compares values with targets of the outputs' shape, but "
                             "CrossEntropyLoss takes class labels")

    def value(self, counts: dict) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _per_class(counts: dict) -> tuple:
    """(TP, FP, FN) per class to average over: the classes present in the targets or the
    predictions for one problem of classes, every output for labels."""
    if "confusion" in counts:
        confusion = counts["confusion"]
        tp = np.diag(confusion)
        predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
        present = (predicted + actual) > 0
        return tp[present], (predicted - tp)[present], (actual - tp)[present]
    return counts["tp"], counts["fp"], counts["fn"]


class Precision(Metric):
    name = "precision"

    def value(self, counts):
        tp, fp, _ = _per_class(counts)
        return float(np.mean(_safe_divide(tp, tp + fp))) if tp.size else 0.0


class Recall(Metric):
    name = "recall"

    def value(self, counts):
        tp, _, fn = _per_class(counts)
        return float(np.mean(_safe_divide(tp, tp + fn))) if tp.size else 0.0


class F1(Metric):
    name = "f1"

    def value(self, counts):
        tp, fp, fn = _per_class(counts)
        return float(np.mean(_safe_divide(2 * tp, 2 * tp + fp + fn))) if tp.size else 0.0


class MeanAbsoluteError(Metric):
    name, tally = "mae", "values"

    def value(self, counts):
        return float(counts["abs"].sum() / counts["elements"][0])


class MeanSquaredError(Metric):
    name, tally = "mse", "values"

    def value(self, counts):
        return float(counts["squares"].sum() / counts["elements"][0])


class RootMeanSquaredError(Metric):
    name, tally = "rmse", "values"

    def value(self, counts):
        return math.sqrt(counts["squares"].sum() / counts["elements"][0])


class R2(Metric):
    name, tally = "r2", "values"

    def value(self, counts):
        rows = counts["elements"][0] / counts["squares"].size
        residual = counts["squares"]
        total = counts["t2"] - counts["t"] ** 2 / rows
        total = np.maximum(total, 0.0)  # a constant output's sum can round below zero
        scores = np.where(total != 0, 1.0 - _safe_divide(residual, total), np.where(residual == 0, 1.0, 0.0))
        return float(np.mean(scores))


class TopKAccuracy(Metric):
    """The fraction of rows whose true class is among the `k` highest outputs (a
    CrossEntropyLoss network); recorded as "top_{k}_accuracy"."""

    def __init__(self, k: int = 5):
        self.k = check_int("k", k, wanted="a positive integer")
        self.name = f"top_{self.k}_accuracy"
        self.tally = _TopKCounter(self.k)

    def check(self, loss, outputs):
        if not isinstance(loss, CrossEntropyLoss):
            raise ValueError(f"metric {self.name!r} needs a CrossEntropyLoss network, got {type(loss).__name__}")

    def value(self, counts):
        hits, rows = counts[self.name]
        return float(hits / rows)

    def __repr__(self):
        return f"TopKAccuracy(k={self.k})"


BUILT_IN = {metric.name: metric for metric in (Precision(), Recall(), F1(), MeanAbsoluteError(),
                                                 MeanSquaredError(), RootMeanSquaredError(), R2())}
NAMES = ("accuracy", *BUILT_IN)


def checked_metrics(metrics, loss: Loss, outputs: int) -> list[Metric]:
    """The Metric objects of `metrics` (names or Metric objects), each checked against the loss;
    "accuracy" is the loss's own and is left out here (fit and evaluate record it anyway)."""
    if isinstance(metrics, (str, Metric)) or not hasattr(metrics, "__iter__"):
        raise TypeError(f"metrics must be a list of metric names or bp.Metric objects, got {metrics!r}")
    resolved, names = [], set()
    for metric in metrics:
        if isinstance(metric, str):
            if metric == "accuracy":
                if _class_kind(loss, outputs) is None:
                    raise ValueError(f"metric 'accuracy' needs class predictions, but the loss is "
                                     f"{type(loss).__name__}")
                continue
            if metric not in BUILT_IN:
                raise ValueError(f"unknown metric {metric!r}; the metrics are {', '.join(NAMES)} (or a "
                                 "bp.Metric object, such as bp.TopKAccuracy(k))")
            metric = BUILT_IN[metric]
        elif not isinstance(metric, Metric):
            raise TypeError(f"metrics must hold metric names or bp.Metric objects, got {type(metric).__name__}")
        if metric.name in names:
            raise ValueError(f"metric {metric.name!r} is asked for twice")
        metric.check(loss, outputs)
        names.add(metric.name)
        resolved.append(metric)
    return resolved


# ---------------------------------------------------------------------- the counts, on the device


def _class_kind(loss: Loss, outputs: int) -> str | None:
    """"classes" (one problem of several classes), "labels" (a binary problem per output), or
    None where the loss predicts no classes."""
    if isinstance(loss, CrossEntropyLoss):
        return "classes"
    if isinstance(loss, _Thresholded):
        return "classes" if outputs == 1 else "labels"
    return None


class _TopKCounter:
    """Rows whose true class has fewer than k outputs above it, and rows counted."""

    def __init__(self, k: int):
        self.k = k

    def counts(self, backend, loss, pred, target) -> dict:
        xp = backend.xp
        onehot = _true_onehot(xp, pred, target)
        true_score = xp.sum(pred * onehot, axis=1, keepdims=True)
        above = xp.sum(xp.astype(pred > true_score, xp.int64), axis=1)
        hits = xp.sum(xp.astype(above < self.k, xp.float64))
        return {f"top_{self.k}_accuracy": xp.stack([hits, xp.asarray(float(pred.shape[0]), dtype=xp.float64)])}


def _true_onehot(xp, pred, target):
    """The true classes of a CrossEntropyLoss batch as one-hot rows in pred's dtype."""
    if target.ndim == 1:
        classes = xp.arange(pred.shape[1], dtype=target.dtype)
        return xp.astype(xp.reshape(target, (-1, 1)) == xp.reshape(classes, (1, -1)), pred.dtype)
    return _onehot(xp, xp.argmax(target, axis=1), pred.shape[1], pred.dtype)


def _onehot(xp, index, classes: int, dtype):
    return xp.astype(xp.reshape(index, (-1, 1)) == xp.reshape(xp.arange(classes, dtype=index.dtype), (1, -1)), dtype)


def _class_counts(backend, loss, pred, target) -> dict:
    """C[true, predicted] of a batch (float64), or TP, FP, FN per output for labels."""
    xp = backend.xp
    if isinstance(loss, CrossEntropyLoss):
        predicted = _onehot(xp, xp.argmax(pred, axis=1), pred.shape[1], pred.dtype)
        actual = _true_onehot(xp, pred, target)
    else:
        p = pred > loss.score_threshold
        t = target > loss.target_threshold
        if pred.shape[1] > 1:
            f64 = xp.float64
            return {"tp": xp.sum(xp.astype(p & t, f64), axis=0), "fp": xp.sum(xp.astype(p & ~t, f64), axis=0),
                    "fn": xp.sum(xp.astype(~p & t, f64), axis=0)}
        predicted = xp.concat([xp.astype(~p, pred.dtype), xp.astype(p, pred.dtype)], axis=1)
        actual = xp.concat([xp.astype(~t, pred.dtype), xp.astype(t, pred.dtype)], axis=1)
    # one product of the one-hot matrices: integer counts, exact in the dtype for any batch
    return {"confusion": xp.astype(backend.matmul(actual, predicted, transpose_a=True), xp.float64)}


def _value_sums(backend, loss, pred, target) -> dict:
    """|p - t| summed, and per output: (p - t)^2, t and t^2 summed; the elements counted."""
    xp = backend.xp
    p, t = xp.astype(pred, xp.float64), xp.astype(target, xp.float64)
    diff = p - t
    return {"abs": xp.sum(xp.abs(diff), axis=0), "squares": xp.sum(diff * diff, axis=0), "t": xp.sum(t, axis=0),
            "t2": xp.sum(t * t, axis=0), "elements": xp.asarray([float(math.prod(pred.shape))], dtype=xp.float64)}


class Tally:
    """The device counts of an epoch (or an evaluation) for `metrics` of a network of `outputs`:
    `add` after every batch, `values(comm)` once at the end (one read-back; summed over the
    ranks of `comm`). Every count starts at zero, so every rank holds the same ones."""

    def __init__(self, backend, loss, metrics: list[Metric], outputs: int):
        self.backend, self.loss, self.metrics = backend, loss, metrics
        xp = backend.xp
        counters, shapes = [], {}
        if any(m.tally == "classes" for m in metrics):
            counters.append(_class_counts)
            if _class_kind(loss, outputs) == "labels":
                shapes.update(tp=(outputs,), fp=(outputs,), fn=(outputs,))
            else:
                classes = 2 if outputs == 1 else outputs
                shapes["confusion"] = (classes, classes)
        if any(m.tally == "values" for m in metrics):
            counters.append(_value_sums)
            shapes.update({key: (outputs,) for key in ("abs", "squares", "t", "t2")}, elements=(1,))
        for metric in metrics:
            if isinstance(metric.tally, _TopKCounter):
                counters.append(metric.tally.counts)
                shapes[metric.name] = (2,)
        self.counters = counters
        self.sums = {key: xp.zeros(shape, dtype=xp.float64) for key, shape in shapes.items()}

    def add(self, pred, target) -> None:
        sums = self.sums
        for counter in self.counters:
            for key, value in counter(self.backend, self.loss, pred, target).items():
                sums[key] = sums[key] + value

    def values(self, comm=None) -> dict:
        """{metric name: value}, from the counts summed over the ranks of `comm` (None: this process)."""
        if not self.metrics:
            return {}
        host = {key: self.backend.to_host(value) for key, value in self.sums.items()}
        if comm is not None and comm.size > 1:
            host = _summed_over_ranks(comm, host)
        return {metric.name: metric.value(host) for metric in self.metrics}


def _summed_over_ranks(comm, host: dict) -> dict:
    """Each count summed over the ranks: one allreduce of them all, flattened, in a fixed order."""
    keys = sorted(host)
    flat = comm.sum_floats(np.concatenate([host[key].ravel() for key in keys]).tolist())
    out, start = {}, 0
    for key in keys:
        size = host[key].size
        out[key] = np.asarray(flat[start:start + size]).reshape(host[key].shape)
        start += size
    return out
