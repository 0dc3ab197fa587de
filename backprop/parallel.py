"""Data-parallel training as `fit` runs it: N ranks, each computing its shard of every batch.

One process is the trivial case, a group of one (`SingleProcess`), so `fit` has one loop. With
MPI or NCCL (backprop/distributed.py) the same loop runs on every rank.

Every rank holds a full copy of the network and the same (X, y). The shuffle of an epoch is a
function of (seed, epoch) alone, and the seed is rank 0's, so every rank cuts the same batches.
Batch rows [start, stop), b of them, are cut into N contiguous shards; rank r gets rows
[start + r b // N, start + (r + 1) b // N), b_r rows.

The math. One process minimises, per batch, L = E + P: E the data loss over the b rows ("mean"
or "sum" reduction), P the regularization penalty. Rank r estimates the batch loss from its rows,

    L_r = E_r + P,   E_r = mean over its rows              (reduction "mean")
                     E_r = (b / b_r) * sum over its rows   (reduction "sum", or sample weights:
                                                           backprop/objective.py),

and the row-weighted mean of the estimates is the batch loss exactly: sum_r (b_r / b) L_r = L.
Gradients are linear, so one sum-allreduce of (b_r / b) dL_r/dtheta over the flat gradient
buffer gives every rank dL/dtheta of the whole batch: N ranks at per-rank batch b/N take the
steps of one process at batch b, up to the order of float additions. A rank with no rows of a
tiny last batch contributes zeros and still joins the allreduce.

Decisions every rank must share are taken on shared values, so no rank waits forever in an
allreduce the others have left:
- divergence: a rank whose loss is not finite poisons its gradient with NaN before the
  allreduce, so the reduced gradient, which fit checks, is non-finite on every rank;
- Ctrl-C: the OR of every rank's flag (one tiny host allreduce between steps);
- callbacks and history: the epoch's metrics are summed over ranks, then rank 0's are
  broadcast, so every rank records the same history; a callback's decision to stop is rank 0's,
  broadcast, so every rank stops at the same epoch.

Layer state follows the layer protocol (backprop/layers/base.py), whatever the layer: every
rank starts from rank 0's parameters, optimizer state, buffers and counters; buffers (BatchNorm's
running statistics) are averaged over the ranks at the end of every epoch, so validation,
predict and checkpoints see the same network on every rank. In training each rank normalizes
with its own shard's statistics (as PyTorch's DistributedDataParallel without SyncBatchNorm):
with BatchNorm, N ranks equal one process whose batches are normalized in N "ghost batches" of
b/N rows. Random draws (dropout masks) come from `rank_noise_seed(seed, r)` on rank r (rank 0
draws exactly what one process would), so ranks drop different elements.
"""

from __future__ import annotations

import math

from backprop.backends.ops.dropout import HASH_GOLDEN, MASK32, hash32


def rank_noise_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random draws: the network's seed on rank 0, a hash of
    (seed, rank) elsewhere, so ranks drop independent elements."""
    if rank == 0:
        return seed
    return hash32(seed ^ hash32((rank * HASH_GOLDEN) & MASK32))


class SingleProcess:
    """The group of one process: every collective is the identity."""

    rank, size = 0, 1

    def allreduce_sum(self, array) -> None:
        pass

    def broadcast(self, array, root: int = 0) -> None:
        pass

    def sum_floats(self, values) -> list[float]:
        return [float(v) for v in values]

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def broadcast_object(self, value, root: int = 0):
        return value


class DataParallel:
    """The data-parallel parts of one fit over a communicator (SingleProcess, MPI or NCCL).

    Building it makes every rank start as rank 0 (parameters, optimizer state, layer buffers
    and counters, seed, epoch count); `self.seed` is the shared shuffle seed.
    """

    def __init__(self, net, optimizer, loss, seed: int, comm):
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self.is_root = self.rank == 0
        self.net, self.loss, self.backend = net, loss, net.backend
        self.agree("network architecture", (net.config()["layers"], net.dtype, net.num_parameters()))
        self.seed = self._start(net, optimizer, seed)

    def agree(self, what: str, value) -> None:
        """Raise ValueError on every rank if any rank's `value` differs from rank 0's: a mismatch
        found on one rank only would leave the others waiting in the next collective."""
        if self.size == 1:
            return
        root = self.comm.broadcast_object(value)
        if self.comm.any(root != value):
            raise ValueError(f"the ranks disagree on the {what}; every rank must call fit with the same "
                             f"network and data (rank 0 has {root!r})")

    def _start(self, net, optimizer, seed: int) -> int:
        if self.size == 1:
            return seed
        comm = self.comm
        comm.broadcast(net.store.data)
        for name in sorted(optimizer.state):
            comm.broadcast(optimizer.state[name])
        for buffer in net.buffers():
            comm.broadcast(buffer)
        shared = comm.broadcast_object({"seed": seed, "net_seed": net.seed, "epochs_trained": net.epochs_trained,
                                        "step_count": optimizer.step_count, "counters": net.counter_values()})
        net.seed, net.epochs_trained = shared["net_seed"], shared["epochs_trained"]
        optimizer.step_count = shared["step_count"]
        net.set_counters(shared["counters"])
        return shared["seed"]

    def begin(self, samples: int, batch_size: int, **settings) -> None:
        """Before the first step: check that every rank runs the same loop and that each shard
        has the rows the network's layers need, then give this rank its noise seed."""
        self.agree("training set size and fit settings", {"samples": samples, "batch_size": batch_size, **settings})
        need = self.net.min_train_rows
        for rows in {min(batch_size, samples), samples % batch_size or batch_size}:
            small = [s for s in {rows // self.size, -(-rows // self.size)} if 0 < s < need]
            if small:
                layer = next(layer for layer in self.net.layers if layer.min_train_rows == need)
                what = (f"a rank a shard of {small[0]} of a {rows}-sample batch on {self.size} ranks" if self.size > 1
                        else f"a batch of {rows} sample{'s' if rows > 1 else ''}")
                raise ValueError(f"batch_size={batch_size} with {samples} training samples gives {what}, but "
                                 f"{type(layer).__name__} needs batches of at least {need} in training; "
                                 "choose another batch_size")
        self.net.set_noise_seed(rank_noise_seed(self.net.seed, self.rank))

    def close(self) -> None:
        """After fit: every rank's network is rank 0's again (noise seed back to the network's)."""
        self.net.set_noise_seed(self.net.seed)

    # -- per step

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of batch rows [start, stop)."""
        rows = stop - start
        return start + self.rank * rows // self.size, start + (self.rank + 1) * rows // self.size

    def scale_loss(self, value, grad, rows: int, batch_rows: int):
        """E_r and dE_r/dpred in place, for a loss that sums over rows: (b / b_r) times the
        rank's own sum."""
        if rows == batch_rows:
            return value
        scale = batch_rows / rows
        grad *= scale
        return value * scale

    def empty_shard(self):
        """A rank with no rows in this batch: zero gradient and zero loss (it still joins the allreduce)."""
        self.net.store.grad[...] = 0
        return self.backend.zeros(())

    def around(self, update):
        """`update` behind the gradient's allreduce, as ChainerMN's multi-node optimizer wraps
        the optimizer: `update` itself in one process."""
        return update if self.size == 1 else AllreduceUpdate(self, update)

    def reduce_gradients(self, value, rows: int, batch_rows: int) -> None:
        """grad <- sum over ranks of (b_r / b) grad_r: the whole batch's gradient, on every rank.

        A rank whose loss is not finite sends NaN, so every rank sees the divergence."""
        grad = self.net.store.grad
        if rows and not self.backend.all_finite(value):
            grad[...] = math.nan
        elif rows != batch_rows:
            grad *= rows / batch_rows
        self.comm.allreduce_sum(grad)

    def any(self, flag: bool) -> bool:
        return self.comm.any(flag)

    # -- per epoch

    def epoch_metrics(self, loss_sum, correct, counted: int, samples: int) -> dict:
        """The epoch's loss and accuracy over every rank's rows; every layer buffer averaged
        over the ranks (so every rank evaluates and saves the same network)."""
        if self.size > 1:
            for buffer in self.net.buffers():
                self.comm.allreduce_sum(buffer)
                buffer *= 1.0 / self.size
        to_float = self.backend.to_scalar
        loss_total, hits, counted, with_accuracy = self.comm.sum_floats(
            [0.0 if loss_sum is None else to_float(loss_sum), 0.0 if correct is None else to_float(correct),
             counted, correct is not None])
        metrics = {"loss": loss_total / samples}
        if with_accuracy:
            metrics["accuracy"] = hits / counted
        return metrics

    def shared_metrics(self, metrics: dict) -> dict:
        """Rank 0's metrics on every rank: the history and the callbacks' decisions are taken once."""
        return self.comm.broadcast_object(metrics)

    def root_decides(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank (a callback's decision to stop, say)."""
        return bool(self.comm.broadcast_object(bool(flag)))


class AllreduceUpdate:
    """The update of the whole batch's gradient: this rank's reduced with every other's first."""

    def __init__(self, parallel: DataParallel, update):
        self.parallel, self.update = parallel, update

    def __call__(self, loss, batch) -> None:
        self.parallel.reduce_gradients(loss, batch.rows, batch.batch_rows)
        self.update(loss, batch)
