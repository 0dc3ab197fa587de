"""ReduceLROnPlateau: a learning rate that drops when a monitored value stops improving.

The schedules of backprop/optim.py set the lr from the epoch count alone; this one reads a value
each epoch (`fit(scheduler=...)` gives it the validation loss, or the training loss without
validation data). PyTorch's algorithm and defaults exactly (torch.optim.lr_scheduler.ReduceLROnPlateau):

    step(value):  epoch += 1
                  if better(value, best):  best = value; bad = 0   else: bad += 1
                  if cooldown_counter > 0:  cooldown_counter -= 1; bad = 0
                  if bad > patience:        lr' = max(lr factor, min_lr), taken if lr - lr' > eps;
                                            cooldown_counter = cooldown; bad = 0

    better(a, best), mode "min":  a < best (1 - threshold)   (threshold_mode "rel")
                                  a < best - threshold       ("abs")
                     mode "max":  a > best (1 + threshold), a > best + threshold

`best` starts at +inf ("min") or -inf ("max"). Its state (best, the bad epochs, the cooldown
counter, the epochs stepped) is kept in checkpoints, so a resumed run goes on exactly.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from backprop.checks import check_int, check_real
from backprop.optim import SCHEDULERS as EPOCH_SCHEDULERS
from backprop.optim import LRScheduler

MODES = ("min", "max")
THRESHOLD_MODES = ("rel", "abs")


def _choice(name: str, value, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by `factor` once the monitored value has not improved for more than
    `patience` epochs (see the module docstring), as PyTorch's ReduceLROnPlateau."""

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8):
        super().__init__(optimizer)
        self.mode = _choice("mode", mode, MODES)
        self.factor = check_real("factor", factor, 0.0, 1.0, high_open=True)
        self.patience = check_int("patience", patience, 0, wanted="a non-negative integer")
        self.threshold = check_real("threshold", threshold)
        self.threshold_mode = _choice("threshold_mode", threshold_mode, THRESHOLD_MODES)
        self.cooldown = check_int("cooldown", cooldown, 0, wanted="a non-negative integer")
        self.min_lr = check_real("min_lr", min_lr)
        self.eps = check_real("eps", eps)
        self.best = self._worst
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @property
    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def is_better(self, value: float, best: float) -> bool:
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, value) -> None:
        """One epoch's `value` of the monitored quantity (NaN counts as no improvement); refused
        while another thread trains the optimizer's network, as every schedule's step."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)) \
                or np.ndim(value) != 0:
            raise TypeError(f"value must be a real number (the monitored loss), got {type(value).__name__} "
                            f"{value!r}")
        with self.optimizer.store.owner.usage.training("a schedule's step()"):  # fit steps it itself
            self._step_with(float(value))

    def _step_with(self, current: float) -> None:
        self.epoch += 1
        if self.is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def hyperparameters(self) -> dict:
        return {"mode": self.mode, "factor": self.factor, "patience": self.patience, "threshold": self.threshold,
                "threshold_mode": self.threshold_mode, "cooldown": self.cooldown, "min_lr": self.min_lr,
                "eps": self.eps}

    # -- checkpoints: what the epoch count alone does not give
    def plateau_state(self) -> dict:
        """The state beyond (base_lr, epoch), as JSON: `best` is None while no value improved on
        the starting +-inf."""
        best = None if self.best == self._worst else self.best
        return {"best": best, "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter}

    def load_plateau_state(self, state: dict) -> None:
        """Continue from `plateau_state()`'s record, every value checked before any is set."""
        if not isinstance(state, dict) or set(state) != {"best", "num_bad_epochs", "cooldown_counter"}:
            raise ValueError(f"the plateau state must hold best, num_bad_epochs and cooldown_counter, got {state!r}")
        best = self._worst if state["best"] is None else check_real("best", state["best"], -math.inf)
        bad = check_int("num_bad_epochs", state["num_bad_epochs"], 0, wanted="a non-negative integer")
        counter = check_int("cooldown_counter", state["cooldown_counter"], 0, wanted="a non-negative integer")
        if counter > self.cooldown:
            raise ValueError(f"cooldown_counter must be at most cooldown={self.cooldown}, got {counter}")
        self.best, self.num_bad_epochs, self.cooldown_counter = best, bad, counter


# Every schedule a checkpoint can hold, by the name it is recorded under.
SCHEDULERS = {**EPOCH_SCHEDULERS, "plateau": ReduceLROnPlateau}
