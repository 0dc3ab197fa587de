"""Callbacks: what `fit` tells the outside world while it trains, such as a progress display.

`fit(..., callbacks=[...])` calls, on every callback it is given,

    on_train_begin(epochs, batches_per_epoch)   once, before the first step
    on_batch_end()                              after every optimizer step
    on_epoch_end(epoch, metrics)                after each epoch, with its metrics
                                                (loss, accuracy, val_loss, val_accuracy)
    on_train_end()                              once, however fit ends (also on errors)

Override the ones you need. A callback that sets its `stop_training` to True (in on_epoch_end,
say) ends fit after the epoch, as early stopping does (`history.stopped_early`). `fit(progress=
True)` adds a `ProgressBar`. In data-parallel training only rank 0 calls them, and its decision
to stop is every rank's.
"""

from __future__ import annotations

import os
import sys
import time


class Callback:
    """Base of fit's callbacks: every hook does nothing; `stop_training = True` ends fit after
    the current epoch."""

    stop_training = False

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        pass

    def on_batch_end(self) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        pass

    def on_train_end(self) -> None:
        pass


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
    remaining time, a plain line the seconds the epoch took, validation included."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self._bar = None
        self._tqdm = None
        self._epoch = 0
        self._started = None  # perf_counter at the epoch's first step
        self.epochs = self.batches = 0

    def on_train_begin(self, epochs: int, batches_per_epoch: int) -> None:
        self.epochs, self.batches, self._epoch = epochs, batches_per_epoch, 0
        if getattr(self.stream, "isatty", lambda: False)() and _columns(self.stream) >= _MIN_COLUMNS:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: plain lines then
                tqdm = None
            self._tqdm = tqdm

    def _open(self, epoch: int) -> None:
        self._bar = self._tqdm(total=self.batches, desc=f"epoch {epoch}/{self.epochs}", unit="batch",
                               file=self.stream, leave=True, dynamic_ncols=True, bar_format=_BAR_FORMAT)

    def on_batch_end(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()
        if self._tqdm is None:
            return
        if self._bar is None:
            self._open(self._epoch + 1)
        self._bar.update(1)

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
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
