"""`python -m backprop train`: train a classifier or a regression, report on the test set, write
the run's files.

A run: load and split the data set, build the network (`--model mlp`: `Dense(act) [-> BatchNorm]
[-> Dropout]` per hidden layer; `--model cnn`: convolutions and max pooling over the images, then
two Dense layers) with a linear output layer (softmax fused into CrossEntropyLoss for a
classification; MSE or Huber loss for a regression), fit with validation-loss early stopping,
then report on the test set (accuracy and a per-class summary, or R^2 and MAE in the targets'
units) and the time per epoch, and write to the run folder:
    model.safetensors      the checkpoint (bp.save, with the optimizer's state and the data's
                   DataInfo: task, names, scaling), loadable with bp.load
    history.json   per-epoch metrics, the settings, the test results
    training.png   loss (and accuracy) curves, and the test confusion matrix or, for a
                   regression, predicted against true; for 2-D data the decision boundary
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
from backprop.apps.plots import boundary_panel, confusion_panel, plot_training, regression_panel
from backprop.apps.report import confusion_matrix, per_class, per_class_table, regression_metrics

INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT (128 + 2)
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}  # torch.optim's defaults
DEFAULT_MOMENTUM = 0.9


class UsageError(ValueError):
    """A combination of flags that makes no sense; reported as one line, exit status 2."""


DEFAULT_HIDDEN = [512]
CNN_DROPOUT = 0.3
MLP_ONLY = ("hidden", "activation", "batch_norm")  # flags of --model mlp: the CNN's layers are fixed


def build_layers(args, features: int, classes: int) -> list:
    """features -> [Dense(h, act) -> BatchNorm(h)? -> Dropout(p)?] per hidden width -> Dense(classes)."""
    layers, width = [], features
    for hidden in DEFAULT_HIDDEN if args.hidden is None else args.hidden:
        layers.append(bp.Dense(width, hidden, activation=args.activation or "relu"))
        if args.batch_norm:
            layers.append(bp.BatchNorm(hidden))
        if args.dropout:
            layers.append(bp.Dropout(args.dropout))
        width = hidden
    layers.append(bp.Dense(width, classes))  # classes: the outputs, one per regression target too
    return layers


def cnn_layers(image_shape, classes: int, dropout: float) -> list:
    """A CNN for images of `image_shape` (channels, height, width).

    Small images (the 8x8 digits): conv 32 3x3 pad 1, relu, maxpool 2, conv 64 3x3 pad 1, relu,
    maxpool 2, flatten, dense 64 relu, dropout, dense. Images of at least 28x28 (MNIST): LeNet-5's
    shape, conv 6 5x5 pad 2, relu, maxpool 2, conv 16 5x5, relu, maxpool 2, flatten, dense 120
    relu, dense 84 relu, dropout, dense.
    """
    channels, height, width = image_shape
    if min(height, width) >= 28:
        conv = [bp.Conv2D(channels, 6, 5, padding=2, activation="relu"), bp.MaxPool2D(2),
                bp.Conv2D(6, 16, 5, activation="relu"), bp.MaxPool2D(2)]
        last, dense = 16, [120, 84]
        height, width = (height // 2 - 4) // 2, (width // 2 - 4) // 2
    elif min(height, width) >= 4:
        conv = [bp.Conv2D(channels, 32, 3, padding=1, activation="relu"), bp.MaxPool2D(2),
                bp.Conv2D(32, 64, 3, padding=1, activation="relu"), bp.MaxPool2D(2)]
        last, dense = 64, [64]
        height, width = height // 4, width // 4
    else:
        raise UsageError(f"--model cnn needs images of at least 4x4 pixels, got {height}x{width}")
    layers, features = [*conv, bp.Flatten()], last * height * width
    for size in dense:
        layers.append(bp.Dense(features, size, activation="relu"))
        features = size
    if dropout:
        layers.append(bp.Dropout(dropout))
    return [*layers, bp.Dense(features, classes)]


def build_training(args, data, device: str) -> tuple[bp.Sequential, bp.Optimizer]:
    """The network for `data` and its optimizer; a size that does not fit in memory is a UsageError saying so."""
    if args.model == "cnn":
        dropout = CNN_DROPOUT if args.dropout is None else args.dropout
        layers, shape = cnn_layers(data.image_shape, data.outputs, dropout), data.image_shape
    else:
        layers, shape = build_layers(args, data.features, data.outputs), None
    try:
        net = bp.Sequential(*layers, device=device, dtype=args.dtype, seed=args.seed, input_shape=shape)
        return net, build_optimizer(args, net)
    except MemoryError as exc:  # the network's message says how many parameters, on which device
        widths = ",".join(map(str, DEFAULT_HIDDEN if args.hidden is None else args.hidden))
        raise UsageError(f"--hidden {widths}: {exc}; choose smaller widths") from None


def images_for_cnn(args, data):
    """`data` laid out as images for --model cnn; a UsageError for flags or data that do not fit it."""
    given = [f"--{name.replace('_', '-')}" for name in MLP_ONLY if getattr(args, name) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to --model mlp only; "
                         "--model cnn has its own layers")
    if data.image_shape is None:
        raise UsageError(f"--model cnn needs images, but {data.name} has rows of {data.features} features; use "
                         "--dataset digits, idx:DIR, or npz:FILE with X of shape (samples, height, width)")
    return data.as_images()


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
    """"64 -> Dense 64->256 relu -> Dropout 0.3 -> Dense 256->10" ("1x8x8 -> Conv2D ..." for images)."""
    return " -> ".join(["x".join(map(str, net.input_shape))] + [layer.label() for layer in net.layers])


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


LOSSES = {"cross-entropy": "softmax cross-entropy", "mse": "mean squared error", "huber": "Huber loss"}


def loss_name(args, task: str) -> str:
    """--loss, or the task's default: cross-entropy for a classification, MSE for a regression;
    a loss that does not fit the task is a UsageError."""
    name = args.loss or ("cross-entropy" if task == "classification" else "mse")
    if (name == "cross-entropy") != (task == "classification"):
        wanted = "cross-entropy" if task == "classification" else "mse or huber"
        raise UsageError(f"--loss {name} does not fit a {task}; use {wanted}")
    return name


def run(args) -> int:
    device, device_note = pick_device(args.device)
    data = load_dataset(args.dataset, seed=args.seed, target=getattr(args, "target", None),
                        task=getattr(args, "task", None))
    if args.model == "cnn":
        data = images_for_cnn(args, data)
    loss_kind = loss_name(args, data.task)
    loss = {"cross-entropy": bp.CrossEntropyLoss, "mse": bp.MSELoss, "huber": bp.HuberLoss}[loss_kind]()
    net, opt = build_training(args, data, device)
    writes_files = not args.distributed or _is_root()
    out = args.out or new_run_folder()

    what = (f"{data.classes} classes" if data.task == "classification"
            else f"{data.outputs} target{'s' if data.outputs > 1 else ''}")
    print(f"data      {data.name}: {len(data.y_train)} training, {len(data.y_val)} validation, "
          f"{len(data.y_test)} test samples; {data.describe_examples()}, {what}"
          + ("" if data.task_note == "classification" else f"; {data.task_note}"))
    print(f"network   {describe_network(net)} ({net.num_parameters():,} parameters), {LOSSES[loss_kind]}")
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
        report = (classification_report if data.task == "classification" else regression_report)(net, data, test)
        per_epoch = seconds / max(history.epochs, 1)
        print(f"time      {history.epochs} epochs in {seconds:.2f} s, {1000 * per_epoch:.0f} ms per epoch, "
              f"on {net.device}")
        if writes_files:
            files = write_run(out, args, data, net, opt, history, report, seconds, interrupted)
            what = "saved what was trained so far to" if interrupted else "wrote    "
            print(f"{what} {out}{os.sep}: {', '.join(files)}")
    return INTERRUPTED if interrupted else 0


def classification_report(net, data, test: dict) -> dict:
    """Print the test accuracy and the per-class summary; returns the test record and the plot's
    panels (the confusion matrix, and the decision boundary of 2-D data)."""
    predicted = bp.predict(net, data.X_test).argmax(axis=1)
    confusion = confusion_matrix(data.y_test, predicted, data.classes)
    classes = per_class(confusion)
    correct = int(np.trace(confusion))
    print(f"test accuracy {100 * test['accuracy']:.2f}% ({correct}/{len(data.y_test)}), "
          f"test loss {test['loss']:.4f}")
    print(per_class_table(classes, data.class_names))
    panels = [confusion_panel(confusion, data.class_names)]
    if data.X_train.ndim == 2 and data.features == 2:
        panels.append(boundary_panel(lambda X: bp.predict(net, X).argmax(axis=1), data.X_test, data.y_test,
                                     data.class_names))
    return {"test": {"loss": test["loss"], "accuracy": test["accuracy"], "per_class": classes,
                     "confusion_matrix": confusion.tolist()}, "panels": panels}


def regression_report(net, data, test: dict) -> dict:
    """Print R^2 and MAE on the test set, in the targets' own units; returns the test record and
    the plot's panel (predicted against true)."""
    info = data.info
    true = info.unscale_targets(data.y_test)
    predicted = info.unscale_targets(bp.predict(net, data.X_test).reshape(true.shape))
    metrics = regression_metrics(true, predicted)
    print(f"test R^2 {metrics['r2']:.4f}, MAE {metrics['mae']:.4g}, test loss {test['loss']:.4f} "
          "(on standardised targets)")
    return {"test": {"loss": test["loss"], **metrics},
            "panels": [regression_panel(true, predicted, info.target_name or "target")]}


def write_run(out, args, data, net, opt, history, report, seconds, interrupted) -> list[str]:
    """The checkpoint, history.json and training.png in `out`; returns their names."""
    bp.save(net, os.path.join(out, "model.safetensors"), optimizer=opt, data_info=data.info)
    settings = {k: v for k, v in vars(args).items() if k != "run"}
    record = {
        "dataset": data.name, "task": data.task, "device": net.device, "dtype": net.dtype, "settings": settings,
        "class_names": data.class_names, **history.to_dict(), "seconds": seconds,
        "seconds_per_epoch": seconds / max(history.epochs, 1), "test": report["test"],
    }
    with open(os.path.join(out, "history.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, allow_nan=False)
        handle.write("\n")
    title = f"{data.name}: {describe_network(net)} on {net.device}" + (" (interrupted)" if interrupted else "")
    plot_training(history.history, os.path.join(out, "training.png"), report["panels"],
                  title=title, best_epoch=None if interrupted else history.best_epoch)
    return ["model.safetensors", "history.json", "training.png"]


def _is_root() -> bool:
    from backprop.distributed import is_root

    return is_root()
