"""Training and inference: fit, predict, evaluate.

`fit` checks the whole data once, converts it once to the network's device, then runs
mini-batch steps: forward, loss and dL/dpred (one fused op), backward, one finiteness check of
the loss and the flat gradient buffer, one optimizer update. The running loss and accuracy stay
on the device and are read back once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading

import numpy as np

from backprop.boundary import check_finite, host_numeric
from backprop.checks import check_int
from backprop.layers import BatchNorm, Dropout
from backprop.losses import Loss, check_loss_fits_network
from backprop.optim import Adam, LRScheduler, Optimizer
from backprop.progress import EpochProgress


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


# ---------------------------------------------------------------------- argument checks


def _check_batchnorm_batches(net, n: int, batch_size: int) -> None:
    """Refuse, before the first step, a split into batches that would leave a batch of one row:
    BatchNorm cannot train on it, and finding out mid-epoch would leave the network half-trained."""
    if not any(hasattr(layer, "running_mean") for layer in net.layers):
        return
    last = n % batch_size or batch_size
    if min(last, batch_size, n) < 2:
        raise ValueError(f"batch_size={batch_size} with {n} training samples gives a batch of 1 sample, "
                         f"but BatchNorm needs batches of at least 2 in training; choose another batch_size")


def check_features(net, X, name: str = "X") -> np.ndarray:
    """X as a finite 2-D host array with the network's feature count and at least one row."""
    host = host_numeric(X, name)
    if host.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, {net.in_features} features), got shape {host.shape}")
    if host.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if host.shape[1] != net.in_features:
        raise ValueError(f"{name} has {host.shape[1]} features but the first layer expects {net.in_features}")
    check_finite(host, name)
    return host


def check_targets(net, loss: Loss, y, rows: int, name: str = "y", x_name: str = "X") -> np.ndarray:
    """y checked and converted by the loss (one-hot labels, -1/+1 hinge targets), as a host array."""
    host = host_numeric(y, name)
    if host.shape[0:1] != (rows,):
        raise ValueError(f"{name} has {host.shape[0] if host.ndim else 0} samples but {x_name} has {rows}")
    check_finite(host, name)
    width = net.out_features
    if host.ndim == 1 and width == 1:
        host = host.reshape(-1, 1)
    host = loss.check_target_values(host, (rows, width), name)
    if host.shape != (rows, width):
        raise ValueError(f"{name} must have shape ({rows}, {width}) to match the network's {width} outputs, "
                         f"got {host.shape}")
    return host


# ---------------------------------------------------------------------- Ctrl-C at batch boundaries


class _DeferredInterrupt:
    """Turns SIGINT into a flag checked between steps, so a step is never left half done."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
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
        scheduler: LRScheduler | None = None, distributed=False) -> History:
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
    - If the loss or a gradient becomes NaN/inf, raises TrainingDivergedError before the update
      that would poison the weights (layer state is taken back to the last finite step too).
      Ctrl-C stops after the current step and re-raises KeyboardInterrupt; `net.history` holds
      the history of the epochs completed so far.
    - `distributed=True` (in processes started by `mpirun`): data-parallel over MPI, or NCCL for
      a CUDA network; every rank passes the same arguments and computes its shard of every
      batch, with the result of one process at the same batch_size (see backprop/distributed.py).
    Leaves the network in eval mode.
    """
    check_loss_fits_network(loss, net)
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
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
    if validation_data is not None and validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be a backprop schedule (e.g. bp.StepLR(optimizer, 10)), "
                        f"got {type(scheduler).__name__}")
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("scheduler was built for another optimizer")
    seed = net.seed if seed is None else check_int("seed", seed, 0, wanted="a non-negative integer or None")
    parallel = None
    if distributed:  # every rank starts as rank 0, with rank 0's seed
        from backprop.distributed import DataParallel
        parallel = DataParallel(net, optimizer, loss, seed, distributed)
        seed = parallel.seed

    X_host = check_features(net, X)
    Y_host = check_targets(net, loss, y, X_host.shape[0])
    if validation_split:
        order = np.random.default_rng(seed).permutation(X_host.shape[0])
        n_val = int(round(validation_split * X_host.shape[0]))
        if n_val == 0 or n_val == X_host.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} validation samples out "
                             f"of {X_host.shape[0]}; choose a split that keeps both parts non-empty")
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        X_val_host, Y_val_host = X_host[val_idx], Y_host[val_idx]
        X_host, Y_host = X_host[train_idx], Y_host[train_idx]
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(f"validation_data must be a pair (X_val, y_val), got {type(validation_data).__name__}"
                             + (f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list)) else ""))
        X_val_host = check_features(net, validation_data[0], "validation_data[0]")
        Y_val_host = check_targets(net, loss, validation_data[1], X_val_host.shape[0], "validation_data[1]",
                                   "validation_data[0]")
    else:
        X_val_host = Y_val_host = None
    _check_batchnorm_batches(net, X_host.shape[0], batch_size)
    if parallel is not None:
        parallel.begin(X_host.shape[0], batch_size, epochs=epochs, shuffle=shuffle,
                       validation=None if X_val_host is None else X_val_host.shape[0],
                       early_stopping=early_stopping)

    backend = net.backend
    X_dev, Y_dev = backend.asarray(X_host), backend.asarray(Y_host)
    val = None if X_val_host is None else (backend.asarray(X_val_host), backend.asarray(Y_val_host))
    history = History()
    net.history = history
    trainer = _Trainer(net, loss, optimizer, batch_size, parallel)
    monitor = "val_loss" if val is not None else "loss"
    best_value, best_state, waited = math.inf, None, 0
    bar = EpochProgress(epochs, trainer.batches_per_epoch(X_dev.shape[0]),
                        enabled=progress and (parallel is None or parallel.is_root))
    try:
        with _DeferredInterrupt() as interrupt, np.errstate(all="ignore"):
            for epoch in range(1, epochs + 1):
                order = _epoch_order(seed, net.epochs_trained, X_dev.shape[0]) if shuffle else None
                metrics = trainer.run_epoch(X_dev, Y_dev, order, epoch, history, interrupt, bar)
                net.epochs_trained += 1
                if val is not None:
                    val_metrics = _evaluate_device(net, loss, val[0], val[1], batch_size=max(batch_size, 1024))
                    metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
                if parallel is not None:  # rank 0's numbers decide early stopping on every rank
                    metrics = parallel.shared_metrics(metrics)
                history.record(**metrics)
                bar.end_epoch(epoch, metrics)
                if scheduler is not None:
                    scheduler.step()
                if trainer.stop_requested(interrupt):
                    history.interrupted = True
                    raise KeyboardInterrupt
                if early_stopping is not None:
                    value = metrics[monitor]
                    if value < best_value:
                        best_value, best_state, waited = value, _snapshot(net), 0
                        history.best_epoch = epoch
                    else:
                        waited += 1
                        if waited >= early_stopping:
                            history.stopped_early = True
                            break
            if best_state is not None:
                _restore(net, best_state)
    finally:
        bar.close()
        net.eval()
        if parallel is not None:
            parallel.close()
    return history


class _Trainer:
    """The per-step loop of fit, with the batch workspaces it reuses."""

    def __init__(self, net, loss, optimizer, batch_size, parallel=None):
        self.net, self.loss, self.optimizer, self.batch_size = net, loss, optimizer, batch_size
        self.parallel = parallel  # a DataParallel on N ranks, None in one process
        self.backend = net.backend
        self._ws: dict = {}
        self._layer_state = _LayerStateGuard(net)

    def batches_per_epoch(self, n: int) -> int:
        return -(-n // self.batch_size)

    def stop_requested(self, interrupt) -> bool:
        """Ctrl-C seen; on N ranks, seen by any rank, so that all stop at the same step."""
        return interrupt.requested if self.parallel is None else self.parallel.any(interrupt.requested)

    def _gather(self, name, source, index):
        shape = (index.shape[0], source.shape[1])
        out = self._ws.get(name)
        if out is None or out.shape != shape:
            out = self._ws[name] = self.backend.empty(shape)
        return self.backend.take_rows(source, index, out=out)

    def run_epoch(self, X, Y, order, epoch, history, interrupt, bar) -> dict:
        net, loss, backend, parallel = self.net, self.loss, self.backend, self.parallel
        n = X.shape[0]
        net.train()
        order_dev = None if order is None else backend.asarray_int(order)
        # Fixed for the epoch, so a step repeats none of it (a tiny network's step is ~60 us).
        bounds = [(start, min(start + self.batch_size, n)) for start in range(0, n, self.batch_size)]
        has_penalty = net.penalty_internal() is not None
        guard_state = self._layer_state.active
        scored_per_row = 1 if loss.accuracy == "argmax" else None  # None: every output is scored
        grad_buffer = net.store.grad
        loss_sum, correct, counted = None, None, 0
        for batch, (start, stop) in enumerate(bounds, start=1):
            if interrupt.requested if parallel is None else self.stop_requested(interrupt):
                history.interrupted = True  # Ctrl-C during the previous step: stop between steps
                raise KeyboardInterrupt
            batch_rows = stop - start
            if parallel is not None:  # this rank's shard of the batch
                start, stop = parallel.shard(start, stop)
            if order_dev is None:
                xb, yb = X[start:stop], Y[start:stop]
            else:
                index = order_dev[start:stop]
                xb, yb = self._gather("x", X, index), self._gather("y", Y, index)
            if guard_state:
                self._layer_state.save()
            penalty = None
            if start == stop:  # no rows for this rank in a tiny last batch: it sends zeros
                value, pred = parallel.empty_shard(), None
            else:
                pred = net.forward_internal(xb, training=True)
                value, grad = loss.compute(backend, pred, yb)
                if parallel is not None:
                    value = parallel.scale_loss(value, grad, stop - start, batch_rows)
                if has_penalty:
                    penalty = net.penalty_internal()
                net.backward_internal(grad, need_input_grad=False)
            step_loss = value if penalty is None else value + penalty
            if parallel is not None:  # one allreduce: every rank gets the whole batch's gradient
                parallel.reduce_gradients(step_loss, stop - start, batch_rows)
            if not backend.step_finite(step_loss, grad_buffer):
                self._layer_state.restore()
                what = "loss" if not backend.all_finite(step_loss) else "gradient"
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch}, batch {batch}: the {what} is not finite "
                    f"(loss {backend.to_scalar(step_loss)}); the network keeps the weights of the last finite "
                    f"step. Lower the learning rate (lr={self.optimizer.lr}).", epoch, batch, history)
            self.optimizer.step()
            rows = stop - start
            share = _epoch_loss_share(loss, value, penalty, rows, batch_rows, n)
            loss_sum = share if loss_sum is None else loss_sum + share
            hits = None if pred is None else _count_correct(backend, loss, pred, yb)
            if hits is not None:
                correct = hits if correct is None else correct + hits
                counted += rows * (scored_per_row or pred.shape[1])
            bar.step()
        if parallel is not None:  # sums over every rank's rows
            return parallel.epoch_metrics(loss_sum, correct, counted, n)
        metrics = {"loss": backend.to_scalar(loss_sum) / n}
        if correct is not None:
            metrics["accuracy"] = backend.to_scalar(correct) / counted
        return metrics


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
    """Takes back what a diverged step's forward wrote into layer state (BatchNorm running
    statistics, Dropout step counters), so TrainingDivergedError leaves every layer as the last
    finite step left it. Per step: one int per Dropout, two small device copies per BatchNorm."""

    def __init__(self, net):
        self.backend = net.backend
        self.dropouts = [layer for layer in net.layers if isinstance(layer, Dropout)]
        self.batchnorms = [layer for layer in net.layers if isinstance(layer, BatchNorm)]
        self._steps: list[int] = []
        self.active = bool(self.dropouts or self.batchnorms)  # False: nothing to save or restore
        self._stats = [(self.backend.empty(b.running_mean.shape), self.backend.empty(b.running_var.shape))
                       for b in self.batchnorms]

    def save(self) -> None:
        self._steps = [layer.step for layer in self.dropouts]
        for layer, (mean, var) in zip(self.batchnorms, self._stats):
            self.backend.copy(layer.running_mean, out=mean)
            self.backend.copy(layer.running_var, out=var)

    def restore(self) -> None:
        for layer, step in zip(self.dropouts, self._steps):
            layer.step = step
        for layer, (mean, var) in zip(self.batchnorms, self._stats):
            layer.running_mean[...] = mean
            layer.running_var[...] = var


def _count_correct(backend, loss, pred, target):
    if loss.accuracy == "argmax":
        return backend.count_argmax_matches(pred, target)
    if loss.accuracy == "threshold":
        return backend.count_threshold_matches(pred, target, loss.score_threshold, loss.target_threshold)
    return None


def _snapshot(net) -> tuple:
    """What early stopping restores: the weights and BatchNorm statistics of the best epoch.
    Not the Dropout step counters: they count steps taken, so later masks stay fresh."""
    batchnorms = [layer for layer in net.layers if isinstance(layer, BatchNorm)]
    return net.backend.copy(net.store.data), [(layer, layer.state()) for layer in batchnorms]


def _restore(net, state) -> None:
    data, layer_states = state
    net.store.data[...] = data
    for layer, saved in layer_states:
        layer.load_state(saved)


# ---------------------------------------------------------------------- inference


@contextlib.contextmanager
def _eval_mode(net):
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.training = was_training


def _evaluate_device(net, loss, X, Y, batch_size: int) -> dict:
    backend = net.backend
    n = X.shape[0]
    loss_sum, correct, counted = None, None, 0
    with _eval_mode(net):
        for start in range(0, n, batch_size):
            xb, yb = X[start:start + batch_size], Y[start:start + batch_size]
            pred = net.forward_internal(xb, training=False)
            value, _ = loss.compute(backend, pred, yb)
            rows = xb.shape[0]
            weighted = value * rows if loss.reduction == "mean" else value
            loss_sum = weighted if loss_sum is None else loss_sum + weighted
            hits = _count_correct(backend, loss, pred, yb)
            if hits is not None:
                correct = hits if correct is None else correct + hits
                counted += rows if loss.accuracy == "argmax" else rows * pred.shape[1]
    total = backend.to_scalar(loss_sum)
    if loss.reduction == "mean":
        total /= n
    penalty = net.penalty()
    metrics = {"loss": total + penalty}
    if correct is not None:
        metrics["accuracy"] = backend.to_scalar(correct) / counted
    return metrics


def evaluate(net, X, y, loss: Loss, batch_size: int = 1024) -> dict:
    """{"loss": ..., "accuracy": ...} of `net` on (X, y) in eval mode (accuracy for classifiers).

    The loss includes the regularization penalty, as fit's history does.
    """
    check_loss_fits_network(loss, net)
    batch_size = check_int("batch_size", batch_size, wanted="a positive integer")
    X_host = check_features(net, X)
    Y_host = check_targets(net, loss, y, X_host.shape[0])
    backend = net.backend
    with np.errstate(all="ignore"):
        return _evaluate_device(net, loss, backend.asarray(X_host), backend.asarray(Y_host), batch_size)


def predict(net, X, batch_size: int = 1024, activation: str | None = None) -> np.ndarray:
    """The network's outputs for X as a NumPy array, in eval mode, `batch_size` rows at a time.

    `activation="softmax"` (or "sigmoid") turns logits into probabilities.
    """
    batch_size = check_int("batch_size", batch_size, wanted="a positive integer")
    if activation not in (None, "softmax", "sigmoid"):
        raise ValueError(f"activation must be None, 'softmax' or 'sigmoid', got {activation!r}")
    X_host = check_features(net, X)
    backend = net.backend
    X_dev = backend.asarray(X_host)
    parts = []
    with _eval_mode(net), np.errstate(all="ignore"):
        for start in range(0, X_dev.shape[0], batch_size):
            out = net.forward_internal(X_dev[start:start + batch_size], training=False)
            if activation is not None:
                out = backend.activation_forward(out, activation)
            parts.append(backend.to_host(out))
    return np.concatenate(parts, axis=0)
