"""What guards fit's step, around it and never inside it.

- the update's checks (`checked_update`): before the optimizer touches the weights, the step's
  loss and gradient must be finite (one reduction and one read-back; with `clip_norm` that
  reduction is the gradient's squared norm, which the clipping then uses), and the first step
  at a learning rate is taken on a copy's back (`ProbedUpdate`);
- `LayerStateGuard`: what a diverged step's forward wrote into layer state is taken back;
- `DeferredInterrupt`: Ctrl-C becomes a flag checked between steps.

A failed check raises `StepNotFinite`, which fit turns into TrainingDivergedError naming the
epoch and batch.
"""

from __future__ import annotations

import math
import signal
import threading

from backprop.clipping import global_norm, scale_to_norm, squared_norm


class StepNotFinite(Exception):
    """A step's loss, gradient or update is not finite; `reason` says which, and what to do."""

    def __init__(self, reason: str, rolled_back: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.rolled_back = rolled_back  # True: the weights were put back (the probed step)


class ProbedUpdate:
    """The optimizer's update. The first step at a learning rate (of this fit, or after the lr
    changed): with finite gradients, an lr too large for the dtype still makes the update
    overflow. That step is taken on a copy's back: the parameters and optimizer state are kept,
    the result checked, and on a non-finite weight put back. Later steps at the same lr are not
    copied (a copy of every weight each step would cost too much); a divergence there shows in
    the next step's loss, which is checked before its update."""

    def __init__(self, net, optimizer):
        self.net, self.optimizer, self.backend = net, optimizer, net.backend
        self.probed_lr = None

    def __call__(self, loss, batch) -> None:
        optimizer = self.optimizer
        if optimizer.lr == self.probed_lr:
            optimizer.update()
            return
        backend, store = self.backend, self.net.store
        saved = [backend.copy(store.data)] + [backend.copy(buf) for buf in optimizer.state.values()]
        optimizer.update()
        self.probed_lr = optimizer.lr
        if backend.all_finite(store.data):
            return
        backend.copy(saved[0], out=store.data)
        for buf, kept in zip(optimizer.state.values(), saved[1:]):
            backend.copy(kept, out=buf)
        optimizer.step_count -= 1
        raise StepNotFinite(f"the update overflows the weights (lr={optimizer.lr} is too large for "
                            f"{self.net.dtype}); the network keeps the weights it had before this step. Lower "
                            "the learning rate.", rolled_back=True)


class FiniteUpdate:
    """`update` once the step's loss and gradient are known finite."""

    def __init__(self, net, update):
        self.backend, self.grad, self.update = net.backend, net.store.grad, update

    def __call__(self, loss, batch) -> None:
        if not self.backend.step_finite(loss, self.grad):
            raise _not_finite(self.backend, loss)
        self.update(loss, batch)


class ClippedUpdate:
    """`update` of the gradient clipped to `max_norm` (backprop/clipping.py), once the loss and
    the gradient's norm are known finite; the norm is the finiteness check's reduction."""

    def __init__(self, net, update, max_norm: float):
        self.backend, self.grad, self.update, self.max_norm = net.backend, net.store.grad, update, max_norm

    def __call__(self, loss, batch) -> None:
        backend, grad = self.backend, self.grad
        squared = backend.to_scalar(squared_norm(backend, grad)[0, 0])
        if not (math.isfinite(squared) or backend.all_finite(grad)) or not backend.all_finite(loss):
            raise _not_finite(backend, loss)
        scale_to_norm(grad, global_norm(backend, grad, squared), self.max_norm)
        self.update(loss, batch)


def _not_finite(backend, loss) -> StepNotFinite:
    what = "loss" if not backend.all_finite(loss) else "gradient"
    return StepNotFinite(f"the {what} is not finite (loss {backend.to_scalar(loss)})")


def checked_update(net, optimizer, clip_norm: float | None):
    """The optimizer's update behind the finiteness check (and the clipping, with clip_norm)."""
    update = ProbedUpdate(net, optimizer)
    if clip_norm is None:
        return FiniteUpdate(net, update)
    return ClippedUpdate(net, update, clip_norm)


class LayerStateGuard:
    """Takes back what a diverged step's forward wrote into layer state (every layer's buffers
    and counters: BatchNorm's running statistics, Dropout's step), so TrainingDivergedError
    leaves every layer as the last finite step left it. Per step: one device copy per buffer,
    one int per counter."""

    def __init__(self, net):
        self.net, self.backend = net, net.backend
        self.buffers = net.buffers()
        self.has_counters = any(layer.counters for layer in net.layers)
        self.active = bool(self.buffers or self.has_counters)  # False: nothing to save or restore
        self._saved = [self.backend.empty(b.shape) for b in self.buffers]
        self._counters: list[dict] = []

    def save(self) -> None:
        if self.has_counters:
            self._counters = self.net.counter_values()
        for buffer, saved in zip(self.buffers, self._saved):
            self.backend.copy(buffer, out=saved)

    def restore(self) -> None:
        if self.has_counters and self._counters:
            self.net.set_counters(self._counters)
        for buffer, saved in zip(self.buffers, self._saved):
            self.backend.copy(saved, out=buffer)


class DeferredInterrupt:
    """Turns SIGINT into a flag checked between steps, so a step is never left half done."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        # Only the main thread may set handlers; and a process that ignores SIGINT (a pool
        # worker, `nohup`) keeps ignoring it: Ctrl-C is not ours to turn back on.
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
