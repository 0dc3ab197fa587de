"""Data-parallel training over MPI (CPU, mpi4py) or NCCL (GPU, cupy.cuda.nccl): the communicators
and the launch helpers. What fit does on N ranks, and the math, is in backprop/parallel.py.

    mpirun -n 4 python -m backprop train --distributed
    mpirun -n 4 python -m mpi4py my_script.py      # a script calling bp.fit(..., distributed=True)

Only rank 0 shows progress; checkpoints are the caller's to write from rank 0 (`is_root()`).
"""

from __future__ import annotations

import contextlib
import os
import traceback

import numpy as np

from backprop.backends import parse_device

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
    index = local % max(count, 1)
    # The rank's GPU current for the whole process: leaving a `with Device(i)` makes GPU 0 current
    # again, and since CUDA 12 making a device current creates its context (hundreds of MB on
    # GPU 0 for every rank otherwise).
    import cupy

    cupy.cuda.Device(index).use()
    return f"cuda:{index}"


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
                from backprop.backends.devices import LIBRARIES, install_hint

                raise ImportError(f"{LIBRARIES['nccl']} did not load; {install_hint('nccl')}")
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
