"""Training and inference: fit, predict, evaluate.

`fit` checks its arguments and the whole data once, converts the data once to the network's
device, then runs epochs of mini-batch steps:

    for each batch:  pred = forward(x)                     (layers in order)
                     loss, dL/dpred = loss(pred, y)        (one fused op)
                     backward(dL/dpred)                    (layers in reverse; fills .grad)
                     reduce the gradient over the ranks    (nothing in one process)
                     stop if loss or gradient is not finite (one reduction, one read-back)
                     optimizer.step()                      (one pass over the flat buffer)

The running loss and accuracy stay on the device and are read back once per epoch. One process
is data-parallel training on a group of one (backprop/parallel.py), so there is one loop.
Everything runs with the network's device current.
"""

from __future__ import annotations

import math
import signal
import threading

import numpy as np

from backprop.boundary import host_examples
from backprop.callbacks import Callback, ProgressBar
from backprop.checks import check_int, check_real
from backprop.losses import Loss, check_loss, checked_target, target_on_device
from backprop.optim import Adam, LRScheduler, Optimizer
from backprop.parallel import DataParallel, SingleProcess


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradients stopped being finite; the network keeps its last finite weights."""

    def __init__(self, message: str, epoch: int, batch: int, history: "History"):
        super().__init__(message)
        self.epoch, self.batch, self.history = epoch, batch, history


class History:
    """Per-epoch metrics of a fit: `history["loss"]`, `"accuracy"`, `"val_loss"`, `"val_accuracy"`.

    Each value is the mean over the epoch's batches weighted by batch size (regularization
    included in the losses). `best_epoch` is the epoch whose weights early stopping restored.
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epochs = 0
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.interrupted = False

    def record(self, **metrics: float) -> None:
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs += 1

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def to_dict(self) -> dict:
        return {"history": self.history, "epochs": self.epochs, "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early, "interrupted": self.interrupted}

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs}, last={last})"


# ---------------------------------------------------------------------- the data, checked once


def examples_and_targets(net, loss: Loss, X, y, x_name: str = "X", y_name: str = "y"):
    """(X, y) checked as a whole and converted for `loss`, as host arrays: X in the network's
    dtype, y in the loss's form (class labels stay int64)."""
    if len(net.output_shape) != 1:
        raise ValueError(f"the network's output has shape {net.output_shape} per example, but losses take one "
                         "vector per example; end the network with Flatten() or a Dense layer")
    X_host = host_examples(net.backend, X, net.input_shape, x_name)
    Y_host = checked_target(loss, y, X_host.shape[0], net.out_features, y_name, x_name)
    return X_host, Y_host


def _checked_data(net, loss, optimizer, X, y, validation_data) -> tuple:
    """(X, y, X_val, y_val) checked on the host (the validation part None without validation_data)."""
    X_host, Y_host = examples_and_targets(net, loss, X, y)
    X_val = Y_val = None
    if validation_data is not None:
        X_val, Y_val = examples_and_targets(net, loss, *validation_data, "validation_data[0]", "validation_data[1]")
    _check_no_overlap(net, optimizer, {"X": X_host, "y": Y_host, "validation_data[0]": X_val,
                                       "validation_data[1]": Y_val})
    return X_host, Y_host, X_val, Y_val


def _agreed(comm, check):
    """check()'s result, or a refusal on every rank: a rank refusing its data alone would leave
    the others waiting in the first collective."""
    try:
        result, refused = check(), None
    except (TypeError, ValueError) as exc:
        result, refused = None, exc
    if comm.any(refused is not None):
        if refused is not None:
            raise refused
        raise ValueError("another rank refused its data (its own error says why); every rank must call fit "
                         "with the same data")
    return result


def _split(X_host, Y_host, validation_split: float, seed: int):
    """(X_train, Y_train, X_val, Y_val): that fraction of the samples, drawn with `seed`, held out."""
    n = X_host.shape[0]
    n_val = int(round(validation_split * n))
    if n_val == 0 or n_val == n:
        raise ValueError(f"validation_split={validation_split} leaves {n_val} validation samples out "
                         f"of {n}; choose a split that keeps both parts non-empty")
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return X_host[train_idx], Y_host[train_idx], X_host[val_idx], Y_host[val_idx]


# ---------------------------------------------------------------------- arguments, checked once


def _check_fit_arguments(net, loss, optimizer, epochs, batch_size, validation_data, validation_split,
                         early_stopping, seed, scheduler, callbacks):
    """Every argument of fit that is not data, checked before anything runs; returns
    (optimizer, epochs, batch_size, early_stopping, seed, callbacks) normalized."""
    check_loss(loss, net)
    epochs = check_int("epochs", epochs, wanted="a positive integer")
    batch_size = check_int("batch_size", batch_size, wanted="a positive integer")
    if optimizer is None:
        optimizer = Adam(net.parameters())
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a backprop optimizer (e.g. bp.Adam(net.parameters())), "
                        f"got {type(optimizer).__name__}")
    if optimizer.store is not net.store:
        raise ValueError("optimizer was built for another network's parameters")
    optimizer._check_device()
    if early_stopping is not None:
        early_stopping = check_int("early_stopping", early_stopping, wanted="a positive integer")
    validation_split = check_real("validation_split", validation_split, 0.0, 1.0, high_open=True)
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(f"validation_data must be a pair (X_val, y_val), got {type(validation_data).__name__}"
                             + (f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list))
                                else ""))
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be a backprop schedule (e.g. bp.StepLR(optimizer, 10)), "
                        f"got {type(scheduler).__name__}")
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("scheduler was built for another optimizer")
    seed = net.seed if seed is None else check_int("seed", seed, 0, wanted="a non-negative integer or None")
    callbacks = list(callbacks)
    stranger = next((c for c in callbacks if not isinstance(c, Callback)), None)
    if stranger is not None:
        raise TypeError(f"callbacks must hold bp.Callback objects, got {type(stranger).__name__}")
    return optimizer, epochs, batch_size, early_stopping, seed, callbacks


def _communicator(net, distributed):
    """The group fit runs on: one process, MPI/NCCL for the network's device, or the one given."""
    if distributed is False or distributed is None:
        return SingleProcess()
    if distributed is True:
        from backprop.distributed import communicator_for

        return communicator_for(net)
    return distributed


# ---------------------------------------------------------------------- Ctrl-C at batch boundaries


class _DeferredInterrupt:
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


# ---------------------------------------------------------------------- fit


def fit(net, X, y, loss: Loss = None, optimizer: Optimizer | None = None, epochs: int = 10,
        batch_size: int = 32, shuffle: bool = True, validation_data=None, validation_split: float = 0.0,
        early_stopping: int | None = None, progress: bool = True, seed: int | None = None,
        scheduler: LRScheduler | None = None, distributed=False, callbacks=()) -> History:
    """Train `net` on (X, y) by mini-batch backpropagation; returns a `History`.

    - `loss`: a backprop loss (required); `optimizer`: defaults to Adam(net.parameters()).
    - One epoch is ceil(n / batch_size) iterations (2000 samples at batch 20: 100 iterations).
    - `validation_data=(X_val, y_val)`, or `validation_split` in [0, 1): that fraction of the
      samples, drawn at random with `seed`, is held out.
    - `early_stopping=k`: stop after k epochs without improvement of the validation loss (the
      training loss when there is no validation data) and restore the best weights.
    - `scheduler`: an LR schedule stepped once per epoch.
    - `seed` (default: the network's seed) fixes the validation split and the shuffles: epoch e
      of the network's life (`net.epochs_trained`, kept in checkpoints) is shuffled from
      (seed, e) alone, so the same seed gives the same training, and a resumed run continues
      exactly as an uninterrupted one.
    - `progress=True` shows a ProgressBar; `callbacks` are more bp.Callback objects (one that
      sets its `stop_training` ends fit after the epoch).
    - If the loss or a gradient becomes NaN/inf, raises TrainingDivergedError before the update
      that would poison the weights (layer state is taken back to the last finite step too).
      Ctrl-C stops after the current step and re-raises KeyboardInterrupt; `net.history` holds
      the history of the epochs completed so far.
    - `distributed=True` (in processes started by `mpirun`): data-parallel over MPI, or NCCL for
      a CUDA network; every rank passes the same arguments and computes its shard of every
      batch, with the result of one process at the same batch_size (see backprop/parallel.py).
    Leaves the network in eval mode.
    """
    optimizer, epochs, batch_size, early_stopping, seed, callbacks = _check_fit_arguments(
        net, loss, optimizer, epochs, batch_size, validation_data, validation_split, early_stopping, seed,
        scheduler, callbacks)
    backend = net.backend
    token = net.usage.begin_training("fit")
    try:
        with backend.on_device():
            return _fit_on_device(net, loss, optimizer, X, y, epochs, batch_size, shuffle, validation_data,
                                  validation_split, early_stopping, progress, seed, scheduler, distributed, callbacks)
    finally:
        net.usage.end_training(token)


def _fit_on_device(net, loss, optimizer, X, y, epochs, batch_size, shuffle, validation_data, validation_split,
                   early_stopping, progress, seed, scheduler, distributed, callbacks) -> History:
    backend = net.backend
    comm = _communicator(net, distributed)
    X_host, Y_host, X_val, Y_val = _agreed(comm, lambda: _checked_data(net, loss, optimizer, X, y, validation_data))
    parallel = DataParallel(net, optimizer, loss, seed, comm)  # from here every rank starts as rank 0
    if validation_split:
        X_host, Y_host, X_val, Y_val = _split(X_host, Y_host, validation_split, parallel.seed)
    parallel.begin(X_host.shape[0], batch_size, epochs=epochs, shuffle=shuffle,
                   validation=None if X_val is None else X_val.shape[0], early_stopping=early_stopping)
    if progress and parallel.is_root:
        callbacks.append(ProgressBar())
    if not parallel.is_root:
        callbacks = []
    train = (backend.asarray(X_host), target_on_device(backend, Y_host))
    val = None if X_val is None else (backend.asarray(X_val), target_on_device(backend, Y_val))
    return _train(net, loss, optimizer, scheduler, train, val, epochs, batch_size, shuffle, early_stopping,
                  parallel, callbacks)


def _check_no_overlap(net, optimizer, data: dict) -> None:
    """Refuse data that shares memory with what training writes (the parameters, gradients,
    optimizer state, layer buffers): fit would train on data that moves under it. Checked, not
    copied: copying every user's data would cost every fit call its size."""
    written = [net.store.data, net.store.grad, *optimizer.state.values(), *net.buffers()]
    for name, array in data.items():
        if isinstance(array, np.ndarray) and any(np.may_share_memory(array, w) for w in written
                                                 if isinstance(w, np.ndarray)):
            raise ValueError(f"{name} shares memory with the network's own buffers (its parameters, gradients, "
                             f"optimizer state or layer state), which training overwrites; pass a copy "
                             f"({name.split('[')[0]}.copy())")


def _train(net, loss, optimizer, scheduler, train, val, epochs, batch_size, shuffle, early_stopping,
           parallel, callbacks) -> History:
    backend = net.backend
    history = History()
    net.history = history
    trainer = _Trainer(net, loss, optimizer, batch_size, parallel)
    n = train[0].shape[0]
    monitor = "val_loss" if val is not None else "loss"
    best_value, best_state, waited = math.inf, None, 0
    try:
        for callback in callbacks:
            callback.on_train_begin(epochs, trainer.batches_per_epoch(n))
        with _DeferredInterrupt() as interrupt, np.errstate(all="ignore"):
            for epoch in range(1, epochs + 1):
                order = _epoch_order(parallel.seed, net.epochs_trained, n) if shuffle else None
                metrics = trainer.run_epoch(*train, order, epoch, history, interrupt, callbacks)
                if not backend.all_finite(net.store.data):  # an update after the checked first one overflowed
                    trainer.diverged(epoch, trainer.batches_per_epoch(n), history, "weights")
                net.epochs_trained += 1
                if val is not None:
                    val_metrics = _evaluate_device(net, loss, *val, batch_size=max(batch_size, 1024))
                    metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
                metrics = parallel.shared_metrics(metrics)  # rank 0's numbers decide on every rank
                history.record(**metrics)
                for callback in callbacks:
                    callback.on_epoch_end(epoch, metrics)
                if scheduler is not None:
                    scheduler.step()
                if parallel.any(interrupt.requested):
                    history.interrupted = True
                    raise KeyboardInterrupt
                if parallel.any(any(callback.stop_training for callback in callbacks)):
                    history.stopped_early = True  # a callback's rule (rank 0's, on every rank)
                    break
                if early_stopping is not None:
                    if metrics[monitor] < best_value:
                        best_value, best_state, waited = metrics[monitor], _snapshot(net), 0
                        history.best_epoch = epoch
                    else:
                        waited += 1
                        if waited >= early_stopping:
                            history.stopped_early = True
                            break
            if best_state is not None:
                _restore(net, best_state)
    finally:
        for callback in callbacks:
            callback.on_train_end()
        net.eval()
        parallel.close()
    return history


class _Trainer:
    """The per-step loop of fit, with the batch workspaces it reuses."""

    def __init__(self, net, loss, optimizer, batch_size, parallel):
        self.net, self.loss, self.optimizer, self.batch_size = net, loss, optimizer, batch_size
        self.parallel = parallel
        self.backend = net.backend
        self._ws: dict = {}
        self._layer_state = _LayerStateGuard(net)
        self._probed_lr = None  # the learning rate whose first step was checked (_probed_step)

    def _probed_step(self, epoch, batch, history) -> None:
        """The first step at a learning rate (of this fit, or after the lr changed): with finite
        gradients, an lr too large for the dtype still makes the update overflow. That step is
        taken on a copy's back: the parameters and optimizer state are kept, the result
        checked, and on a non-finite weight put back before TrainingDivergedError. Later steps
        at the same lr are not copied (a copy of every weight each step would cost too much);
        a divergence there shows in the next step's loss, which is checked before its update."""
        backend, optimizer, store = self.backend, self.optimizer, self.net.store
        saved = [backend.copy(store.data)] + [backend.copy(buf) for buf in optimizer.state.values()]
        optimizer.update()
        self._probed_lr = optimizer.lr
        if backend.all_finite(store.data):
            return
        backend.copy(saved[0], out=store.data)
        for buf, kept in zip(optimizer.state.values(), saved[1:]):
            backend.copy(kept, out=buf)
        optimizer.step_count -= 1
        self._layer_state.restore()
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}, batch {batch}: the update overflows the weights "
            f"(lr={optimizer.lr} is too large for {self.net.dtype}); the network keeps the weights it had "
            "before this step. Lower the learning rate.", epoch, batch, history)

    def diverged(self, epoch: int, batch: int, history, what: str, detail: str = ""):
        """Raise TrainingDivergedError for a non-finite `what` at (epoch, batch), saying what the
        network holds: the weights of the last finite step, or, when an update after a learning
        rate's first step overflowed them (only the first is taken on a copy), weights that are
        not finite themselves."""
        lr = self.optimizer.lr
        if self.backend.all_finite(self.net.store.data):
            kept = "the network keeps the weights of the last finite step"
        else:
            kept = ("an update overflowed the weights, which are not finite now (only the first step at a "
                    "learning rate is kept to undo): reload or rebuild the network")
        raise TrainingDivergedError(f"training diverged at epoch {epoch}, batch {batch}: the {what} is not finite"
                                    f"{detail}; {kept}. Lower the learning rate (lr={lr}).", epoch, batch, history)

    def batches_per_epoch(self, n: int) -> int:
        return -(-n // self.batch_size)

    def _gather(self, name, source, index):
        """source[index] along the rows, into a workspace reused while the batch size holds.
        Gathered as 2-D (rows, values per row), then seen with the example shape."""
        backend = self.backend
        flat = backend.reshape(source, (source.shape[0], -1)) if source.ndim > 2 else source
        out = self._ws.get(name)
        if out is None or out.shape[0] != index.shape[0]:
            out = self._ws[name] = backend.take_rows(flat, index)
        else:
            backend.take_rows(flat, index, out=out)
        return out if source.ndim <= 2 else backend.reshape(out, (index.shape[0],) + source.shape[1:])

    def run_epoch(self, X, Y, order, epoch, history, interrupt, callbacks) -> dict:
        net, loss, backend, parallel = self.net, self.loss, self.backend, self.parallel
        n = X.shape[0]
        net.train()
        order_dev = None if order is None else backend.asarray_int(order)
        # Fixed for the epoch, so a step repeats none of it (a tiny network's step is a few NumPy calls).
        bounds = [(start, min(start + self.batch_size, n)) for start in range(0, n, self.batch_size)]
        has_penalty = net.penalty_internal() is not None
        guard_state = self._layer_state.active
        grad_buffer = net.store.grad
        step_callbacks = [c.on_batch_end for c in callbacks if type(c).on_batch_end is not Callback.on_batch_end]
        loss_sum, correct, counted = None, None, 0
        for batch, (start, stop) in enumerate(bounds, start=1):
            if parallel.any(interrupt.requested):
                history.interrupted = True  # Ctrl-C during the previous step: stop between steps
                raise KeyboardInterrupt
            batch_rows = stop - start
            start, stop = parallel.shard(start, stop)  # this rank's rows of the batch
            rows = stop - start
            if order_dev is None:
                xb, yb = X[start:stop], Y[start:stop]
            else:
                index = order_dev[start:stop]
                xb, yb = self._gather("x", X, index), self._gather("y", Y, index)
            if guard_state:
                self._layer_state.save()
            penalty = None
            if rows == 0:  # no rows for this rank in a tiny last batch: it sends zeros
                value, pred = parallel.empty_shard(), None
            else:
                pred = net.forward_internal(xb, training=True)
                value, grad = loss.value_and_grad(backend, pred, yb)
                value = parallel.scale_loss(value, grad, rows, batch_rows)
                if has_penalty:
                    penalty = net.penalty_internal()
                net.backward_internal(grad)
            step_loss = value if penalty is None else value + penalty
            parallel.reduce_gradients(step_loss, rows, batch_rows)  # the whole batch's gradient on every rank
            if not backend.step_finite(step_loss, grad_buffer):
                self._layer_state.restore()
                self.diverged(epoch, batch, history, "loss" if not backend.all_finite(step_loss) else "gradient",
                              f" (loss {backend.to_scalar(step_loss)})")
            if self.optimizer.lr != self._probed_lr:
                self._probed_step(epoch, batch, history)
            else:
                self.optimizer.update()
            share = _epoch_loss_share(loss, value, penalty, rows, batch_rows, n)
            loss_sum = share if loss_sum is None else loss_sum + share
            scored = None if pred is None else loss.count_correct(backend, pred, yb)
            if scored is not None:
                correct = scored[0] if correct is None else correct + scored[0]
                counted += scored[1]
            for on_batch_end in step_callbacks:
                on_batch_end()
        return parallel.epoch_metrics(loss_sum, correct, counted, n)


def _epoch_loss_share(loss, value, penalty, rows: int, batch_rows: int, n: int):
    """This step's share of n x the epoch's loss (fit divides the sum by the n samples).

    The data term follows the loss's reduction over the whole epoch, as evaluate() reports it:
    "mean" weighs each batch's mean by its rows; "sum" adds each batch's total (on N ranks, this
    rank's part of it: `value` is its own total scaled by batch_rows / rows). The penalty enters
    as a batch-size-weighted mean, so it counts once whatever the number of batches.
    """
    if loss.reduction == "mean":
        share = value * rows
    else:
        share = value * (n * rows / batch_rows)
    return share if penalty is None else share + penalty * rows


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of the network's `epoch`-th epoch (counted over all fits): a function of
    (seed, epoch) alone, so fit(epochs=2) twice, or a run resumed from a checkpoint, shuffles
    exactly as one fit(epochs=4) does."""
    return np.random.default_rng((seed, epoch)).permutation(n)


class _LayerStateGuard:
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


def _snapshot(net) -> tuple:
    """What early stopping restores: the weights and layer buffers of the best epoch. Not the
    counters: they count steps taken, so later dropout masks stay fresh."""
    backend = net.backend
    return backend.copy(net.store.data), [backend.copy(b) for b in net.buffers()]


def _restore(net, state) -> None:
    data, buffers = state
    backend = net.backend
    backend.copy(data, out=net.store.data)
    for buffer, saved in zip(net.buffers(), buffers):
        backend.copy(saved, out=buffer)


# ---------------------------------------------------------------------- inference


def _evaluate_device(net, loss, X, Y, batch_size: int) -> dict:
    backend = net.backend
    n = X.shape[0]
    loss_sum, correct, counted = None, None, 0
    for start in range(0, n, batch_size):
        xb, yb = X[start:start + batch_size], Y[start:start + batch_size]
        pred = net.forward_internal(xb, training=False)
        value, _ = loss.value_and_grad(backend, pred, yb)
        rows = xb.shape[0]
        weighted = value * rows if loss.reduction == "mean" else value
        loss_sum = weighted if loss_sum is None else loss_sum + weighted
        scored = loss.count_correct(backend, pred, yb)
        if scored is not None:
            correct = scored[0] if correct is None else correct + scored[0]
            counted += scored[1]
    total = backend.to_scalar(loss_sum)
    if loss.reduction == "mean":
        total /= n
    metrics = {"loss": total + net.penalty()}
    if correct is not None:
        metrics["accuracy"] = backend.to_scalar(correct) / counted
    return metrics


def evaluate(net, X, y, loss: Loss, batch_size: int = 1024) -> dict:
    """{"loss": ..., "accuracy": ...} of `net` on (X, y) in eval mode (accuracy where the loss
    defines one). The loss includes the regularization penalty, as fit's history does. Several
    threads may evaluate and predict with one network at once."""
    check_loss(loss, net)
    batch_size = check_int("batch_size", batch_size, wanted="a positive integer")
    backend = net.backend
    net.usage.begin_inference()
    try:
        with backend.on_device():
            X_host, Y_host = examples_and_targets(net, loss, X, y)
            with np.errstate(all="ignore"):
                return _evaluate_device(net, loss, backend.asarray(X_host), target_on_device(backend, Y_host),
                                        batch_size)
    finally:
        net.usage.end_inference()


def predict(net, X, batch_size: int = 1024, activation: str | None = None) -> np.ndarray:
    """The network's outputs for X as a NumPy array, in eval mode, `batch_size` rows at a time.

    `activation="softmax"` (or "sigmoid") turns logits into probabilities. Several threads may
    predict with one network at once.
    """
    batch_size = check_int("batch_size", batch_size, wanted="a positive integer")
    if activation not in (None, "softmax", "sigmoid"):
        raise ValueError(f"activation must be None, 'softmax' or 'sigmoid', got {activation!r}")
    backend = net.backend
    net.usage.begin_inference()
    try:
        with backend.on_device():
            X_dev = backend.asarray(host_examples(backend, X, net.input_shape, "X"))
            parts = []
            with np.errstate(all="ignore"):
                for start in range(0, X_dev.shape[0], batch_size):
                    out = net.forward_internal(X_dev[start:start + batch_size], training=False)
                    if activation is not None:
                        out = backend.activation_forward(out, activation)
                    parts.append(backend.to_host(out))
            return np.concatenate(parts, axis=0)
    finally:
        net.usage.end_inference()
