"""A test double of the part of cupy.cuda.nccl that NcclCommunicator uses, on host memory.

`FakeNccl` stands in for the `cupy.cuda.nccl` module: `get_unique_id`, `NcclCommunicator`, and
the dtype and op constants (NCCL's own values). Its communicator checks every argument as NCCL
would receive it (integers for addresses, counts, types and streams; send == receive for an
in-place allreduce; the stream of the current device, so the communicator's device must be
current), reads and writes the memory at the raw address it is given after the work queued
before it (stream order), and does the collective over MPI. So a wrong address, count or dtype
gives wrong numbers, not a pass. The memory stands in for CuPy's side (addresses, a stream
handle, the device): `HostMemory` for NumPy arrays, `DeviceMemory` for arrays of the CuPy double
(tests/cupy_double.py) on one of its GPUs, which must hold every buffer. `CupyDoubleNccl` is
what `from cupy.cuda import nccl` gives under the CuPy double, for NcclCommunicator's defaults.
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

    def is_current(self) -> bool:
        return self.in_device_context

    def address(self, array) -> int:
        assert array.flags.c_contiguous, "NCCL needs one contiguous buffer"
        return array.ctypes.data

    def stream(self) -> int:
        return STREAM

    def synchronize(self) -> None:
        """NumPy's work is done when it returns."""


class DeviceMemory(HostMemory):
    """Arrays of the CuPy double on its GPU `index`."""

    def __init__(self, index: int):
        import cupy_double

        super().__init__()
        self.double, self.index = cupy_double, index

    def device(self):
        return self.double.Device(self.index)

    def is_current(self) -> bool:
        return self.double.machine.current == self.index

    def address(self, array) -> int:
        assert array.device_id == self.index, f"a buffer of cuda:{array.device_id} given to cuda:{self.index}'s NCCL"
        return super().address(array)

    def stream(self) -> int:
        """The current stream: of another device when another one is current."""
        current = self.double.machine.current
        return STREAM if current == self.index else STREAM + 1 + current

    def synchronize(self) -> None:
        self.double.machine.synchronize(self.index)


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


class CupyDoubleNccl(FakeNccl):
    """cupy.cuda.nccl of the CuPy double (what `from cupy.cuda import nccl` gives there): each
    communicator is FakeNccl's on the double's device current when it is built, and its
    collectives must come on that device's stream, as NcclCommunicator's own CuPy side
    (addresses from `array.data.ptr`, the stream from cupy.cuda.get_current_stream()) gives it."""

    def __init__(self):
        import cupy_double

        super().__init__(memory=None)
        self.double = cupy_double

    def NcclCommunicator(self, ndev, unique_id, rank):  # noqa: N802 (cupy's name)
        index = self.double.machine.current
        on_device = FakeNccl(DeviceMemory(index))
        on_device.calls = self.calls
        return _FakeComm(on_device, ndev, unique_id, rank, stream=self.double.stream_handle(index))


class _FakeComm:
    def __init__(self, nccl: FakeNccl, ndev, unique_id, rank, stream: int = STREAM):
        world = MPI.COMM_WORLD
        assert nccl.memory.is_current(), "the NCCL communicator must be built on the rank's device"
        assert (ndev, rank) == (world.Get_size(), world.Get_rank())
        assert len(unique_id) == 128
        assert world.allgather(unique_id) == [unique_id] * ndev, "every rank must get rank 0's unique id"
        self.nccl, self.world, self.stream = nccl, world, stream  # the handle of its device's stream

    def _check(self, count, datatype, stream):
        for value in (count, datatype, stream):
            assert isinstance(value, int) and not isinstance(value, bool), f"NCCL takes integers, got {value!r}"
        assert datatype in FakeNccl._ctypes, f"unknown NCCL datatype {datatype}"
        assert stream == self.stream, "collectives go on the stream of the communicator's device, made current"
        self.nccl.memory.synchronize()  # the collective runs after the work queued before it

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
