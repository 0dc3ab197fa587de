"""One rank of a data-parallel test: `mpiexec -n 2 python tests/distributed_worker.py CASE OUT_DIR`.

Each rank runs fit(..., distributed=...) on the case's setup and writes what it ended with to
OUT_DIR/rank{r}.npz; tests/test_distributed.py compares the ranks with each other and with the
same case run in one process (`build(case, rank=0)` is that setup).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

import backprop as bp


def _data(n, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), rng.integers(0, classes, n)


def _mlp(dtype, *middle, l1=0.0, l2=0.0, device="cpu"):
    return bp.Sequential(bp.Dense(6, 16, activation="relu", l2=l2), *middle, bp.Dense(16, 3, l1=l1),
                         dtype=dtype, seed=1, device=device)


class InterruptingLoss(bp.CrossEntropyLoss):
    """Rank 1 presses Ctrl-C (SIGINT to itself) while computing its 3rd batch; rank 0 never does."""

    def __init__(self, rank):
        super().__init__()
        self.rank, self.calls = rank, 0

    def value_and_grad(self, backend, pred, target):
        self.calls += 1
        if self.rank == 1 and self.calls == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().value_and_grad(backend, pred, target)


class StopAt(bp.Callback):
    """Asks to stop at the end of epoch `epoch`."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, metrics):
        self.stop_training = self.stop_training or epoch == self.epoch


class RecordedRows:
    """Data only by __len__ and data[idx], recording each index array read."""

    def __init__(self, array):
        self.array, self.asked = array, []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, idx):
        self.asked.append(np.asarray(idx))
        return self.array[idx]


def build(case: str, rank: int = 0, device: str = "cpu"):
    """(net, optimizer, X, y, fit keyword arguments) of `case` as rank `rank` sees it."""
    X, y = _data(203)
    kwargs = dict(loss=bp.CrossEntropyLoss(), epochs=3, batch_size=32, progress=False)
    if case == "mean_float64":  # uneven last batch (11 rows: shards of 5 and 6), l2, momentum, validation
        net = _mlp("float64", l2=1e-3, device=device)
        opt = bp.SGD(net.parameters(), lr=0.1, momentum=0.9)
        kwargs.update(validation_split=0.1)
    elif case == "cnn_float64":  # NCHW batches through convolution and both poolings, l2, momentum
        X = np.random.default_rng(2).normal(size=(203, 2, 6, 5))
        net = bp.Sequential(bp.Conv2D(2, 4, 3, padding=1, activation="relu", l2=1e-3), bp.MaxPool2D(2),
                            bp.AvgPool2D((1, 2)), bp.Flatten(), bp.Dense(12, 3), input_shape=(2, 6, 5),
                            dtype="float64", seed=1, device=device)
        opt = bp.SGD(net.parameters(), lr=0.1, momentum=0.9)
    elif case == "adam_float32":
        net = _mlp("float32")
        opt = bp.Adam(net.parameters(), lr=1e-2)
    elif case == "sum_one_row_last_batch":  # 65 = 32 + 32 + 1: rank 0 has no rows in the last batch
        X, y = X[:65], np.eye(3)[y[:65]]
        net = _mlp("float64", l1=1e-3)
        opt = bp.SGD(net.parameters(), lr=1e-3)
        kwargs.update(loss=bp.MSELoss(reduction="sum"), epochs=2)
    elif case == "early_stopping":  # rank 1's validation labels differ: only rank 0's numbers may decide
        net = _mlp("float64")
        opt = bp.SGD(net.parameters(), lr=0.5)
        X_val, y_val = _data(50, seed=5)
        if rank == 1:
            y_val = (y_val + 1) % 3
        kwargs.update(validation_data=(X_val, y_val), early_stopping=1, epochs=30)
    elif case in ("weighted_clipped", "weighted_penalty_per_weight"):
        # sample weights summed over both ranks' rows (shards of 5 and 6 in the last batch), the
        # gradient clipped after the allreduce, the lr halved on a plateau of the validation loss
        net = _mlp("float64", l2=1e-3, device=device)
        opt = bp.SGD(net.parameters(), lr=0.1, momentum=0.9)
        weights = np.random.default_rng(3).uniform(0.0, 2.0, X.shape[0])
        kwargs.update(sample_weight=weights, clip_norm=0.5, validation_split=0.1, epochs=4,
                      metrics=["f1", "precision", "recall", bp.TopKAccuracy(2)],
                      scheduler=bp.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.5),
                      penalty_scale="weight" if case == "weighted_penalty_per_weight" else "batch")
    elif case == "callback_stop":  # rank 0's callback stops at epoch 2, rank 1's would at 5: rank 0 decides
        net = _mlp("float64")
        opt = bp.SGD(net.parameters(), lr=0.1)
        kwargs.update(callbacks=[StopAt(2 if rank == 0 else 5)], epochs=6)
    elif case == "diverge_on_one_rank":  # rank 1's copy of row 40 (batch 3, its shard) makes the loss inf
        X, y = X[:64], np.eye(3)[y[:64]]
        if rank == 1:
            y[40, 0] = 1e300
        net = _mlp("float64")
        opt = bp.SGD(net.parameters(), lr=1e-2)
        kwargs.update(loss=bp.MSELoss(), batch_size=16, shuffle=False)
    elif case == "interrupt_on_one_rank":
        net = _mlp("float64")
        opt = bp.SGD(net.parameters(), lr=1e-2)
        kwargs.update(loss=InterruptingLoss(rank), batch_size=16)
    elif case in ("batchnorm", "dropout"):  # one step of one 16-row batch, in order
        middle = bp.BatchNorm(16) if case == "batchnorm" else bp.Dropout(0.5)
        net = _mlp("float64", middle)
        opt = bp.SGD(net.parameters(), lr=0.1)
        X, y = X[:16], y[:16]
        kwargs.update(epochs=1, batch_size=16, shuffle=False)
    elif case == "streamed":  # X and y read a batch at a time: each rank reads its own rows
        net = _mlp("float64")
        opt = bp.SGD(net.parameters(), lr=0.1, momentum=0.9)
        X, y = RecordedRows(X), RecordedRows(y)
    elif case == "bad_data_on_one_rank":  # rank 1's copy of X holds a NaN: refused on every rank
        net = _mlp("float64")
        opt = bp.SGD(net.parameters(), lr=0.1)
        if rank == 1:
            X = X.copy()
            X[7, 2] = np.nan
    elif case == "custom":  # the README's own activation, stateful layer and loss; one step an epoch
        from readme_extensions import LogCoshLoss, Recenter

        net = bp.Sequential(bp.Dense(6, 16, activation="softsign"), Recenter(), bp.Dense(16, 3), dtype="float64",
                            seed=1, device=device)
        opt = bp.SGD(net.parameters(), lr=0.1, momentum=0.9)
        X, y = X[:16], np.eye(3)[y[:16]]
        kwargs.update(loss=LogCoshLoss(), batch_size=16, shuffle=False)
    else:
        raise ValueError(f"unknown case {case!r}")
    return net, opt, X, y, kwargs


def main(case: str, out_dir: str) -> None:
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    distributed, device = True, "cpu"
    if case.startswith("gpu:"):  # CuPy arrays and NCCL, one GPU per rank (the double's, as the tests' is)
        import cupy_double

        from backprop.distributed import local_device

        cupy_double.install_from_environment()
        case, device = case.split(":", 1)[1], local_device("cuda")
    machine = None
    if case.startswith("nccl_double_cuda:"):  # as below, on the rank's GPU of the CuPy double
        import cupy_double
        import host_kernels

        from backprop.distributed import local_device

        sys.modules.update(cupy_double.modules())
        host_kernels._cache_dir = os.environ.get("BACKPROP_HOST_KERNELS_DIR", host_kernels._cache_dir)
        machine, device = cupy_double.machine, local_device("cuda")
        case = "nccl_double:" + case.split(":", 1)[1]
    if case.startswith("nccl_double:"):  # the NCCL communicator, driven through the double
        from nccl_double import DeviceMemory, FakeNccl, HostMemory

        from backprop.distributed import NcclCommunicator

        case = case.split(":", 1)[1]
        memory = HostMemory() if machine is None else DeviceMemory(int(device[5:]))
        nccl = FakeNccl(memory)
        distributed = NcclCommunicator(device=0 if machine is None else int(device[5:]), nccl=nccl, memory=memory)
    net, opt, X, y, kwargs = build(case, rank, device)
    outcome = "finished"
    try:
        bp.fit(net, X, y, optimizer=opt, distributed=distributed, **kwargs)
    except bp.TrainingDivergedError as exc:
        outcome = f"diverged at epoch {exc.epoch}, batch {exc.batch}"
    except KeyboardInterrupt:
        outcome = "interrupted"
    except ValueError as exc:
        outcome = f"refused: {exc}"
    history = net.history.to_dict() if hasattr(net, "history") else {}
    result = {"params": bp.to_numpy(net.store.data), "history": json.dumps(history), "outcome": outcome,
              "steps": opt.step_count, "epochs_trained": net.epochs_trained}
    if isinstance(X, RecordedRows):  # every row index this rank read, and how many per read
        result["rows_read"] = np.concatenate(X.asked)
        result["reads"] = np.array([idx.size for idx in X.asked])
    for i, layer in enumerate(net.layers):
        for key, value in layer.state().items():
            result[f"layer{i}.{key}"] = value
        if isinstance(layer, bp.Dropout):
            result[f"layer{i}.seed_after_fit"] = layer._noise_seed
    if distributed is not True:
        result["nccl_calls"] = json.dumps(nccl.calls)
    if machine is not None:  # where anything ran, and where CUDA contexts were created
        result["work"], result["contexts"] = sorted(machine.work), sorted(machine.contexts)
    np.savez(Path(out_dir) / f"rank{rank}.npz", **result)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception:  # the other ranks would wait for this one in their next collective: stop them all
        import traceback

        from mpi4py import MPI

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
