"""Your own data for `train`: CSV files, the task (classification or regression), the scaling.

    csv:FILE     a header row naming the columns, then one sample per line; `--target` names
                 the target column (by name, or by index from 0; default: the last column)

The task is `--task`, or inferred from the target: whole numbers with few distinct values
(at most MAX_CLASSES, and at most one per MIN_PER_CLASS samples) are class labels, text is class
names, anything else is a regression target. A CSV's features are standardised with the mean
and standard deviation of the training part, and so are a regression's targets
(`datasets.labelled_dataset` splits and scales; the scaling is the data set's `DataInfo`, which
`train` saves with the model).
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from backprop.files import open_regular

MAX_CLASSES = 100
MIN_PER_CLASS = 5


class Table:
    """A CSV file read whole: `header` (column names), `rows` (lists of strings, as written)
    and `lines` (the line number each row ends on, for messages)."""

    def __init__(self, path: str):
        self.source = f"csv:{path}"
        try:
            with open_regular(path, self.source) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
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


def read_csv(path: str, target: str | None, task: str | None):
    """(X, y, feature names, target name) of csv:`path`: the target column `target` (see
    `Table.column_index`), the other columns as float64 features."""
    table = Table(path)
    column = table.column_index(target)
    if len(table.header) < 2:
        raise ValueError(f"{table.source} has one column; it needs feature columns besides the target")
    features = [c for c in range(len(table.header)) if c != column]
    return (table.numbers(features), table.targets(column, task), [table.header[c] for c in features],
            table.header[column])


def regression_targets(y: np.ndarray, rows: int, name: str) -> np.ndarray:
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


def standardisation(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation (1 for a constant column: it stays constant,
    at 0, instead of dividing by zero)."""
    std = rows.std(axis=0)
    return rows.mean(axis=0), np.where(std > 0, std, 1.0)
