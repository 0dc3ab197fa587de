"""What a model got right: a classifier's confusion matrix and per-class summary, a regression's
R^2 and mean absolute error."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """C[i, j] = how many samples of class i were predicted as class j."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def per_class(confusion: np.ndarray) -> list[dict]:
    """For each class i: support = sum_j C[i, j] (its samples), recall = C[i, i] / support,
    precision = C[i, i] / sum_j C[j, i] (of the samples predicted as i, the right ones).
    An empty denominator gives None."""
    correct = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall, precision = correct / support, correct / predicted
    return [{"support": int(s), "correct": int(c), "precision": _number(p), "recall": _number(r)}
            for s, c, p, r in zip(support, correct, precision, recall)]


def _number(value) -> float | None:
    return None if np.isnan(value) else float(value)


def per_class_table(rows: list[dict], names: list[str]) -> str:
    """The per-class summary as aligned text, the most often missed class marked."""
    width = max(5, *(len(n) for n in names))
    lines = [f"  {'class':>{width}}  {'samples':>7}  {'correct':>7}  {'precision':>9}  {'recall':>6}"]
    worst = min(range(len(rows)), key=lambda i: (rows[i]["recall"] if rows[i]["support"] else 1.0))
    for i, (name, row) in enumerate(zip(names, rows)):
        mark = "  <- most missed" if i == worst and row["correct"] < row["support"] else ""
        lines.append(f"  {name:>{width}}  {row['support']:>7}  {row['correct']:>7}  "
                     f"{_pct(row['precision']):>9}  {_pct(row['recall']):>6}{mark}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """{"r2": ..., "mae": ...} of predictions in the targets' own units, computed by the
    library's metrics (what bp.fit and bp.evaluate record as "r2" and "mae"): R^2 is
    scikit-learn's r2_score averaged over the targets, MAE the mean |y - p| over every element."""
    from backprop.backends import get_backend
    from backprop.losses import MSELoss
    from backprop.metrics import Tally, checked_metrics

    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape)
    backend, loss, outputs = get_backend("cpu", "float64"), MSELoss(), y_true.shape[1]
    tally = Tally(backend, loss, checked_metrics(["r2", "mae"], loss, outputs), outputs)
    tally.add(backend.asarray(y_pred), backend.asarray(y_true))
    return {name: float(value) for name, value in tally.values().items()}
