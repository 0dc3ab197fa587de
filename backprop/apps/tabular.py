"""Your own data for `train`: CSV files, the task (classification or regression), the scaling.

    csv:FILE     a header row naming the columns, then one sample per line; `--target` names
                 the target column (by name, or by index from 0; default: the last column)

The task is `--task`, or inferred from the target: whole numbers with few distinct values
(at most MAX_CLASSES, and at most one per MIN_PER_CLASS samples) are class labels, text is class
names, anything else is a regression target. A CSV's features are standardised with the mean
and standard deviation of the training part, and so are a regression's targets; the scaling is
returned in the data set's `DataInfo`, which `train` saves with the model.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from backprop.apps.datasets import TEST_FRACTION, VAL_FRACTION, Dataset, _as_classes, _labels, _split_parts
from backprop.datainfo import DataInfo

MAX_CLASSES = 100
MIN_PER_CLASS = 5


class Table:
    """A CSV file read whole: `header` (column names), `rows` (lists of strings, as written)
    and `lines` (the line number each row ends on, for messages)."""

    def __init__(self, path: str):
        self.source = f"csv:{path}"
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.source}: no such file")
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                self.header = [name.strip() for name in next(reader, [])]
                self.rows, self.lines = [], []
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue  # blank lines, the last one above all, are no sample
                    if len(row) != len(self.header):
                        raise ValueError(f"{self.source} line {reader.line_num}: {len(row)} values, but the header "
                                         f"names {len(self.header)} columns")
                    self.rows.append(row)
                    self.lines.append(reader.line_num)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{self.source} is not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise ValueError(f"{self.source} is not a readable CSV file ({exc})") from None
        if not self.header or not any(self.header):
            raise ValueError(f"{self.source} is empty; expected a header row naming the columns, then the samples")
        if all(_is_number(name) for name in self.header):
            raise ValueError(f"{self.source} line 1: expected a header row naming the columns, got only numbers "
                             f"({', '.join(self.header[:4])}{', ...' if len(self.header) > 4 else ''})")
        if not self.rows:
            raise ValueError(f"{self.source} has a header but no samples")

    def column_index(self, column: str | None) -> int:
        """The index of `column`: a header name, else an integer index (negative from the end);
        None is the last column."""
        if column is None:
            return len(self.header) - 1
        if column in self.header:
            return self.header.index(column)
        try:
            index = int(column)
        except ValueError:
            raise ValueError(f"--target {column}: {self.source} has no such column; its columns are "
                             f"{', '.join(self.header)}") from None
        if not -len(self.header) <= index < len(self.header):
            raise ValueError(f"--target {column}: {self.source} has {len(self.header)} columns (0 to "
                             f"{len(self.header) - 1})")
        return index % len(self.header)

    def numbers(self, columns: list[int]) -> np.ndarray:
        """The values of `columns` as float64 rows; a missing or non-numeric value is refused
        with its line number and column."""
        values = np.empty((len(self.rows), len(columns)))
        for r, (row, line) in enumerate(zip(self.rows, self.lines)):
            for c, column in enumerate(columns):
                values[r, c] = self._number(row[column].strip(), line, column)
        return values

    def _number(self, text: str, line: int, column: int) -> float:
        where = f"{self.source} line {line}, column {self.header[column]!r}"
        if not text:
            raise ValueError(f"{where}: missing value")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {text!r}")
        return value

    def targets(self, column: int, task: str | None) -> np.ndarray:
        """The target column: float64 numbers, or, where the column holds text and the task is
        not regression, the text as class names; a missing value is refused with its line."""
        texts = [row[column].strip() for row in self.rows]
        for text, line in zip(texts, self.lines):
            if not text:
                raise ValueError(f"{self.source} line {line}, column {self.header[column]!r}: missing target value")
        if task == "regression" or all(_is_number(text) for text in texts):
            return self.numbers([column])[:, 0]
        return np.array(texts)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def infer_task(y: np.ndarray) -> str:
    """"classification" for text labels and for whole numbers with few distinct values (at most
    MAX_CLASSES, and at most one per MIN_PER_CLASS samples), else "regression"."""
    if y.dtype.kind in "USO":
        return "classification"
    if y.ndim != 1 or y.dtype.kind not in "iubf" or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        return "regression"
    distinct = len(np.unique(y))
    return "classification" if distinct <= min(MAX_CLASSES, max(2, len(y) // MIN_PER_CLASS)) else "regression"


def describe_task(task: str | None, inferred: str) -> str:
    return inferred if task else f"{inferred} (inferred from the target; --task to choose)"


def load_csv(spec: str, path: str, seed: int, target: str | None, task: str | None) -> Dataset:
    """csv:FILE split for training, its features standardised (see the module docstring)."""
    table = Table(path)
    column = table.column_index(target)
    if len(table.header) < 2:
        raise ValueError(f"{table.source} has one column; it needs feature columns besides the target")
    features = [c for c in range(len(table.header)) if c != column]
    X = table.numbers(features)
    y = table.targets(column, task)
    return labelled_dataset(spec, X, y, seed, task, scale_features=True,
                            feature_names=[table.header[c] for c in features], target_name=table.header[column])


def labelled_dataset(name: str, X: np.ndarray, y: np.ndarray, seed: int, task: str | None, *,
                     scale_features: bool = False, feature_names=None, target_name=None) -> Dataset:
    """X and y split for `task` (inferred from y when None): stratified by class for a
    classification, at random for a regression, whose targets are standardised; features too
    when `scale_features`. The scaling comes from the training part alone."""
    inferred = task or infer_task(y)
    if inferred == "classification":
        if y.dtype.kind in "US":  # text labels: the class names, in sorted order
            class_names, y = [str(v) for v in np.unique(y)], np.unique(y, return_inverse=True)[1]
            if len(class_names) < 2:
                raise ValueError(f"{name}: the labels hold one class ({class_names[0]}); a classifier needs at "
                                 "least two")
        else:
            (y,), class_names = _as_classes(name, _labels(y, X.shape[0], f"{name} {target_name or 'y'}"))
        test, val, train = _split_parts(name, y, {"test": TEST_FRACTION, "validation": VAL_FRACTION}, seed)
    else:
        y = _regression_targets(y, X.shape[0], name)
        class_names = []
        test, val, train = _split_parts(name, np.zeros(len(y)), {"test": TEST_FRACTION, "validation": VAL_FRACTION},
                                        seed)
    x_mean = x_scale = y_mean = y_scale = None
    if scale_features:
        x_mean, x_scale = _standardisation(X[train].reshape(len(train), -1))
    if inferred == "regression":
        y_mean, y_scale = _standardisation(y[train].reshape(len(train), -1))
    info = DataInfo(task=inferred, class_names=class_names or None, feature_names=feature_names,
                    target_name=target_name, x_mean=x_mean, x_scale=x_scale, y_mean=y_mean, y_scale=y_scale)
    X, y = info.scale_inputs(X), info.scale_targets(y)
    return Dataset(name, X[train], y[train], X[val], y[val], X[test], y[test], class_names, info=info,
                   task_note=describe_task(task, inferred))


def _regression_targets(y: np.ndarray, rows: int, name: str) -> np.ndarray:
    """Regression targets as float64, (rows,) or (rows, outputs), every one finite."""
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} regression targets, as (samples,) or (samples, outputs), "
                         f"got shape {y.shape}")
    if y.dtype.kind not in "iubf":
        raise ValueError(f"{name}: regression targets must be numbers, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: regression targets hold NaN or inf")
    return y


def _standardisation(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation (1 for a constant column: it stays constant,
    at 0, instead of dividing by zero)."""
    std = rows.std(axis=0)
    return rows.mean(axis=0), np.where(std > 0, std, 1.0)
