"""Training and inference: fit, predict, evaluate.

fit's algorithm is one step (`TrainStep`), repeated over the mini-batches of each epoch:

    pred = net.forward(x)                 layers in order
    loss, dL/dpred = loss(pred, y)        one fused op (weighted per sample with sample_weight)
    net.backward(dL/dpred)                layers in reverse; fills every .grad
    update(loss)                          the optimizer: one pass over the flat parameter buffer

What guards the step stands around it (backprop/guards.py): the update runs only once the loss
and gradient are known finite (one reduction and one read-back; with `clip_norm` that reduction
is the gradient's norm, which the clipping uses), the first step at a learning rate on a copy's
back; layer state is taken back after a diverged step; Ctrl-C is a flag checked between steps.
What distributes it stands around it too (backprop/parallel.py): the batch source hands each
rank its shard of every batch (backprop/batches.py), and the update is wrapped in the
gradient's allreduce, as ChainerMN wraps the optimizer. One process is data-parallel training on
a group of one, so there is one loop. Callbacks (backprop/callbacks.py) run between epochs;
early stopping is one of them. The running loss and accuracy stay on the device and are read
back once per epoch. Everything runs with the network's device current.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backprop.batches import Batches, epoch_order
from backprop.boundary import checked_sample_weight, host_examples, host_numeric
from backprop.callbacks import Callback, EarlyStopping, ProgressBar
from backprop.checks import check_int, check_real
from backprop.guards import DeferredInterrupt, LayerStateGuard, StepNotFinite, checked_update
from backprop.losses import Loss, check_loss, checked_target, target_on_device
from backprop.metrics import Tally, checked_metrics
from backprop.objective import PENALTY_SCALES, Objective
from backprop.optim import Adam, LRScheduler, Optimizer
from backprop.parallel import DataParallel, SingleProcess
from backprop.schedules import ReduceLROnPlateau
from backprop.sources import RowSource, checked_examples, checked_targets, is_row_source


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


def examples_and_targets(net, loss: Loss, X, y, x_name: str = "X", y_name: str = "y", share=(0, 1)):
    """(X, y) checked as a whole and converted for `loss`, as host arrays: X in the network's
    dtype, y in the loss's form (class labels stay int64). An X read a batch at a time
    (backprop/sources.py) gives two RowSources instead, checked by a streaming pass (each
    rank's `share` of the rows in data-parallel training)."""
    if len(net.output_shape) != 1:
        raise ValueError(f"the network's output has shape {net.output_shape} per example, but losses take one "
                         "vector per example; end the network with Flatten() or a Dense layer")
    if is_row_source(X):
        X_rows = checked_examples(net.backend, RowSource(X, x_name), net.input_shape, share)
        targets = RowSource(y if is_row_source(y) else host_numeric(y, y_name), y_name)
        return X_rows, checked_targets(loss, targets, len(X_rows), net.out_features, x_name, share)
    X_host = host_examples(net.backend, X, net.input_shape, x_name)
    Y_host = checked_target(loss, y, X_host.shape[0], net.out_features, y_name, x_name)
    return X_host, Y_host


@dataclass
class _Data:
    """The training (and validation) data, checked, on the host (arrays, or RowSources read a
    batch at a time); W the sample weights or None."""

    X: np.ndarray | RowSource
    Y: np.ndarray | RowSource
    W: np.ndarray | None
    X_val: np.ndarray | RowSource | None = None
    Y_val: np.ndarray | RowSource | None = None

    def split(self, fraction: float, seed: int) -> None:
        """Hold out that fraction of the samples, drawn with `seed`, as the validation data
        (their sample weights are dropped: validation is unweighted)."""
        n = self.X.shape[0]
        n_val = int(round(fraction * n))
        if n_val == 0 or n_val == n:
            raise ValueError(f"validation_split={fraction} leaves {n_val} validation samples out "
                             f"of {n}; choose a split that keeps both parts non-empty")
        order = np.random.default_rng(seed).permutation(n)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        if isinstance(self.X, RowSource):  # the rows of each part, read when used: nothing copied
            self.X_val, self.Y_val = self.X.subset(val_idx), self.Y.subset(val_idx)
            self.X, self.Y = self.X.subset(train_idx), self.Y.subset(train_idx)
        else:
            self.X_val, self.Y_val = self.X[val_idx], self.Y[val_idx]
            self.X, self.Y = self.X[train_idx], self.Y[train_idx]
        if self.W is not None:
            self.W = self.W[train_idx]


def _checked_data(net, settings, X, y, share) -> _Data:
    """The data checked on the host (the validation part None without validation_data)."""
    X_host, Y_host = examples_and_targets(net, settings.loss, X, y, share=share)
    data = _Data(X_host, Y_host, None)
    if settings.sample_weight is not None or settings.penalty_scale == "weight":
        data.W = checked_sample_weight(settings.sample_weight, X_host.shape[0])
    if settings.validation_data is not None:
        data.X_val, data.Y_val = examples_and_targets(net, settings.loss, *settings.validation_data,
                                                      "validation_data[0]", "validation_data[1]", share)
    _check_no_overlap(net, settings.optimizer, {"X": data.X, "y": data.Y, "validation_data[0]": data.X_val,
                                                "validation_data[1]": data.Y_val})
    return data


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


# ---------------------------------------------------------------------- arguments, checked once


@dataclass
class _Settings:
    """fit's arguments other than the data, checked and normalized (`_checked_settings`)."""

    loss: Loss
    optimizer: Optimizer
    epochs: int
    batch_size: int
    shuffle: bool
    validation_data: tuple | None
    validation_split: float
    early_stopping: int | None
    progress: bool
    seed: int
    scheduler: LRScheduler | None
    distributed: object
    callbacks: list
    sample_weight: object
    penalty_scale: str
    clip_norm: float | None
    metrics: list


def _checked_settings(net, loss, optimizer, epochs, batch_size, shuffle, validation_data, validation_split,
                      early_stopping, progress, seed, scheduler, distributed, callbacks, sample_weight,
                      penalty_scale, clip_norm, metrics) -> _Settings:
    """Every argument of fit that is not data, checked before anything runs."""
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
    if penalty_scale not in PENALTY_SCALES:
        raise ValueError(f"penalty_scale must be one of {PENALTY_SCALES}, got {penalty_scale!r}")
    if sample_weight is not None or penalty_scale == "weight":
        if type(loss).row_losses is Loss.row_losses:
            raise TypeError(f"sample_weight and penalty_scale='weight' need a loss with row_losses(), which "
                            f"{type(loss).__name__} does not define")
        if loss.reduction != "mean":
            raise ValueError(f"sample_weight and penalty_scale='weight' weigh each row's loss in a weighted mean, "
                             f"but the loss has reduction={loss.reduction!r}; use reduction='mean'")
    if clip_norm is not None:
        clip_norm = check_real("clip_norm", clip_norm, low_open=True)
    metrics = checked_metrics(() if metrics is None else metrics, loss, net.out_features)
    return _Settings(loss, optimizer, epochs, batch_size, shuffle, validation_data, validation_split,
                     early_stopping, progress, seed, scheduler, distributed, callbacks, sample_weight,
                     penalty_scale, clip_norm, metrics)


def _communicator(net, distributed):
    """The group fit runs on: one process, MPI/NCCL for the network's device, or the one given."""
    if distributed is False or distributed is None:
        return SingleProcess()
    if distributed is True:
        from backprop.distributed import communicator_for

        return communicator_for(net)
    return distributed


# ---------------------------------------------------------------------- fit


def fit(net, X, y, loss: Loss = None, optimizer: Optimizer | None = None, epochs: int = 10,
        batch_size: int = 32, shuffle: bool = True, validation_data=None, validation_split: float = 0.0,
        early_stopping: int | None = None, progress: bool = True, seed: int | None = None,
        scheduler: LRScheduler | None = None, distributed=False, callbacks=(), sample_weight=None,
        penalty_scale: str = "batch", clip_norm: float | None = None, metrics=None) -> History:
    """Train `net` on (X, y) by mini-batch backpropagation; returns a `History`.

    - `X`, `y`: arrays, or data read a batch at a time (a NumPy memory map, or any object with
      `__len__` and `X[idx]` for an array of row indices; backprop/sources.py): checked first in
      chunks, then each batch's rows read when it runs, with the shuffle of the same data in memory.
    - `loss`: a backprop loss (required); `optimizer`: defaults to Adam(net.parameters()).
    - One epoch is ceil(n / batch_size) iterations (2000 samples at batch 20: 100 iterations).
    - `validation_data=(X_val, y_val)`, or `validation_split` in [0, 1): that fraction of the
      samples, drawn at random with `seed`, is held out.
    - `early_stopping=k`: stop after k epochs without improvement of the validation loss (the
      training loss when there is no validation data) and restore the best weights; it adds
      `bp.EarlyStopping(patience=k)` to the callbacks.
    - `scheduler`: an LR schedule stepped once per epoch, before the callbacks see the epoch;
      `bp.ReduceLROnPlateau` is stepped with the validation loss (the training loss without
      validation data).
    - `sample_weight`: one non-negative weight per sample; each batch's loss is the weighted
      mean sum_i w_i l_i / sum_i w_i of its rows' losses (the weights summed over the whole
      batch, every rank's rows), for a loss that defines `row_losses` with reduction "mean".
      The validation loss is unweighted.
    - `penalty_scale`: "batch" adds the layers' penalty (l1, l2) to every batch's loss as it is;
      "weight" divides it, with the weighted loss's sum, by the batch's total sample weight
      (its rows without sample_weight): (sum_i w_i l_i + penalty) / sum_i w_i, scikit-learn's MLP.
    - `clip_norm=c`: every step's gradient is scaled to a global L2 norm of at most c, as
      `bp.clip_grad_norm` (after the data-parallel allreduce).
    - `metrics`: more metrics to record each epoch (backprop/metrics.py: "precision", "recall",
      "f1", "mae", "mse", "rmse", "r2", or objects such as bp.TopKAccuracy(5)), over the epoch's
      batches as they were trained on, and as "val_<name>" on the validation data with the
      epoch's final weights. "loss", and "accuracy" for a classifier, are always recorded.
    - `seed` (default: the network's seed) fixes the validation split and the shuffles: epoch e
      of the network's life (`net.epochs_trained`, kept in checkpoints) is shuffled from
      (seed, e) alone, so the same seed gives the same training, and a resumed run continues
      exactly as an uninterrupted one.
    - `progress=True` shows a ProgressBar; `callbacks` are more bp.Callback objects (see
      backprop/callbacks.py; one that sets its `stop_training` ends fit after the epoch).
    - If the loss or a gradient becomes NaN/inf, raises TrainingDivergedError before the update
      that would poison the weights (layer state is taken back to the last finite step too).
      Ctrl-C stops after the current step and re-raises KeyboardInterrupt; `net.history` holds
      the history of the epochs completed so far.
    - `distributed=True` (in processes started by `mpirun`): data-parallel over MPI, or NCCL for
      a CUDA network; every rank passes the same arguments and computes its shard of every
      batch, with the result of one process at the same batch_size (see backprop/parallel.py).
    Leaves the network in eval mode.
    """
    settings = _checked_settings(net, loss, optimizer, epochs, batch_size, shuffle, validation_data,
                                 validation_split, early_stopping, progress, seed, scheduler, distributed,
                                 callbacks, sample_weight, penalty_scale, clip_norm, metrics)
    token = net.usage.begin_training("fit")
    try:
        with net.backend.on_device():
            return _Fit(net, settings, X, y).run()
    finally:
        net.usage.end_training(token)


class TrainStep:
    """One step of mini-batch backpropagation on a batch: forward, loss, backward, update.

    `objective` is the loss the step minimises (backprop/objective.py: the user's loss, sample
    weights, the layers' penalty); `update` the optimizer's update as the guards and the
    data-parallel allreduce wrap it. Returns the predictions and the step's share of the
    epoch's loss."""

    def __init__(self, net, objective, update):
        self.net, self.objective, self.update = net, objective, update

    def __call__(self, batch):
        pred = self.net.forward_internal(batch.x, training=True)
        value, grad = self.objective(pred, batch)
        self.net.backward_internal(grad)
        loss, share = self.objective.finish(value, batch)  # the penalty joins the loss
        self.update(loss, batch)
        return pred, share


class _Fit:
    """One call of fit: the data on the device, the step and what guards and distributes it,
    the callbacks; `run()` trains."""

    def __init__(self, net, settings: _Settings, X, y):
        self.net, self.settings = net, settings
        self.loss, self.optimizer, self.scheduler = settings.loss, settings.optimizer, settings.scheduler
        backend = self.backend = net.backend
        comm = _communicator(net, settings.distributed)
        data = _agreed(comm, lambda: _checked_data(net, settings, X, y, (comm.rank, comm.size)))
        # from here every rank starts as rank 0 (its weights, optimizer state, seed)
        parallel = self.parallel = DataParallel(net, self.optimizer, self.loss, settings.seed, comm)
        if settings.validation_split:
            data.split(settings.validation_split, parallel.seed)
        parallel.begin(data.X.shape[0], settings.batch_size, epochs=settings.epochs, shuffle=settings.shuffle,
                       validation=None if data.X_val is None else data.X_val.shape[0],
                       early_stopping=settings.early_stopping, weighted=data.W is not None,
                       penalty_scale=settings.penalty_scale, clip_norm=settings.clip_norm,
                       metrics=[metric.name for metric in settings.metrics])
        self.batches = Batches(backend, *_on_device(backend, data.X, data.Y), data.W, settings.batch_size, parallel)
        self.val = None if data.X_val is None else _on_device(backend, data.X_val, data.Y_val)
        objective = Objective(net, self.loss, parallel, data.W is not None, settings.penalty_scale,
                              data.X.shape[0])
        self.update = parallel.around(checked_update(net, self.optimizer, settings.clip_norm))
        self.step = TrainStep(net, objective, self.update)
        self.layer_state = LayerStateGuard(net)
        self.history = net.history = History()
        self.callbacks = self._callbacks()

    def _callbacks(self) -> list:
        """The user's callbacks, then early stopping's and the progress bar's, each given the training."""
        settings = self.settings
        callbacks = list(settings.callbacks)
        if settings.early_stopping is not None:
            callbacks.append(EarlyStopping(patience=settings.early_stopping))
        if settings.progress and self.parallel.is_root:
            callbacks.append(ProgressBar())
        for callback in callbacks:
            callback.set_training(self.net, self.optimizer, self.scheduler, self.history, self.parallel.is_root)
            callback.stop_training = False
        return callbacks

    def run(self) -> History:
        net, history, callbacks, parallel = self.net, self.history, self.callbacks, self.parallel
        epochs = self.settings.epochs
        try:
            for callback in callbacks:
                callback.on_train_begin(epochs, len(self.batches))
            with DeferredInterrupt() as interrupt, np.errstate(all="ignore"):
                for epoch in range(1, epochs + 1):
                    for callback in callbacks:
                        callback.on_epoch_begin(epoch)
                    metrics = self._epoch(epoch, interrupt)
                    history.record(**metrics)
                    self._step_schedule(metrics)
                    for callback in callbacks:
                        callback.on_epoch_end(epoch, metrics)
                    if parallel.any(interrupt.requested):
                        history.interrupted = True
                        raise KeyboardInterrupt
                    if parallel.root_decides(any(callback.stop_training for callback in callbacks)):
                        history.stopped_early = True
                        break
        finally:
            for callback in callbacks:
                callback.on_train_end()
            net.eval()
            parallel.close()
        return history

    def _epoch(self, epoch: int, interrupt) -> dict:
        """The epoch's steps, then its metrics (rank 0's, on every rank)."""
        net, loss, backend, parallel = self.net, self.loss, self.backend, self.parallel
        net.train()
        n = self.batches.n
        order = epoch_order(parallel.seed, net.epochs_trained, n) if self.settings.shuffle else None
        step_callbacks = [c.on_batch_end for c in self.callbacks
                          if type(c).on_batch_end is not Callback.on_batch_end]
        metrics = self.settings.metrics
        tally = Tally(backend, loss, metrics, net.out_features) if metrics else None
        loss_sum, correct, counted = None, None, 0
        for batch in self.batches.epoch(order):
            if parallel.any(interrupt.requested):
                self.history.interrupted = True  # Ctrl-C during the previous step: stop between steps
                raise KeyboardInterrupt
            pred, share = self._guarded_step(epoch, batch)
            if pred is not None:
                loss_sum = share if loss_sum is None else loss_sum + share
                scored = loss.count_correct(backend, pred, batch.y)
                if scored is not None:
                    correct = scored[0] if correct is None else correct + scored[0]
                    counted += scored[1]
                if tally is not None:
                    tally.add(pred, batch.y)
            for on_batch_end in step_callbacks:
                on_batch_end()
        metrics = parallel.epoch_metrics(loss_sum, correct, counted, n)
        if tally is not None:
            metrics.update(tally.values(parallel.comm))
        if not backend.all_finite(net.store.data):  # an update after the checked first one overflowed
            raise self._diverged(epoch, len(self.batches), "the weights are not finite")
        net.epochs_trained += 1
        if self.val is not None:
            val_metrics = _evaluate_device(net, loss, *self.val, batch_size=max(self.settings.batch_size, 1024),
                                           metrics=self.settings.metrics)
            metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        return parallel.shared_metrics(metrics)  # rank 0's numbers decide on every rank

    def _guarded_step(self, epoch: int, batch):
        """The step, its layer state taken back if it diverges; a rank without rows in a tiny
        last batch sends a zero gradient to the allreduce instead."""
        layer_state = self.layer_state
        if layer_state.active:
            layer_state.save()
        try:
            if batch.rows:
                return self.step(batch)
            self.update(self.parallel.empty_shard(), batch)
            return None, None
        except StepNotFinite as exc:
            layer_state.restore()
            raise self._diverged(epoch, batch.index, exc.reason, exc.rolled_back) from None

    def _step_schedule(self, metrics: dict) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(metrics.get("val_loss", metrics["loss"]))
        else:
            scheduler.step()

    def _diverged(self, epoch: int, batch: int, reason: str, rolled_back: bool = False) -> TrainingDivergedError:
        """TrainingDivergedError at (epoch, batch), saying what the network holds: the weights of
        the last finite step, or, when an update after a learning rate's first step overflowed
        them (only the first is taken on a copy), weights that are not finite themselves."""
        message = f"training diverged at epoch {epoch}, batch {batch}: {reason}"
        if not rolled_back:
            if self.backend.all_finite(self.net.store.data):
                kept = "the network keeps the weights of the last finite step"
            else:
                kept = ("an update overflowed the weights, which are not finite now (only the first step at a "
                        "learning rate is kept to undo): reload or rebuild the network")
            message += f"; {kept}. Lower the learning rate (lr={self.optimizer.lr})."
        return TrainingDivergedError(message, epoch, batch, self.history)


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


# ---------------------------------------------------------------------- inference


def _on_device(backend, X, Y):
    """Checked host data on the backend's device, whole; RowSources stay where they are (their
    batches are read and moved one at a time)."""
    if isinstance(X, RowSource):
        return X, Y
    return backend.asarray(X), target_on_device(backend, Y)


def _rows(backend, data, start: int, stop: int, target: bool = False):
    """Rows [start, stop) of device data, or read from a RowSource and moved to the device."""
    if not isinstance(data, RowSource):
        return data[start:stop]
    rows = data.read(np.arange(start, stop))
    return target_on_device(backend, rows) if target else backend.asarray(rows)


def _evaluate_device(net, loss, X, Y, batch_size: int, metrics=()) -> dict:
    backend = net.backend
    n = X.shape[0]
    tally = Tally(backend, loss, metrics, net.out_features)
    loss_sum, correct, counted = None, None, 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        xb, yb = _rows(backend, X, start, stop), _rows(backend, Y, start, stop, target=True)
        pred = net.forward_internal(xb, training=False)
        value, _ = loss.value_and_grad(backend, pred, yb)
        rows = xb.shape[0]
        weighted = value * rows if loss.reduction == "mean" else value
        loss_sum = weighted if loss_sum is None else loss_sum + weighted
        scored = loss.count_correct(backend, pred, yb)
        if scored is not None:
            correct = scored[0] if correct is None else correct + scored[0]
            counted += scored[1]
        tally.add(pred, yb)
    total = backend.to_scalar(loss_sum)
    if loss.reduction == "mean":
        total /= n
    results = {"loss": total + net.penalty()}
    if correct is not None:
        results["accuracy"] = backend.to_scalar(correct) / counted
    results.update(tally.values())
    return results


def evaluate(net, X, y, loss: Loss, batch_size: int = 1024, metrics=None) -> dict:
    """{"loss": ..., "accuracy": ..., and each of `metrics`} of `net` on (X, y) in eval mode
    (accuracy where the loss defines one; the metrics as fit's, backprop/metrics.py). The loss
    includes the regularization penalty, as fit's history does. Several threads may evaluate
    and predict with one network at once."""
    check_loss(loss, net)
    batch_size = check_int("batch_size", batch_size, wanted="a positive integer")
    metrics = checked_metrics(() if metrics is None else metrics, loss, net.out_features)
    backend = net.backend
    net.usage.begin_inference()
    try:
        with backend.on_device():
            X_host, Y_host = examples_and_targets(net, loss, X, y)
            with np.errstate(all="ignore"):
                return _evaluate_device(net, loss, *_on_device(backend, X_host, Y_host), batch_size, metrics)
    finally:
        net.usage.end_inference()


def predict(net, X, batch_size: int = 1024, activation: str | None = None) -> np.ndarray:
    """The network's outputs for X as a NumPy array, in eval mode, `batch_size` rows at a time
    (X an array, or data read a batch at a time as fit reads it: backprop/sources.py).

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
            if is_row_source(X):
                X_dev = checked_examples(backend, RowSource(X, "X"), net.input_shape)
            else:
                X_dev = backend.asarray(host_examples(backend, X, net.input_shape, "X"))
            n = X_dev.shape[0]
            parts = []
            with np.errstate(all="ignore"):
                for start in range(0, n, batch_size):
                    out = net.forward_internal(_rows(backend, X_dev, start, min(start + batch_size, n)),
                                               training=False)
                    if activation is not None:
                        out = backend.activation_forward(out, activation)
                    parts.append(backend.to_host(out))
            return np.concatenate(parts, axis=0)
    finally:
        net.usage.end_inference()
