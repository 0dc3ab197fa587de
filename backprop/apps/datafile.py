"""A data file read for a saved model (`predict`, `evaluate`): the examples shaped and scaled as
the model was trained, and, when asked for, the targets in the model's terms.

    FILE.npz        arrays X (and y, for evaluate)
    FILE.npy        X alone; the targets from --labels FILE.npy
    FILE.csv        a header row; the model's feature columns, by name when the model knows
                    them, and its target column (for evaluate)
    IDX file        MNIST-format images (gzipped or not); the labels from --labels FILE

Examples are read as `train` reads them (8-bit pixels scaled to [0, 1]), reshaped to the
model's input shape (a flat row of an image model's C*H*W values, or an image for a model of
flat rows, is one example), then standardised with the scaling saved with the model.
"""

from __future__ import annotations

import math
import os

import numpy as np

from backprop.apps.datasets import ZIP_MAGICS, _features, _label_name, _read_npz, read_idx
from backprop.apps.tabular import Table
from backprop.datainfo import DataInfo

NPY_MAGIC = b"\x93NUMPY"


def model_info(net, info: DataInfo | None) -> DataInfo:
    """The model's DataInfo; for a checkpoint saved without one, a classification with classes
    named 0..k-1 when the network has several outputs, else a regression."""
    if info is not None:
        return info
    if net.out_features > 1:
        return DataInfo(task="classification", class_names=[str(k) for k in range(net.out_features)])
    return DataInfo(task="regression")


def read_examples(path: str, net, info: DataInfo, labels: str | None = None, want_targets: bool = False,
                  target: str | None = None):
    """(X ready for `net`, targets or None): targets are class indices for a classification
    (refused where a label is no class of the model) and values in the data's own units for a
    regression; read only when `want_targets`."""
    kind = _kind(path)
    y = None
    if kind == "csv":
        X, y = _read_csv(path, info, want_targets, target)
    elif kind == "npz":
        X, y, _ = _read_npz(path, need_y=want_targets and labels is None)
    elif kind == "npy":  # memory-mapped: predict and evaluate read it a batch at a time
        X = ExamplesOnDemand(_load_npy(path, mmap_mode="r"), net, info, path)
    else:
        X = _features(read_idx(path), path)
    if want_targets and labels is not None:  # --labels wins over targets the file holds
        y = _load_npy(labels) if _kind(labels) == "npy" else read_idx(labels)
    elif want_targets and y is None:
        raise ValueError(f"{path} holds no targets; give them with --labels FILE (.npy, or an IDX labels file)")
    if not isinstance(X, ExamplesOnDemand):
        X = info.scale_inputs(_shaped(X, net, path))
    if not want_targets:
        return X, None
    return X, _targets(np.asarray(y), len(X), info, labels or path)


def _kind(path: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head[:4] in ZIP_MAGICS:
        return "npz"
    if head == NPY_MAGIC:
        return "npy"
    if (len(head) >= 4 and head[0] == 0 and head[1] == 0) or path.endswith(".gz"):
        return "idx"
    if path.lower().endswith((".csv", ".txt")):
        return "csv"
    raise ValueError(f"{path}: not a data file backprop reads; expected .npz, .npy, .csv or an IDX file")


class ExamplesOnDemand:
    """The examples of a memory-mapped .npy file as the model takes them, made a batch at a time:
    bp.predict and bp.evaluate read `X[idx]` per batch (after checking it in chunks), so a file
    larger than memory is never read whole. Each batch goes through what a whole file would:
    rows of float features, the model's input shape, the scaling train applied."""

    def __init__(self, mapped: np.ndarray, net, info: DataInfo, source: str):
        self.mapped, self.net, self.info, self.source = mapped, net, info, source
        if len(mapped) == 0:
            _features(mapped, source)  # says the file holds no examples
        self[np.arange(1)]  # a file the model cannot take is refused here, before any batch

    def __len__(self) -> int:
        return len(self.mapped)

    def __getitem__(self, index) -> np.ndarray:
        rows = _features(np.asarray(self.mapped[index]), self.source)
        return self.info.scale_inputs(_shaped(rows, self.net, self.source))


def _load_npy(path: str, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path} holds Python objects, which backprop never unpickles") from None
        raise ValueError(f"{path} is not a readable .npy file ({exc})") from None


def _shaped(X: np.ndarray, net, source: str) -> np.ndarray:
    """X (rows of values) reshaped to (rows, *net.input_shape), when each row holds as many
    values as one example of the network."""
    expected = net.in_features
    per_example = math.prod(X.shape[1:])
    if per_example != expected:
        raise ValueError(f"{source} has {per_example} values per example but the model takes {expected} "
                         f"(input shape {tuple(net.input_shape)})")
    return X.reshape(len(X), *net.input_shape)


def _read_csv(path: str, info: DataInfo, want_targets: bool, target: str | None):
    """The feature columns (those the model was trained on, by name, in its order) and the
    target column; refused, naming them, where the file's columns differ from the model's."""
    table = Table(path)
    target = target or info.target_name
    target_index = table.header.index(target) if target in table.header else None
    if info.feature_names is None:
        columns = [c for c in range(len(table.header)) if c != target_index]
    else:
        missing = [name for name in info.feature_names if name not in table.header]
        extra = [name for name in table.header if name not in info.feature_names and name != target]
        problems = ([f"lacks the model's columns {', '.join(missing)}"] if missing else []) + (
            [f"has columns the model was not trained on: {', '.join(extra)}"] if extra else [])
        if problems:
            raise ValueError(f"{table.source} {' and '.join(problems)} (the model's features: "
                             f"{', '.join(info.feature_names)}" + (f"; its target: {target})" if target else ")"))
        columns = [table.header.index(name) for name in info.feature_names]
    X = table.numbers(columns)
    if not want_targets:
        return X, None
    if target_index is None:
        wanted = f"target column {target!r}" if target else "target column the model knows (--target COLUMN)"
        raise ValueError(f"{table.source} has no {wanted}; its columns are {', '.join(table.header)}")
    return X, table.targets(target_index, info.task)


def _targets(y: np.ndarray, rows: int, info: DataInfo, source: str) -> np.ndarray:
    """Class indices of the model's classes, or regression targets as float64."""
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 and info.task == "classification" else y
    if y.shape[:1] != (rows,):
        raise ValueError(f"{source}: expected {rows} targets, one per example, got shape {y.shape}")
    if info.task == "regression":
        if y.dtype.kind not in "iubf" or not np.all(np.isfinite(y)):
            raise ValueError(f"{source}: regression targets must be finite numbers")
        return y.astype(np.float64)
    if y.dtype.kind in "iubf":
        if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise ValueError(f"{source}: labels must be whole numbers or class names")
        names = np.array([_label_name(v) for v in y])
    else:
        names = y.astype(str)
    known = {name: k for k, name in enumerate(info.class_names)}
    unknown = sorted(set(names.tolist()) - set(known))
    if unknown:
        raise ValueError(f"{source}: label{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])} "
                         f"{'are' if len(unknown) > 1 else 'is'} no class of the model (its classes: "
                         f"{', '.join(info.class_names)})")
    return np.array([known[name] for name in names.tolist()], dtype=np.int64)
