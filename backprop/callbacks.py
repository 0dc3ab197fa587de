"""Callbacks: what runs beside `fit`'s steps: a progress display, early stopping, checkpoints, a log.

The protocol. `fit(..., callbacks=[...])` gives every callback the training it joins, then
calls its hooks:

    set_training(net, optimizer, scheduler, history, is_root)
                                                once, first: `self.net`, `self.optimizer`,
                                                `self.scheduler` (or None), `self.history` (the
                                                History being filled), `self.is_root`, as
                                                Keras's callbacks reach `self.model`
    on_train_begin(epochs, batches_per_epoch)   once, before the first step
    on_epoch_begin(epoch)                       before each epoch's first step (epochs from 1)
    on_batch_end()                              after every optimizer step
    on_epoch_end(epoch, metrics)                after each epoch, with its metrics: the
                                                History's keys (loss, accuracy, val_loss, ...),
                                                the schedule already stepped
    on_train_end()                              once, however fit ends (also on errors)

Override the ones you need. A callback that sets its `stop_training` to True (in on_epoch_end,
say) ends fit after the epoch (`history.stopped_early`); fit sets it back to False when it starts.

In data-parallel training every rank runs every callback, on the same metrics (rank 0's): what
changes the training state (the weights early stopping restores, a learning rate) happens on
every rank alike, and a callback writes files or the console only where `self.is_root` (rank 0).
A stop is rank 0's decision, and every rank stops at the same epoch.

Built-ins: `ProgressBar` (what `fit(progress=True)` adds), `EarlyStopping` (what
`fit(early_stopping=k)` adds), `ModelCheckpoint`, `CSVLogger`.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time

from backprop.checks import check_bool, check_int, check_real


class Callback:
    """Base of fit's callbacks: every hook does nothing; `stop_training = True` ends fit after
    the current epoch. The training it joins is set before on_train_begin (`set_training`)."""

    stop_training = False
    net = optimizer = scheduler = history = None
    is_root = True

    def set_training(self, net, optimizer, scheduler, history, is_root: bool) -> None:
        self.net, self.optimizer, self.scheduler, self.history = net, optimizer, scheduler, history
        self.is_root = is_root

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        pass

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def on_batch_end(self) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        pass

    def on_train_end(self) -> None:
        pass


def _check_monitor(monitor) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be the name of a History key such as 'val_loss', got {monitor!r}")
    return monitor


def monitored(owner: str, monitor: str, metrics: dict) -> float:
    """metrics[monitor]; "val_loss" falls back to "loss" when fit has no validation data."""
    if monitor in metrics:
        return metrics[monitor]
    if monitor == "val_loss" and "loss" in metrics:
        return metrics["loss"]
    raise ValueError(f"{owner} monitors {monitor!r}, which this fit does not record; it records "
                     f"{', '.join(metrics)}")


class _Improvement:
    """The best value seen so far of a quantity to minimise; an improvement is value < best - min_delta."""

    def __init__(self, min_delta: float = 0.0):
        self.min_delta = min_delta
        self.best = math.inf

    def __call__(self, value: float) -> bool:
        if value < self.best - self.min_delta:
            self.best = value
            return True
        return False


class EarlyStopping(Callback):
    """Stop when `monitor` (a History key to minimise; "val_loss" is the training loss when fit
    has no validation data) has not improved for `patience` epochs, an improvement being
    value < best - min_delta. `restore_best_weights`: when it stops, and at fit's last epoch,
    put back the weights and layer buffers of the best epoch (`history.best_epoch`). Layer
    counters are not put back: they count steps taken, so later dropout masks stay fresh."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best_weights: bool = True):
        self.monitor = _check_monitor(monitor)
        self.patience = check_int("patience", patience, 0, wanted="a non-negative integer")
        self.min_delta = check_real("min_delta", min_delta)
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        self.epochs = epochs
        self._improvement = _Improvement(self.min_delta)
        self._waited, self._best_state = 0, None

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if self._improvement(monitored("EarlyStopping", self.monitor, metrics)):
            self._waited = 0
            self.history.best_epoch = epoch
            if self.restore_best_weights:
                self._best_state = _snapshot(self.net)
        else:
            self._waited += 1
            if self._waited >= self.patience:
                self.stop_training = True
        if self._best_state is not None and (self.stop_training or epoch == self.epochs):
            _restore(self.net, self._best_state)


def _snapshot(net) -> tuple:
    """Copies of the weights and layer buffers (on the network's device)."""
    backend = net.backend
    return backend.copy(net.store.data), [backend.copy(b) for b in net.buffers()]


def _restore(net, state) -> None:
    data, buffers = state
    backend = net.backend
    backend.copy(data, out=net.store.data)
    for buffer, saved in zip(net.buffers(), buffers):
        backend.copy(saved, out=buffer)


class ModelCheckpoint(Callback):
    """Save the network, its optimizer and schedule (`bp.save`; `bp.load(path, optimizer=True,
    scheduler=True)` reads them back) to `path` at the end of an epoch: with `save_best_only`,
    only when `monitor` improved on the best value so far (so the file holds the best epoch),
    else every epoch. Each save writes a new file and renames it over the old one, so `path`
    always holds a whole checkpoint. Written by rank 0 only."""

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file name such as 'best.safetensors', got {type(path).__name__} "
                            f"{path!r}")
        self.path = os.fspath(path)
        self.monitor = _check_monitor(monitor)
        self.save_best_only = check_bool("save_best_only", save_best_only)

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        from backprop.checkpoint import _check_save_arguments

        # a network or optimizer a checkpoint cannot hold is refused before the first step
        _check_save_arguments(self.net, self.path, self.optimizer, self.scheduler, None)
        self._improvement = _Improvement()

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        improved = self._improvement(monitored("ModelCheckpoint", self.monitor, metrics))
        if self.is_root and (improved or not self.save_best_only):
            from backprop.checkpoint import save

            save(self.net, self.path, optimizer=self.optimizer, scheduler=self.scheduler)


class CSVLogger(Callback):
    """Write the History to a CSV file at `path` as fit goes: a header of `epoch` and the
    History's keys, then a row per epoch (epochs counted from 1 in each fit), each value at full
    precision (Python's repr of the float). Written by rank 0 only; each row is flushed."""

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file name such as 'history.csv', got {type(path).__name__} {path!r}")
        self.path = os.fspath(path)
        self._file = self._writer = None

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        if self.is_root:
            self._file = open(self.path, "w", newline="", encoding="utf-8")
            self._writer = None

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if self._file is None:
            return
        if self._writer is None:
            self._writer = csv.writer(self._file)
            self._writer.writerow(["epoch", *metrics])
        self._writer.writerow([epoch, *(repr(float(v)) for v in metrics.values())])
        self._file.flush()

    def on_train_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# Shorter names in the bar, so the numbers still fit an 80-column terminal next to it.
_SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}
# The bar: elapsed and remaining time. Once the epoch ends, its line gives the time it took and
# its metrics instead, which fit 80 columns with the validation metrics.
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:12}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"
_END_FORMAT = "{desc} [{elapsed}]{postfix}"
# Narrower terminals (a pseudo-terminal that reports 0 columns, say) get the plain lines too.
_MIN_COLUMNS = 40


def _format(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


class ProgressBar(Callback):
    """fit's progress: a tqdm bar per epoch on a terminal (when tqdm is installed), one plain line
    per epoch otherwise. Each epoch ends with its metrics; the bar also shows the elapsed and
    remaining time, a plain line the seconds the epoch took, validation included. Shown by
    rank 0 only."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self._bar = None
        self._tqdm = None
        self._epoch = 0
        self._started = None  # perf_counter at the epoch's first step
        self.epochs = self.batches = 0

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        self.epochs, self.batches, self._epoch = epochs, batches_per_epoch, 0
        self._tqdm = None
        if self.is_root and getattr(self.stream, "isatty", lambda: False)() \
                and _columns(self.stream) >= _MIN_COLUMNS:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: plain lines then
                tqdm = None
            self._tqdm = tqdm

    def _open(self, epoch: int) -> None:
        self._bar = self._tqdm(total=self.batches, desc=f"epoch {epoch}/{self.epochs}", unit="batch",
                               file=self.stream, leave=True, dynamic_ncols=True, bar_format=_BAR_FORMAT)

    def on_batch_end(self) -> None:
        if not self.is_root:
            return
        if self._started is None:
            self._started = time.perf_counter()
        if self._tqdm is None:
            return
        if self._bar is None:
            self._open(self._epoch + 1)
        self._bar.update(1)

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if not self.is_root:
            return
        self._epoch = epoch
        seconds = 0.0 if self._started is None else time.perf_counter() - self._started
        self._started = None
        if self._bar is not None:
            self._bar.bar_format = _END_FORMAT
            self._bar.set_postfix_str(" ".join(f"{_SHORT.get(k, k)} {v:.3f}" for k, v in metrics.items()),
                                      refresh=True)
            self._bar.close()
            self._bar = None
        else:
            print(f"epoch {epoch}/{self.epochs}  {_format(metrics)}  {seconds:.2f} s", file=self.stream, flush=True)

    def on_train_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _columns(stream) -> int:
    """The width of the terminal `stream` writes to (0 where it does not say)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0
