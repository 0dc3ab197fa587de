"""A test double of the part of CuPy that CupyBackend uses, swapped in for the `cupy` module
(`sys.modules["cupy"]`), so the whole backend runs in CI without a GPU.

- Arrays: `ndarray`, a NumPy subclass that the rest of backprop takes for a CuPy array. As in
  CuPy, arithmetic that mixes it with a host NumPy array is refused, results stay device arrays
  (0-d ones too), `.get()` copies to the host, and `empty` is not zeroed (it holds NaN here, so
  reading memory before writing it shows).
- Kernels: `RawModule(code=..., options=...)` builds `code` for the host with g++ and
  kernels/host_shim.h (tests/host_kernels.py); `get_function(name)` returns a kernel whose launch
  refuses any argument a real launch would misread: a host array, an array of another dtype, or a
  scalar whose C type (as CuPy would pass it) is not exactly the parameter's. Like CuPy, it does
  not look at strides: a non-contiguous array must be refused before it gets here.
- cuBLAS: `cublas.gemm(transa, transb, a, b, out=...)` with CuPy's checks, computed by NumPy.
- Detection: one device; `cuda.runtime.getDeviceCount()` and `cuda.nvrtc.getVersion()` answer.

One difference from CuPy remains: `np.asarray(device_array)` works here (a NumPy subclass cannot
refuse it), where CuPy raises. CupyBackend does not import NumPy at all; it moves data to the host
with `.get()` only.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from host_kernels import HostModule

float32, float64, int64 = np.float32, np.float64, np.int64
_DEVICES = 1


class Device:
    """cupy.cuda.Device: a context manager selecting a GPU (here only device 0 exists)."""

    def __init__(self, device_id: int = 0):
        if not 0 <= device_id < _DEVICES:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {device_id} of {_DEVICES}")
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


cuda = types.SimpleNamespace(
    Device=Device,
    runtime=types.SimpleNamespace(getDeviceCount=lambda: _DEVICES),
    nvrtc=types.SimpleNamespace(getVersion=lambda: (12, 9)),
)


class ndarray(np.ndarray):
    """A device array: NumPy memory with CuPy's manners."""

    __module__ = "cupy"  # backprop.boundary.is_cupy_array goes by the module name, as for CuPy's

    def get(self):
        return np.array(self.view(np.ndarray), copy=True)

    @property
    def device(self):
        return Device(0)

    def __array_namespace__(self, api_version=None):
        return sys.modules[__name__]

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        outs = kwargs.get("out", ())
        for x in inputs + outs:
            if isinstance(x, np.ndarray) and not isinstance(x, ndarray):
                raise TypeError(f"{ufunc.__name__}: a host NumPy array cannot meet a device array "
                                "(CuPy refuses implicit transfers)")
        host = [x.view(np.ndarray) if isinstance(x, ndarray) else x for x in inputs]
        if outs:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in outs)
        result = getattr(ufunc, method)(*host, **kwargs)
        if outs:
            return outs[0] if len(outs) == 1 else outs
        if isinstance(result, tuple):
            return tuple(np.asarray(r).view(ndarray) for r in result)
        return np.asarray(result).view(ndarray)


def _device(values) -> ndarray:
    return np.asarray(values).view(ndarray)


def asarray(a, dtype=None) -> ndarray:
    if isinstance(a, ndarray) and (dtype is None or a.dtype == dtype):
        return a
    source = a.view(np.ndarray) if isinstance(a, ndarray) else a
    return _device(np.array(source, dtype=dtype, copy=True))


def ascontiguousarray(a) -> ndarray:
    return a if a.flags.c_contiguous else _device(np.ascontiguousarray(a.view(np.ndarray)))


def empty(shape, dtype=float64) -> ndarray:
    fill = np.nan if np.dtype(dtype).kind == "f" else -1
    return _device(np.full(shape, fill, dtype=dtype))


def zeros(shape, dtype=float64) -> ndarray:
    return _device(np.zeros(shape, dtype=dtype))


def reshape(a, shape) -> ndarray:
    return a.reshape(shape)


# Ops the reference Backend calls on `xp` where CupyBackend keeps the reference (no kernel of
# its own): batchnorm_backward_eval. Both exist in CuPy with these signatures.
def sqrt(a) -> ndarray:
    return _device(np.sqrt(a))


def sum(a, axis=None) -> ndarray:  # noqa: A001 - the name CuPy uses
    return _device(np.sum(a, axis=axis))


def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """out = op(a) @ op(b), with CuPy's checks (cupy/cublas.py); NumPy does the arithmetic."""
    assert isinstance(a, ndarray) and isinstance(b, ndarray)
    assert a.ndim == b.ndim == 2 and a.dtype == b.dtype
    assert transa in ("N", "T") and transb in ("N", "T") and alpha == 1.0 and beta == 0.0
    left = a.view(np.ndarray).T if transa == "T" else a.view(np.ndarray)
    right = b.view(np.ndarray).T if transb == "T" else b.view(np.ndarray)
    assert left.shape[1] == right.shape[0]
    if out is None:
        out = empty((left.shape[0], right.shape[1]), dtype=a.dtype)
    assert out.shape == (left.shape[0], right.shape[1]) and out.dtype == a.dtype
    np.matmul(left, right, out=out.view(np.ndarray))
    return out


cublas = types.SimpleNamespace(gemm=_gemm)

_built: dict[str, HostModule] = {}


class RawKernel:
    """A kernel of a RawModule: kernel(grid, block, args) runs the host build."""

    def __init__(self, function):
        self.function = function

    def __call__(self, grid, block, args, shared_mem=0):
        if not (isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)):
            raise TypeError("grid, block and args must be tuples, as CuPy requires")
        if len(grid) != 1 or len(block) != 1 or shared_mem != 0:
            raise ValueError("our kernels launch 1-D grids of 1-D blocks with static shared memory")
        for i, arg in enumerate(args):
            if isinstance(arg, np.ndarray) and not isinstance(arg, ndarray):
                raise TypeError(f"{self.function.name} argument {i}: a host NumPy array cannot be "
                                "passed to a GPU kernel")
        self.function(grid[0], block[0], args)


class RawModule:
    """cupy.RawModule(code=..., options=...): compiled for the host on first use."""

    def __init__(self, *, code: str, options: tuple = ()):
        if '#include "' in code:
            raise ValueError("NVRTC has no file system to search: headers must be inlined into code")
        self.code, self.options = code, options

    def get_function(self, name: str) -> RawKernel:
        if self.code not in _built:
            _built[self.code] = HostModule(self.code)
        return RawKernel(_built[self.code].function(name))
