"""Progress of a fit: a tqdm bar per epoch on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys


def _format(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


class EpochProgress:
    """Shows fit's progress. `enabled=False` shows nothing."""

    def __init__(self, epochs: int, batches: int, enabled: bool = True, stream=None):
        self.epochs, self.batches, self.enabled = epochs, batches, enabled
        self.stream = stream if stream is not None else sys.stderr
        self._bar = None
        self._tqdm = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: plain lines then
                tqdm = None
            self._tqdm = tqdm

    def _open(self, epoch: int) -> None:
        if self._tqdm is not None:
            self._bar = self._tqdm(total=self.batches, desc=f"epoch {epoch}/{self.epochs}", unit="batch",
                                   file=self.stream, leave=True, dynamic_ncols=True)

    def step(self) -> None:
        if self._tqdm is None:
            return
        if self._bar is None:
            self._open(getattr(self, "_epoch", 0) + 1)
        self._bar.update(1)

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        self._epoch = epoch
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(_format(metrics), refresh=True)
            self._bar.close()
            self._bar = None
        else:
            print(f"epoch {epoch}/{self.epochs}  {_format(metrics)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
