"""Data-parallel training over MPI (CPU, mpi4py) or NCCL (GPU, cupy.cuda.nccl).

    mpirun -n 4 python -m backprop train --distributed
    mpirun -n 4 python -m mpi4py my_script.py      # a script calling bp.fit(..., distributed=True)

Every rank (process) holds a full copy of the network and the same (X, y), and computes its
shard of every batch. The shuffle of an epoch is a function of (seed, epoch) alone, and the seed
is rank 0's, so every rank cuts the same batches. Batch rows [start, stop), b of them, are cut
into N contiguous shards; rank r gets rows [start + r b // N, start + (r + 1) b // N), b_r rows.

The math. One process minimises, per batch, L = E + P: E the data loss over the b rows ("mean"
or "sum" reduction), P the regularization penalty. Rank r estimates the batch loss from its rows,

    L_r = E_r + P,   E_r = mean over its rows              (reduction "mean")
                     E_r = (b / b_r) * sum over its rows   (reduction "sum"),

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
- early stopping and history: the epoch's metrics are summed over ranks, then rank 0's are
  broadcast, so every rank records the same history and stops at the same epoch.
Only rank 0 shows progress; checkpoints are the caller's to write from rank 0 (`is_root()`).

BatchNorm keeps per-rank statistics (as PyTorch's DistributedDataParallel without
SyncBatchNorm): in training each rank normalizes with its own shard's mean and variance, so
with BatchNorm N ranks equal one process whose batches are normalized in N "ghost batches" of
b/N rows, not one process at batch b. Synchronized statistics would cost two more allreduces
per BatchNorm layer per step. The running statistics are averaged over the ranks at the end of
every epoch, so validation, predict and checkpoints see the same network on every rank.

Dropout draws independent masks on each rank: rank r's masks come from `dropout_seed(seed, r)`
(rank 0 draws exactly the masks one process would). With the same seed on every rank, rows at
the same position of different shards would be dropped together.
"""

from __future__ import annotations

import contextlib
import math
import os
import traceback

import numpy as np

from backprop.backends import parse_device
from backprop.backends.base import HASH_GOLDEN, MASK32, hash32
from backprop.layers import BatchNorm, Dropout

MPI_HINT = 'install the MPI extra: pip install "backprop-gpu[mpi]" (mpi4py and the mpich wheel)'


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py ({exc}); {MPI_HINT}") from None
    return MPI


def world_rank() -> int:
    """This process's rank in MPI_COMM_WORLD (0 without mpi4py)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return 0
    return MPI.COMM_WORLD.Get_rank()


def is_root() -> bool:
    """True on the rank that prints and writes checkpoints (rank 0), and in a plain process."""
    return world_rank() == 0


def local_device(prefer: str = "auto") -> str:
    """The device for this rank: "cuda:i" with i = the rank's index among the ranks of its node
    (modulo the GPUs there), so ranks on one node use different GPUs; "cpu" without a GPU."""
    from backprop.backends import cuda_status

    kind, _ = parse_device(prefer)
    count, _ = cuda_status()
    if kind == "cpu" or (kind == "auto" and not count):
        return "cpu"
    MPI = _mpi()
    node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    local = node.Get_rank()
    node.Free()
    return f"cuda:{local % max(count, 1)}"


def run_on_ranks(command, args) -> int:
    """Run a command-line command (`python -m backprop train --distributed`) on this rank: on
    the rank's GPU of its node (or the CPU), printing only on rank 0. An error on one rank
    aborts every rank: the others would otherwise wait forever in their next collective."""
    args.device = local_device(args.device)
    with contextlib.ExitStack() as stack:
        if not is_root():
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        try:
            return command(args)
        except Exception:
            traceback.print_exc()
            _mpi().COMM_WORLD.Abort(1)
            raise


def dropout_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s dropout masks: the network's seed on rank 0, a hash of
    (seed, rank) elsewhere, so ranks drop independent elements."""
    if rank == 0:
        return seed
    return hash32(seed ^ hash32((rank * HASH_GOLDEN) & MASK32))


# ---------------------------------------------------------------------- communicators


class MpiCommunicator:
    """Collectives over MPI on host (NumPy) arrays; also the host channel of NcclCommunicator.

    Device-array collectives (in place): `allreduce_sum`, `broadcast`. Host values: `sum_floats`,
    `any`, `broadcast_object`.
    """

    def __init__(self, comm=None):
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def allreduce_sum(self, array) -> None:
        """array <- sum over ranks of array, in place on every rank."""
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def broadcast(self, array, root: int = 0) -> None:
        """array <- rank `root`'s array, in place."""
        self.comm.Bcast(array, root=root)

    def sum_floats(self, values) -> list[float]:
        """Elementwise sums over ranks of a short list of host numbers (float64)."""
        buffer = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one."""
        buffer = np.array([1 if flag else 0], dtype=np.int32)  # a buffer, not a pickle: once per step
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.MAX)
        return bool(buffer[0])

    def broadcast_object(self, value, root: int = 0):
        """Rank `root`'s `value` (a small picklable object), on every rank."""
        return self.comm.bcast(value, root=root)


class _CupyMemory:
    """What NcclCommunicator needs from CuPy: its device, array addresses, the current stream."""

    def __init__(self, index: int):
        import cupy

        self.cupy, self.index = cupy, index

    def device(self):
        return self.cupy.cuda.Device(self.index)

    def address(self, array) -> int:
        return array.data.ptr

    def stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr


class NcclCommunicator(MpiCommunicator):
    """Device collectives through NCCL on CuPy arrays; host values through MPI.

    NCCL's communicator is built from a unique id drawn on rank 0 and broadcast over MPI. Its
    operations are queued on CuPy's current stream, so the kernels that follow see their result.
    `nccl` (default cupy.cuda.nccl) and `memory` are injectable for the test double.
    """

    def __init__(self, device: int = 0, comm=None, nccl=None, memory=None):
        super().__init__(comm)
        if nccl is None:
            from cupy.cuda import nccl
            if not getattr(nccl, "available", True):
                raise ImportError('NCCL is not installed; pip install "nvidia-nccl-cu12>=2.18"')
        self.nccl = nccl
        self.memory = _CupyMemory(device) if memory is None else memory
        unique_id = nccl.get_unique_id() if self.rank == 0 else None
        unique_id = self.comm.bcast(unique_id, root=0)
        with self.memory.device():
            self.nccl_comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self._dtypes = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}

    def _dtype(self, array) -> int:
        name = str(array.dtype)
        if name not in self._dtypes:
            raise TypeError(f"NCCL collectives here take float32 or float64 arrays, got {name}")
        return self._dtypes[name]

    def allreduce_sum(self, array) -> None:
        address = self.memory.address(array)  # send and receive in the same buffer: in place
        self.nccl_comm.allReduce(address, address, array.size, self._dtype(array), self.nccl.NCCL_SUM,
                                 self.memory.stream())

    def broadcast(self, array, root: int = 0) -> None:
        self.nccl_comm.bcast(self.memory.address(array), array.size, self._dtype(array), root,
                             self.memory.stream())


_NCCL_COMMUNICATORS: dict[int, NcclCommunicator] = {}


def communicator_for(net):
    """NCCL for a network on a CUDA device (one communicator per device, built once), MPI otherwise."""
    kind, index = parse_device(net.device)
    if kind != "cuda":
        return MpiCommunicator()
    if index not in _NCCL_COMMUNICATORS:
        _NCCL_COMMUNICATORS[index] = NcclCommunicator(index)
    return _NCCL_COMMUNICATORS[index]


# ---------------------------------------------------------------------- what fit does on N ranks


class DataParallel:
    """The data-parallel parts of one fit: start, shards, gradient reduction, shared decisions.

    `communicator`: True picks one for the network's device (`communicator_for`), or pass a
    communicator. Building it makes every rank start as rank 0 (parameters, optimizer state,
    layer state, seed, epoch count); `self.seed` is the shared shuffle seed.
    """

    def __init__(self, net, optimizer, loss, seed: int, communicator=True):
        self.comm = communicator_for(net) if communicator is True else communicator
        self.rank, self.size = self.comm.rank, self.comm.size
        self.is_root = self.rank == 0
        self.net, self.loss, self.backend = net, loss, net.backend
        self.agree("network architecture", (net.config()["layers"], net.dtype, net.num_parameters()))
        self.seed = self._start(net, optimizer, seed)

    def agree(self, what: str, value) -> None:
        """Raise ValueError on every rank if any rank's `value` differs from rank 0's: a mismatch
        found on one rank only would leave the others waiting in the next collective."""
        root = self.comm.broadcast_object(value)
        if self.comm.any(root != value):
            raise ValueError(f"the ranks disagree on the {what}; every rank must call fit with the same "
                             f"network and data (rank 0 has {root!r})")

    def _start(self, net, optimizer, seed: int) -> int:
        comm = self.comm
        comm.broadcast(net.store.data)
        for name in sorted(optimizer.state):
            comm.broadcast(optimizer.state[name])
        batchnorms = [layer for layer in net.layers if isinstance(layer, BatchNorm)]
        for layer in batchnorms:
            comm.broadcast(layer.running_mean)
            comm.broadcast(layer.running_var)
        dropouts = [layer for layer in net.layers if isinstance(layer, Dropout)]
        shared = comm.broadcast_object({"seed": seed, "net_seed": net.seed, "epochs_trained": net.epochs_trained,
                                        "step_count": optimizer.step_count,
                                        "dropout_steps": [layer.step for layer in dropouts]})
        net.seed, net.epochs_trained = shared["net_seed"], shared["epochs_trained"]
        optimizer.step_count = shared["step_count"]
        for layer, step in zip(dropouts, shared["dropout_steps"]):
            layer.step, layer.seed = step, net.seed
        self._dropouts = dropouts
        return shared["seed"]

    def begin(self, samples: int, batch_size: int, **settings) -> None:
        """Before the first step: check that every rank runs the same loop and that BatchNorm gets
        >= 2 rows per shard, then give each rank's Dropout layers the rank's seed."""
        self.agree("training set size and fit settings", {"samples": samples, "batch_size": batch_size, **settings})
        if any(isinstance(layer, BatchNorm) for layer in self.net.layers):
            for rows in {min(batch_size, samples), samples % batch_size or batch_size}:
                if 1 in (rows // self.size, -(-rows // self.size)):
                    raise ValueError(f"batch_size={batch_size} with {samples} training samples on {self.size} "
                                     f"ranks gives a rank a shard of 1 sample of a {rows}-sample batch, but "
                                     f"BatchNorm needs at least 2; choose another batch_size")
        for layer in self._dropouts:
            layer.seed = dropout_seed(self.net.seed, self.rank)

    def close(self) -> None:
        """After fit: every rank's network is rank 0's again (dropout seeds back to the network's)."""
        for layer in self._dropouts:
            layer.seed = self.net.seed

    # -- per step

    def shard(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of batch rows [start, stop)."""
        rows = stop - start
        return start + self.rank * rows // self.size, start + (self.rank + 1) * rows // self.size

    def scale_loss(self, value, grad, rows: int, batch_rows: int):
        """E_r and dE_r/dpred in place: for reduction "sum", (b / b_r) times the rank's own sum."""
        if self.loss.reduction != "sum" or rows == batch_rows:
            return value
        scale = batch_rows / rows
        grad *= scale
        return value * scale

    def empty_shard(self):
        """A rank with no rows in this batch: zero gradient and zero loss (it still joins the allreduce)."""
        self.net.store.grad[...] = 0
        return self.backend.zeros(())

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
        """The epoch's loss and accuracy over every rank's rows; BatchNorm running statistics
        averaged over the ranks (so every rank evaluates and saves the same network)."""
        for layer in self.net.layers:
            if isinstance(layer, BatchNorm):
                for stats in (layer.running_mean, layer.running_var):
                    self.comm.allreduce_sum(stats)
                    stats *= 1.0 / self.size
        to_float = self.backend.to_scalar
        loss_total, hits, counted, with_accuracy = self.comm.sum_floats(
            [0.0 if loss_sum is None else to_float(loss_sum), 0.0 if correct is None else to_float(correct),
             counted, correct is not None])
        metrics = {"loss": loss_total / samples}
        if with_accuracy:
            metrics["accuracy"] = hits / counted
        return metrics

    def shared_metrics(self, metrics: dict) -> dict:
        """Rank 0's metrics on every rank: the history and early stopping are decided once."""
        return self.comm.broadcast_object(metrics)
