"""Progress of a fit: a tqdm bar per epoch on a terminal, one plain line per epoch otherwise.

Each epoch ends with its metrics (loss, accuracy, val_loss, val_accuracy); the bar also shows
the elapsed and remaining time, a plain line the seconds the epoch took, validation included.
"""

from __future__ import annotations

import sys
import time


# Shorter names in the bar, so the numbers still fit an 80-column terminal next to it.
_SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}
# The bar: elapsed and remaining time, then the epoch's metrics once it ends.
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:12}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"


def _format(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


class EpochProgress:
    """Shows fit's progress. `enabled=False` shows nothing."""

    def __init__(self, epochs: int, batches: int, enabled: bool = True, stream=None):
        self.epochs, self.batches, self.enabled = epochs, batches, enabled
        self.stream = stream if stream is not None else sys.stderr
        self._bar = None
        self._tqdm = None
        self._epoch = 0
        self._started = None  # perf_counter at the epoch's first step
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: plain lines then
                tqdm = None
            self._tqdm = tqdm

    def _open(self, epoch: int) -> None:
        self._bar = self._tqdm(total=self.batches, desc=f"epoch {epoch}/{self.epochs}", unit="batch",
                               file=self.stream, leave=True, dynamic_ncols=True, bar_format=_BAR_FORMAT)

    def step(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()
        if self._tqdm is None:
            return
        if self._bar is None:
            self._open(self._epoch + 1)
        self._bar.update(1)

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        self._epoch = epoch
        seconds = 0.0 if self._started is None else time.perf_counter() - self._started
        self._started = None
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(" ".join(f"{_SHORT.get(k, k)} {v:.3f}" for k, v in metrics.items()),
                                      refresh=True)
            self._bar.close()
            self._bar = None
        else:
            print(f"epoch {epoch}/{self.epochs}  {_format(metrics)}  {seconds:.2f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
