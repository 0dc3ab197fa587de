"""A test double of the part of cupy.cuda.nccl that NcclCommunicator uses, on host memory.

`FakeNccl` stands in for the `cupy.cuda.nccl` module: `get_unique_id`, `NcclCommunicator`, and
the dtype and op constants (NCCL's own values). Its communicator checks every argument as NCCL
would receive it (integers for addresses, counts, types and streams; send == receive for an
in-place allreduce; the stream of the current device), reads and writes the memory at the raw
address it is given, and does the collective over MPI. So a wrong address, count or dtype
gives wrong numbers, not a pass. `HostMemory` stands in for CuPy's side: addresses of NumPy
arrays, a stream handle, a device context.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np
from mpi4py import MPI

STREAM = 0x5EED  # the handle HostMemory reports as the current stream


class HostMemory:
    def __init__(self):
        self.in_device_context = False

    @contextlib.contextmanager
    def device(self):
        self.in_device_context = True
        try:
            yield
        finally:
            self.in_device_context = False

    def address(self, array) -> int:
        assert array.flags.c_contiguous, "NCCL needs one contiguous buffer"
        return array.ctypes.data

    def stream(self) -> int:
        return STREAM


class FakeNccl:
    NCCL_SUM = 0
    NCCL_FLOAT32 = 7
    NCCL_FLOAT64 = 8
    _ctypes = {NCCL_FLOAT32: ctypes.c_float, NCCL_FLOAT64: ctypes.c_double}

    def __init__(self, memory: HostMemory):
        self.memory = memory
        self.calls: list[tuple] = []

    def get_unique_id(self) -> tuple:
        return tuple(int(b) - 128 for b in os.urandom(128))  # cupy gives 128 signed chars

    def NcclCommunicator(self, ndev, unique_id, rank):  # noqa: N802 (cupy's name)
        return _FakeComm(self, ndev, unique_id, rank)

    def host_view(self, address, count, datatype) -> np.ndarray:
        pointer = ctypes.cast(address, ctypes.POINTER(self._ctypes[datatype]))
        return np.ctypeslib.as_array(pointer, shape=(count,))


class _FakeComm:
    def __init__(self, nccl: FakeNccl, ndev, unique_id, rank):
        world = MPI.COMM_WORLD
        assert nccl.memory.in_device_context, "the NCCL communicator must be built on the rank's device"
        assert (ndev, rank) == (world.Get_size(), world.Get_rank())
        assert len(unique_id) == 128
        assert world.allgather(unique_id) == [unique_id] * ndev, "every rank must get rank 0's unique id"
        self.nccl, self.world = nccl, world

    def _check(self, count, datatype, stream):
        for value in (count, datatype, stream):
            assert isinstance(value, int) and not isinstance(value, bool), f"NCCL takes integers, got {value!r}"
        assert datatype in FakeNccl._ctypes, f"unknown NCCL datatype {datatype}"
        assert stream == STREAM, "collectives go on the current stream"

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        self._check(count, datatype, stream)
        assert op == FakeNccl.NCCL_SUM
        assert sendbuf == recvbuf, "the gradient buffer is reduced in place"
        self.nccl.calls.append(("allReduce", count, datatype))
        buffer = self.nccl.host_view(recvbuf, count, datatype)
        self.world.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

    def bcast(self, buff, count, datatype, root, stream):
        self._check(count, datatype, stream)
        self.nccl.calls.append(("bcast", count, datatype))
        self.world.Bcast(self.nccl.host_view(buff, count, datatype), root=root)
