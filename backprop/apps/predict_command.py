"""`python -m backprop predict` and `python -m backprop evaluate`: a saved model on a data file.

Both read the model's checkpoint and the DataInfo saved with it (the task, the class and
feature names, the input scaling `train` applied), then the data file as `train` read its data
(backprop.apps.datafile). `predict` writes one row per example: the class name (or, with
--proba, each class's probability) of a classifier, the target value(s) of a regression, in
the targets' own units; as CSV (to --out FILE.csv, or to stdout) or as .npy. `evaluate` prints
the accuracy and per-class summary of a classifier, or R^2 and MAE of a regression.
"""

from __future__ import annotations

import csv
import sys

import numpy as np

import backprop as bp
from backprop.apps.datafile import model_info, read_examples
from backprop.apps.devices import pick_device
from backprop.apps.report import confusion_matrix, per_class, per_class_table, regression_metrics


def load_model(path: str, device: str):
    """(network on `device`, its DataInfo)."""
    device, _ = pick_device(device)
    net = bp.load(path, device=device)
    return net, model_info(net, bp.load_data_info(path))


def run_predict(args) -> int:
    net, info = load_model(args.model, args.device)
    if args.proba and info.task != "classification":
        raise ValueError(f"--proba gives class probabilities; {args.model} is a regression model")
    X, _ = read_examples(args.data, net, info)
    if info.task == "classification":
        probabilities = _probabilities(net, X, args.batch_size)
        if args.proba:
            header, rows = list(info.class_names), probabilities
        else:
            header = [info.target_name or "class"]
            rows = np.array(info.class_names)[probabilities.argmax(axis=1)][:, None]
    else:
        rows = info.unscale_targets(bp.predict(net, X, batch_size=args.batch_size))
        name = info.target_name or "prediction"
        header = [name] if rows.shape[1] == 1 else [f"{name}_{k}" for k in range(rows.shape[1])]
    _write(args.out, header, rows)
    if args.out:
        print(f"wrote     {args.out}: {len(rows)} predictions ({', '.join(header[:5])}{', ...' * (len(header) > 5)})")
    return 0


def _probabilities(net, X, batch_size: int) -> np.ndarray:
    """Each class's probability: softmax over the outputs, or, for one output, [1 - p, p] with
    p its sigmoid."""
    if net.out_features == 1:
        p = bp.predict(net, X, batch_size=batch_size, activation="sigmoid").reshape(-1, 1)
        return np.hstack([1.0 - p, p])
    return bp.predict(net, X, batch_size=batch_size, activation="softmax")


def _write(out: str | None, header: list[str], rows: np.ndarray) -> None:
    """rows as .npy (one column is saved as a 1-D array) or as CSV with `header`, to stdout when
    `out` is None."""
    if out is not None and out.lower().endswith(".npy"):
        np.save(out, rows[:, 0] if rows.shape[1] == 1 else rows, allow_pickle=False)
        return
    if out is not None and not out.lower().endswith(".csv"):
        raise ValueError(f"--out {out}: expected a file name ending in .csv or .npy")
    with (open(out, "w", newline="", encoding="utf-8") if out else _stdout()) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_cell(v) for v in row] for row in rows.tolist())


def _cell(value):
    return repr(value) if isinstance(value, float) else value  # floats as Python writes them: exact


class _stdout:
    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        sys.stdout.flush()
        return False


def run_evaluate(args) -> int:
    net, info = load_model(args.model, args.device)
    X, y = read_examples(args.data, net, info, labels=args.labels, want_targets=True, target=args.target)
    print(f"model     {args.model}: {info.task}, input shape {tuple(net.input_shape)}, outputs {net.out_features}")
    print(f"data      {args.data}: {len(X)} examples")
    if info.task == "classification":
        predicted = _probabilities(net, X, args.batch_size).argmax(axis=1)
        classes = len(info.class_names)
        confusion = confusion_matrix(y, predicted, classes)
        correct = int(np.trace(confusion))
        print(f"accuracy  {100 * correct / len(y):.2f}% ({correct}/{len(y)})")
        print(per_class_table(per_class(confusion), list(info.class_names)))
    else:
        predicted = info.unscale_targets(bp.predict(net, X, batch_size=args.batch_size)).reshape(y.shape)
        metrics = regression_metrics(y, predicted)
        print(f"R^2       {metrics['r2']:.4f}")
        print(f"MAE       {metrics['mae']:.4g}" + (f" ({info.target_name})" if info.target_name else ""))
    return 0
