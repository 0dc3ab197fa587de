"""`python -m backprop train`: train a classifier, report on the test set, write the run's files.

A run: load and split the data set, build `Dense(act) [-> BatchNorm] [-> Dropout]` per hidden
layer and a linear output layer (softmax fused into CrossEntropyLoss), fit with validation-loss
early stopping, then report test accuracy, a per-class summary and the time per epoch, and write
to the run folder:
    model.safetensors      the checkpoint (bp.save, with the optimizer's state), loadable with bp.load
    history.json   per-epoch metrics, the settings, the test results
    training.png   loss and accuracy curves and the test confusion matrix
Ctrl-C stops after the current batch; what was trained so far is still reported and saved, and
the command exits with status 130.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import numpy as np

import backprop as bp
from backprop.apps.devices import pick_device
from backprop.apps.datasets import load_dataset
from backprop.apps.plots import plot_training
from backprop.apps.report import confusion_matrix, per_class, per_class_table

INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT (128 + 2)
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}  # torch.optim's defaults
DEFAULT_MOMENTUM = 0.9


class UsageError(ValueError):
    """A combination of flags that makes no sense; reported as one line, exit status 2."""


def build_layers(args, features: int, classes: int) -> list:
    """features -> [Dense(h, act) -> BatchNorm(h)? -> Dropout(p)?] per hidden width -> Dense(classes)."""
    layers, width = [], features
    for hidden in args.hidden:
        layers.append(bp.Dense(width, hidden, activation=args.activation))
        if args.batch_norm:
            layers.append(bp.BatchNorm(hidden))
        if args.dropout:
            layers.append(bp.Dropout(args.dropout))
        width = hidden
    layers.append(bp.Dense(width, classes))
    return layers


def build_training(args, features: int, classes: int, device: str) -> tuple[bp.Sequential, bp.Optimizer]:
    """The network and its optimizer; a size that does not fit in memory is a UsageError saying so."""
    layers = build_layers(args, features, classes)
    try:
        net = bp.Sequential(*layers, device=device, dtype=args.dtype, seed=args.seed)
        return net, build_optimizer(args, net)
    except MemoryError as exc:  # the network's message says how many parameters, on which device
        raise UsageError(f"--hidden {','.join(map(str, args.hidden))}: {exc}; choose smaller widths") from None


def build_optimizer(args, net) -> bp.Optimizer:
    if args.momentum is not None and args.optimizer != "sgd":
        raise UsageError(f"--momentum applies to --optimizer sgd only (got --optimizer {args.optimizer})")
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    decay = DEFAULT_WEIGHT_DECAY[args.optimizer] if args.weight_decay is None else args.weight_decay
    if args.optimizer == "sgd":
        momentum = DEFAULT_MOMENTUM if args.momentum is None else args.momentum
        return bp.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
    kind = bp.Adam if args.optimizer == "adam" else bp.AdamW
    return kind(net.parameters(), lr=lr, weight_decay=decay)


def describe_network(net) -> str:
    """"64 -> Dense 64->256 relu -> Dropout 0.3 -> Dense 256->10" """
    return " -> ".join([str(net.in_features)] + [layer.label() for layer in net.layers])


def describe_optimizer(opt) -> str:
    settings = ", ".join(f"{k} {v:g}" for k, v in opt.hyperparameters().items()
                         if k in ("lr", "momentum", "weight_decay") and (v or k == "lr"))
    return f"{type(opt).__name__} ({settings})"


def new_run_folder(base: str = "runs") -> str:
    """runs/<YYYYmmdd-HHMMSS>, with -2, -3, ... when that folder already exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = os.path.join(base, stamp), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(base, f"{stamp}-{n}")
    return path


@contextlib.contextmanager
def run_folder(path: str, create: bool = True):
    """Create `path` (and the folders above it that are missing) before training, so that a
    folder that cannot be written fails at once; if the run fails before writing anything, the
    folders it created are removed again (an empty run folder is no record of anything)."""
    if not create:
        yield
        return
    created, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OSError(f"--out {path}: cannot create the run folder ({error.strerror or error})") from None
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first; rmdir removes only what is still empty
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


@contextlib.contextmanager
def sigint_ignored():
    """While the run's files are written, a second Ctrl-C must not leave them half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args) -> int:
    device, device_note = pick_device(args.device)
    data = load_dataset(args.dataset, seed=args.seed)
    net, opt = build_training(args, data.features, data.classes, device)
    loss = bp.CrossEntropyLoss()
    writes_files = not args.distributed or _is_root()
    out = args.out or new_run_folder()

    print(f"data      {data.name}: {len(data.y_train)} training, {len(data.y_val)} validation, "
          f"{len(data.y_test)} test samples; {data.features} features, {data.classes} classes")
    print(f"network   {describe_network(net)} ({net.num_parameters():,} parameters), "
          "softmax cross-entropy")
    patience = (f"early stopping after {args.early_stopping} epochs without a lower validation loss"
                if args.early_stopping else "no early stopping")
    print(f"training  {describe_optimizer(opt)}, batch {args.batch_size}, up to {args.epochs} epochs, "
          f"{patience}, seed {args.seed}")
    print(f"device    {net.device} ({net.dtype}{'; ' + device_note if device_note else ''})", flush=True)
    with run_folder(out, create=writes_files):
        return _train_and_report(args, data, net, opt, loss, out, writes_files)


def _train_and_report(args, data, net, opt, loss, out: str, writes_files: bool) -> int:
    interrupted = False
    start = time.perf_counter()
    try:
        history = bp.fit(net, data.X_train, data.y_train, loss=loss, optimizer=opt, epochs=args.epochs,
                         batch_size=args.batch_size, validation_data=(data.X_val, data.y_val),
                         early_stopping=args.early_stopping or None, seed=args.seed,
                         distributed=args.distributed)
    except KeyboardInterrupt:
        history = getattr(net, "history", None)
        if history is None:  # stopped before training began: nothing to save
            raise
        interrupted = True
    seconds = time.perf_counter() - start

    with sigint_ignored():
        if interrupted:
            print(f"stopped by Ctrl-C in epoch {history.epochs}: keeping the weights trained so far")
        elif history.best_epoch is not None and (history.stopped_early or history.best_epoch != history.epochs):
            how = "stopped early after" if history.stopped_early else "trained"
            print(f"{how} {history.epochs} epochs; kept the weights of epoch {history.best_epoch} "
                  f"(lowest validation loss {min(history['val_loss']):.4f})")
        test = bp.evaluate(net, data.X_test, data.y_test, loss=loss)
        predicted = bp.predict(net, data.X_test).argmax(axis=1)
        confusion = confusion_matrix(data.y_test, predicted, data.classes)
        classes = per_class(confusion)
        correct = int(np.trace(confusion))
        print(f"test accuracy {100 * test['accuracy']:.2f}% ({correct}/{len(data.y_test)}), "
              f"test loss {test['loss']:.4f}")
        print(per_class_table(classes, data.class_names))
        per_epoch = seconds / max(history.epochs, 1)
        print(f"time      {history.epochs} epochs in {seconds:.2f} s, {1000 * per_epoch:.0f} ms per epoch, "
              f"on {net.device}")
        if writes_files:
            files = write_run(out, args, data, net, opt, history, test, confusion, classes, seconds, interrupted)
            what = "saved what was trained so far to" if interrupted else "wrote    "
            print(f"{what} {out}{os.sep}: {', '.join(files)}")
    return INTERRUPTED if interrupted else 0


def write_run(out, args, data, net, opt, history, test, confusion, classes, seconds, interrupted) -> list[str]:
    """The checkpoint, history.json and training.png in `out`; returns their names."""
    bp.save(net, os.path.join(out, "model.safetensors"), optimizer=opt)
    settings = {k: v for k, v in vars(args).items() if k != "run"}
    record = {
        "dataset": data.name, "device": net.device, "dtype": net.dtype, "settings": settings,
        "class_names": data.class_names, **history.to_dict(), "seconds": seconds,
        "seconds_per_epoch": seconds / max(history.epochs, 1),
        "test": {"loss": test["loss"], "accuracy": test["accuracy"], "per_class": classes,
                 "confusion_matrix": confusion.tolist()},
    }
    with open(os.path.join(out, "history.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, allow_nan=False)
        handle.write("\n")
    title = f"{data.name}: {describe_network(net)} on {net.device}" + (" (interrupted)" if interrupted else "")
    plot_training(history.history, confusion, data.class_names, os.path.join(out, "training.png"),
                  title=title, best_epoch=None if interrupted else history.best_epoch)
    return ["model.safetensors", "history.json", "training.png"]


def _is_root() -> bool:
    from backprop.distributed import is_root

    return is_root()
