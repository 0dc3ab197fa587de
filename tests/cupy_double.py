"""A test double of the part of CuPy that CupyBackend uses, so the whole backend runs in CI
without a GPU. `modules()` gives the modules to put in `sys.modules` ("cupy", "cupy.cuda" and,
when cuBLAS is "installed", "cupy.cublas"); `install(monkeypatch)` puts them there for one test.

As CuPy (14.2) does:
- Imports: `import cupy` gives `cupy` and `cupy.cuda`; `cupy.cublas` is a submodule CuPy does
  not import, which fails when the cuBLAS library is missing (`modules(cublas=False)`), and
  NVRTC may be missing too (`modules(nvrtc=False)`).
- Arrays: `ndarray`, a NumPy subclass that the rest of backprop takes for a CuPy array.
  Arithmetic that mixes it with a host NumPy array is refused, results stay device arrays (0-d
  ones too), `.get()` copies to the host, `empty` is not zeroed (it holds NaN here, so reading
  memory before writing it shows), `ascontiguousarray` of a 0-d array has shape (1,), and
  `copy()` copies from any device onto the current one. The Array API functions the reference
  ops call (`sum`, `where`, `exp`, ...) run on the current device.
- Kernels: `RawModule(code=..., options=...)` builds `code` for the host with g++ and
  kernels/host_shim.h (tests/host_kernels.py), loaded on the device current at
  `get_function`. A launch passes a device array as its pointer, a host NumPy array of one
  element by value as a scalar of its dtype (larger ones are a TypeError), and runs a grid or
  block of 0 as 1; it refuses any argument a real launch would misread: an array of another
  dtype, a scalar whose C type (as CuPy would pass it) is not exactly the parameter's. Like
  CuPy, it does not look at strides: a non-contiguous array must be refused before it gets here.
- NCCL: `from cupy.cuda import nccl` gives tests/nccl_double.py's CupyDoubleNccl (collectives over
  MPI on the memory at the addresses given); `array.data.ptr` is an array's address, and the
  current stream's `ptr` names its device.
- cuBLAS: `cublas.gemm(transa, transb, a, b, out=...)` with CuPy's checks, computed in another
  summation order than NumPy's (split-K: the inner dimension cut into chunks whose products are
  added in a tree), as cuBLAS picks its own order; `cupy.matmul` in that order too, per matrix of
  a stack (CuPy runs stacks as cuBLAS's batched GEMM).
- Launches are asynchronous: kernels and GEMMs are queued on their device and run at a sync
  point (`get()`, `float()`, `Device.synchronize()`, `Event.synchronize()`, and any other
  operation on that device, which runs after them in stream order); until then their outputs
  hold what was there before. `get()` synchronizes the array's own device, as CuPy's does with
  the default stream. `Event` and `get_elapsed_time` refuse to time unfinished work.

The kernels' host builds model what `modules(emulation=...)` names of a GPU's arithmetic (FMA
contraction, CUDA's libm ulps, flush-to-zero, blocks in reverse: host_kernels.Emulation). For a
whole test session, BACKPROP_CUPY_DOUBLE names it (`install_from_environment`, which
tests/conftest.py calls), and the `gpu` tests run on the double.

Stricter than CuPy, on purpose:
- Several devices (2 by default). An array lives on the device that was current when it was
  made; a kernel launch, a GEMM or an array operation given an array of another device raises
  (CuPy would reach it through peer access, which hides exactly the bug of working on the wrong
  device). `machine.work` records the devices where anything ran or was allocated,
  `machine.contexts` those where a CUDA context was created (by that, or by making the device
  current: `cudaSetDevice` creates one since CUDA 12, also when `with Device(1)` restores 0).

Two differences remain, both because the double's arrays subclass NumPy's: `np.asarray(device_array)`
works here (a NumPy subclass cannot refuse it), where CuPy raises; and array-api-compat would take
them for NumPy arrays, so this module tells it they are CuPy's (`_seen_as_cupy_arrays`). CupyBackend does not import NumPy at all; it moves data to the host with
`.get()` only.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
import types

import numpy as np

import host_kernels
from host_kernels import PLAIN, Emulation, HostModule, c_type_of

float32, float64, int64 = np.float32, np.float64, np.int64
SPLIT_K = 32  # inner-dimension chunk of the double's GEMM
# What a pointer parameter points to, as C declares it.
_POINTEES = {"float": np.float32, "double": np.float64, "long long": np.int64}


class Machine:
    """The GPUs of the double: which one is current, their queues of unfinished work, and where
    work ran or contexts were created."""

    def __init__(self, devices: int):
        self.devices = devices
        self.current = 0
        self.queues: dict[int, list] = {d: [] for d in range(devices)}
        self.work: set[int] = set()
        self.contexts: set[int] = set()

    def set_device(self, device: int) -> None:
        """cudaSetDevice: makes `device` current and creates its context."""
        if not 0 <= device < self.devices:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {device} of {self.devices}")
        self.current = device
        self.contexts.add(device)

    def touch(self) -> None:
        """Something runs on, or is allocated on, the current device."""
        self.work.add(self.current)
        self.contexts.add(self.current)

    def run(self, work) -> None:
        """An array operation on the current device, in stream order: what is queued there first,
        then `work`, now. A GPU raises no floating-point errors, whatever NumPy's errstate says."""
        self.touch()
        self.synchronize(self.current)
        with np.errstate(all="ignore"):
            work()

    def enqueue(self, work) -> None:
        """A launch: `work` runs at the current device's next sync point."""
        self.touch()
        self.queues[self.current].append(work)

    def synchronize(self, device: int) -> None:
        queue = self.queues[device]
        while queue:
            queue.pop(0)()

    def check(self, what: str, arrays) -> None:
        """Every device array among `arrays` must live on the current device."""
        for array in arrays:
            if isinstance(array, ndarray) and array.device_id != self.current:
                raise ValueError(f"{what}: an array of cuda:{array.device_id} was given while cuda:{self.current} "
                                 "is current (the double refuses what CuPy would reach through peer access)")


machine = Machine(2)
_namespace: types.ModuleType | None = None  # the "cupy" module of the latest modules() call
_emulation: Emulation = PLAIN  # what of a GPU's arithmetic the kernels' host builds model


class Device:
    """cupy.cuda.Device: `with Device(i)` makes GPU i current and restores the previous one."""

    def __init__(self, device=None):
        self.id = machine.current if device is None else int(device)
        if not 0 <= self.id < machine.devices:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {self.id} of {machine.devices}")
        self._previous: list[int] = []

    def __enter__(self):
        self._previous.append(machine.current)
        if self.id != machine.current:
            machine.set_device(self.id)
        return self

    def __exit__(self, *exc):
        machine.set_device(self._previous.pop())
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __int__(self):
        return self.id

    def use(self):
        machine.set_device(self.id)
        return self

    def synchronize(self):
        machine.synchronize(self.id)


class Stream:
    """The default (null) stream of the current device; its handle (`ptr`) names the device."""

    @property
    def ptr(self) -> int:
        return stream_handle(machine.current)

    def synchronize(self):
        machine.synchronize(machine.current)


class Event:
    """cupy.cuda.Event: `record()` marks the current device's queue; the mark completes when the
    work before it has run."""

    def __init__(self):
        self.done, self.time, self.device = False, None, None

    def record(self, stream=None):
        self.done, self.device = False, machine.current

        def complete():
            self.done, self.time = True, time.perf_counter()

        if machine.queues[machine.current]:
            machine.queues[machine.current].append(complete)
        else:
            complete()

    def synchronize(self):
        if self.device is not None:
            machine.synchronize(self.device)


def stream_handle(device: int) -> int:
    """The handle of `device`'s null stream, as cupy.cuda.get_current_stream().ptr gives it."""
    return 0x5EED0 + device


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two completed events; CUDA's cudaErrorNotReady while one is pending."""
    if not (start.done and end.done):
        raise RuntimeError("cudaErrorNotReady: an event has not completed (synchronize it first)")
    return (end.time - start.time) * 1e3


def _raise(exc):
    raise exc


class ndarray(np.ndarray):
    """A device array: NumPy memory with CuPy's manners and the device it lives on."""

    __module__ = "cupy"  # backprop.boundary.is_cupy_array goes by the module name, as for CuPy's

    def __array_finalize__(self, obj):
        # a view keeps its base's device; anything else is made on the current one
        self.device_id = getattr(obj, "device_id", machine.current)

    @property
    def device(self):
        return Device(self.device_id)

    @property
    def data(self):
        """CuPy's MemoryPointer, whose `ptr` is the device address (here, the host memory's)."""
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def _host(self) -> np.ndarray:
        return self.view(np.ndarray)

    def get(self):
        machine.synchronize(self.device_id)
        return np.array(self._host(), copy=True)

    def item(self):
        return self.get().item()

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __bool__(self):
        return bool(self.get())

    def copy(self, order="C"):
        """A copy on the current device, from any device, as CuPy's (after the source's queued work)."""
        machine.synchronize(self.device_id)
        result = empty(self.shape, self.dtype)
        machine.run(lambda: np.copyto(result._host(), self._host()))
        return result

    def astype(self, dtype, copy=True):
        machine.check("astype", (self,))
        result = empty(self.shape, dtype)
        machine.run(lambda: np.copyto(result._host(), self._host(), casting="unsafe"))
        return result

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
            value = value.copy()  # a host value: copied to the device as CuPy does
        machine.check("setitem", (self, value))
        source = value._host() if isinstance(value, ndarray) else value
        machine.run(lambda: self._host().__setitem__(key, source))

    def __array_namespace__(self, api_version=None):
        return _namespace

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        outs = kwargs.get("out", ())
        for x in inputs + outs:
            if isinstance(x, np.ndarray) and not isinstance(x, ndarray):
                raise TypeError(f"{ufunc.__name__}: a host NumPy array cannot meet a device array "
                                "(CuPy refuses implicit transfers)")
        machine.check(ufunc.__name__, inputs + outs)
        host = [x._host() if isinstance(x, ndarray) else x for x in inputs]
        if outs:
            kwargs["out"] = tuple(o._host() for o in outs)
        results = []
        machine.run(lambda: results.append(getattr(ufunc, method)(*host, **kwargs)))
        if outs:
            return outs[0] if len(outs) == 1 else outs
        result = results[0]
        if isinstance(result, tuple):
            return tuple(np.asarray(r).view(ndarray) for r in result)
        return np.asarray(result).view(ndarray)


def _device(values) -> ndarray:
    """A new array on the current device holding `values`."""
    machine.touch()
    return np.array(values, copy=True).view(ndarray)


def asarray(a, dtype=None, copy=None) -> ndarray:
    if isinstance(a, ndarray):
        if copy:
            return a.copy() if dtype is None else a.astype(dtype)
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return _device(np.asarray(a, dtype=dtype))


def ascontiguousarray(a) -> ndarray:
    if a.ndim == 0:
        return a.reshape((1,))  # CuPy's ravel of a 0-d array
    if a.flags.c_contiguous:
        return a
    machine.check("ascontiguousarray", (a,))
    result = empty(a.shape, a.dtype)
    machine.run(lambda: np.copyto(result._host(), a._host()))
    return result


def empty(shape, dtype=float64) -> ndarray:
    fill = np.nan if np.dtype(dtype).kind == "f" else -1
    return _device(np.full(shape, fill, dtype=dtype))


def zeros(shape, dtype=float64) -> ndarray:
    return _device(np.zeros(shape, dtype=dtype))


def reshape(a, newshape, order="C", *, copy=None) -> ndarray:
    return a.reshape(newshape)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False) -> ndarray:
    return asarray(obj, dtype=dtype, copy=copy)


def matrix_transpose(a) -> ndarray:
    return np.swapaxes(a, -1, -2)


def _parameters(text: str) -> inspect.Signature:
    """The signature of a function whose parameter list is `text`."""
    return inspect.signature(eval(f"lambda {text}: None"))  # noqa: S307 - our own constant text


def _operation(name: str, parameters: str | None = None, function=None):
    """The function `name` (NumPy's) as an operation on the current device: its array arguments
    must live there and be device arrays; its result is a new array there. `parameters`: CuPy's
    parameter list, which a call must fit (None for a ufunc: inputs positional, as NumPy's).
    `function`: NumPy's function of another name."""
    function = getattr(np, name) if function is None else function
    signature = None if parameters is None else _parameters(parameters)

    def on_device(*args, **kwargs):
        if signature is not None:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{name}(): {error} (CuPy's parameters: {signature})") from None
        arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
        if any(not isinstance(a, ndarray) for a in arrays):
            raise TypeError(f"{name}: a host NumPy array cannot meet a device array (CuPy refuses implicit transfers)")
        machine.check(name, arrays)
        host = [a._host() if isinstance(a, ndarray) else a for a in args]
        host_kwargs = {k: v._host() if isinstance(v, ndarray) else v for k, v in kwargs.items()}
        results = []
        machine.run(lambda: results.append(function(*host, **host_kwargs)))
        return np.asarray(results[0]).view(ndarray)

    on_device.__name__ = name
    on_device.__signature__ = signature
    return on_device


# What the reference and users' code call through array-api-compat's namespace, and what that
# namespace takes from `cupy` when imported (array_api_compat/cupy/_aliases.py), with CuPy 14.2's
# parameters: the functions, then the ufuncs.
FUNCTIONS = {
    "all": "a, axis=None, out=None, keepdims=False",
    "any": "a, axis=None, out=None, keepdims=False",
    "arange": "start, stop=None, step=1, dtype=None",
    "argmax": "a, axis=None, dtype=None, out=None, keepdims=False",
    "astype": "x, dtype, /, *, copy=True",
    "broadcast_to": "array, shape",
    "clip": "a, a_min, a_max, out=None",
    "concatenate": "tup, axis=0, out=None, *, dtype=None, casting='same_kind'",
    "full": "shape, fill_value, dtype=None, order='C'",
    "max": "a, axis=None, out=None, keepdims=False",
    "mean": "a, axis=None, dtype=None, out=None, keepdims=False",
    "min": "a, axis=None, out=None, keepdims=False",
    "ones_like": "a, dtype=None, order='K', subok=None, shape=None",
    "round": "a, decimals=0, out=None",
    "sum": "a, axis=None, dtype=None, out=None, keepdims=False",
    "swapaxes": "a, axis1, axis2",
    "take": "a, indices, axis=None, out=None",
    "where": "condition, x=None, y=None",
    "zeros_like": "a, dtype=None, order='K', subok=None, shape=None",
}
UFUNCS = ("abs", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "exp", "expm1", "invert",
          "isfinite", "isnan", "left_shift", "log", "log1p", "maximum", "minimum", "power", "right_shift",
          "sign", "sqrt", "square", "tanh")
# Types and constants, the same objects in CuPy as in NumPy.
_NUMPY_NAMES = ("finfo", "iinfo", "dtype", "isdtype", "issubdtype", "broadcast_shapes", "bool_",
                "intp", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float32", "float64", "complex64", "complex128", "signedinteger", "unsignedinteger",
                "integer", "floating", "complexfloating", "number", "nan", "inf")


def _seen_as_cupy_arrays() -> None:
    """array-api-compat takes any subclass of numpy.ndarray for a NumPy array; told that the
    double's arrays are CuPy's and not NumPy's, its `array_namespace` gives its CuPy namespace for
    them and its `device` their Device, as for CuPy's arrays (once, before any double array)."""
    from array_api_compat.common import _helpers

    original = _helpers._issubclass_fast

    def issubclass_fast(cls, modname: str, clsname: str) -> bool:
        if issubclass(cls, ndarray):
            return (modname, clsname) == ("cupy", "ndarray")
        return original(cls, modname, clsname)

    _helpers._issubclass_fast = issubclass_fast


_seen_as_cupy_arrays()


# ---------------------------------------------------------------------- cuBLAS


def split_k_matmul(left: np.ndarray, right: np.ndarray, chunk: int = SPLIT_K) -> np.ndarray:
    """left @ right with the inner dimension cut into chunks of `chunk` terms, each chunk's product
    computed by NumPy, the chunk products added in a binary tree."""
    k = left.shape[1]
    parts = [left[:, s:s + chunk] @ right[s:s + chunk] for s in range(0, k, chunk)] or [left @ right]
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def stacked_split_k_matmul(left: np.ndarray, right: np.ndarray, out=None) -> np.ndarray:
    """np.matmul (stacks broadcast against each other), each product of two matrices in
    split_k_matmul's order: cupy.matmul runs a stack as cuBLAS's batched GEMM."""
    if left.ndim < 2 or right.ndim < 2:
        return np.matmul(left, right, out=out)
    stack = np.broadcast_shapes(left.shape[:-2], right.shape[:-2])
    left = np.broadcast_to(left, stack + left.shape[-2:])
    right = np.broadcast_to(right, stack + right.shape[-2:])
    if out is None:
        out = np.empty(stack + (left.shape[-2], right.shape[-1]), np.result_type(left, right))
    for index in np.ndindex(stack):
        out[index] = split_k_matmul(left[index], right[index])
    return out


def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """out = op(a) @ op(b), with CuPy's checks (cupy/cublas.py), on the current device."""
    assert isinstance(a, ndarray) and isinstance(b, ndarray)
    assert a.ndim == b.ndim == 2 and a.dtype == b.dtype
    assert transa in ("N", "T") and transb in ("N", "T") and alpha == 1.0 and beta == 0.0
    left = a._host().T if transa == "T" else a._host()
    right = b._host().T if transb == "T" else b._host()
    assert left.shape[1] == right.shape[0]
    if out is None:
        out = empty((left.shape[0], right.shape[1]), dtype=a.dtype)
    assert out.shape == (left.shape[0], right.shape[1]) and out.dtype == a.dtype
    machine.check("cublas.gemm", (a, b, out))
    machine.enqueue(lambda: np.copyto(out._host(), split_k_matmul(left, right)))
    return out


# ---------------------------------------------------------------------- kernels

_built: dict[tuple[str, Emulation], HostModule] = {}


def _by_value(value):
    """What CuPy passes for a kernel argument that is not a device array: a one-element host
    array by value (as a scalar of its dtype), a larger one refused (cupy/cuda/function.pyx)."""
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        if value.size != 1:
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {value.shape} as a kernel "
                            "parameter. Only numpy.ndarrays of size one can be passed by value.")
        return value.reshape(-1)[0]
    return value


class RawKernel:
    """A kernel of a RawModule: kernel(grid, block, args) queues the host build on the current device."""

    def __init__(self, function):
        self.function = function

    def _check(self, args) -> None:
        """What a GPU would misread, refused at launch as a CUDA launch would fail there."""
        if len(args) != len(self.function.params):
            raise TypeError(f"{self.function.name} takes {len(self.function.params)} arguments, got {len(args)}")
        for i, (arg, (ctype, pointer)) in enumerate(zip(args, self.function.params)):
            where = f"{self.function.name} argument {i} ({ctype}{'*' if pointer else ''})"
            if pointer and not isinstance(arg, ndarray):
                raise TypeError(f"{where}: got {type(arg).__name__} {arg!r}, which a launch passes by value")
            if pointer and arg.dtype != _POINTEES[ctype]:
                raise TypeError(f"{where}: array of {arg.dtype} would be read as {ctype}")
            if not pointer and c_type_of(arg) != ctype:
                raise TypeError(f"{where}: got {type(arg).__name__} {arg!r}, which a launch passes as {c_type_of(arg)}")

    def __call__(self, grid, block, args, shared_mem=0):
        if not (isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)):
            raise TypeError("grid, block and args must be tuples, as CuPy requires")
        if len(grid) != 1 or len(block) != 1 or shared_mem != 0:
            raise ValueError("our kernels launch 1-D grids of 1-D blocks with static shared memory")
        args = tuple(_by_value(a) for a in args)
        machine.check(f"kernel {self.function.name}", args)
        self._check(args)
        grid, block = max(1, grid[0]), max(1, block[0])  # as cupy.cuda.function.Function.__call__
        machine.enqueue(lambda: self.function(grid, block, args))


class RawModule:
    """cupy.RawModule(code=..., options=...): compiled for the host on first use."""

    def __init__(self, *, code: str, options: tuple = ()):
        if '#include "' in code:
            raise ValueError("NVRTC has no file system to search: headers must be inlined into code")
        self.code, self.options = code, options

    def get_function(self, name: str) -> RawKernel:
        machine.touch()  # CuPy compiles and loads the module on the current device here
        key = (self.code, _emulation)
        if key not in _built:
            _built[key] = HostModule(self.code, _emulation)
        return RawKernel(_built[key].function(name))


# ---------------------------------------------------------------------- the modules


def _properties(device: int) -> dict:
    """cudaGetDeviceProperties, the fields our code reads (a made-up GPU)."""
    Device(device)  # an invalid device raises
    return {"name": b"CuPy double", "totalGlobalMem": 2**30, "major": 9, "minor": 0, "multiProcessorCount": 2,
            "memoryClockRate": 1_000_000, "memoryBusWidth": 256}


_CUPY_NAMES = ("ndarray", "array", "asarray", "ascontiguousarray", "empty", "zeros", "reshape", "matrix_transpose",
               "RawModule", "RawKernel")
_COMPAT = "array_api_compat.cupy"  # array-api-compat's namespace for CuPy, and its submodules


def _compat_modules(found: dict) -> dict:
    """{name: module} of array_api_compat.cupy and its submodules, imported against the double's
    modules `found` (and taken out of sys.modules again: install() puts them in with the double)."""

    def take_out() -> dict:
        return {name: sys.modules.pop(name) for name in list(sys.modules) if _replaced(name)}

    saved = take_out()
    sys.modules.update(found)
    try:
        importlib.import_module(_COMPAT)
        # array_namespace(a double array) gives this namespace from now on, not an earlier one
        importlib.import_module("array_api_compat.common._helpers")._cls_to_namespace.cache_clear()
    finally:
        imported = {name: module for name, module in take_out().items() if name.split(".")[0] != "cupy"}
        sys.modules.update(saved)
    return imported


def _replaced(name: str) -> bool:
    """Whether the double replaces module `name`: CuPy's modules and array-api-compat's for CuPy."""
    return name.split(".")[0] == "cupy" or name == _COMPAT or name.startswith(_COMPAT + ".")


def _nccl_on_first_use(name: str):
    """`from cupy.cuda import nccl`: tests/nccl_double.py's, made on first use (it needs MPI)."""
    if name != "nccl":
        raise AttributeError(f"module 'cupy.cuda' has no attribute {name!r}")
    from nccl_double import CupyDoubleNccl

    sys.modules["cupy.cuda"].nccl = CupyDoubleNccl()
    return sys.modules["cupy.cuda"].nccl


def modules(devices: int = 2, cublas: bool = True, nvrtc: bool = True, driver: bool = True,
            emulation: Emulation = PLAIN) -> dict:
    """{name: module} for sys.modules: "cupy" (a package, as CuPy is), "cupy.cuda", and
    "cupy.cublas" when cuBLAS is installed. Resets the machine to `devices` idle GPUs, 0 current.
    Without `driver`, the runtime answers as it does where the driver is missing or too old.
    The kernels' host builds model `emulation` of a GPU's arithmetic (tests/host_kernels.py)."""
    global machine, _namespace, _emulation
    machine = Machine(devices)
    _emulation = emulation
    cuda = types.ModuleType("cupy.cuda")
    cuda.__path__ = []
    cuda.Device, cuda.Event, cuda.Stream, cuda.get_elapsed_time = Device, Event, Stream, get_elapsed_time
    cuda.get_current_stream = lambda device=None: Stream()
    cuda.__getattr__ = _nccl_on_first_use
    count = (lambda: machine.devices) if driver else (lambda: _raise(RuntimeError(
        "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")))
    cuda.runtime = types.SimpleNamespace(
        getDeviceCount=count, getDevice=lambda: machine.current, setDevice=machine.set_device,
        deviceSynchronize=lambda: machine.synchronize(machine.current), getDeviceProperties=_properties,
        runtimeGetVersion=lambda: 12090, driverGetVersion=lambda: 13000)
    version = (lambda: (12, 9)) if nvrtc else (lambda: _raise(RuntimeError(  # cuda-pathfinder's, lines and all
        'Failure finding "libnvrtc.so.13 or libnvrtc.so.12": No such file\n  listdir("nvidia/cu13/lib"):\n'
        '    libcudart.so.13\n')))
    cuda.nvrtc = types.SimpleNamespace(getVersion=version)
    cupy = types.ModuleType("cupy")
    cupy.__path__ = []
    cupy.__version__ = "14.2.0"
    for name in _CUPY_NAMES:
        setattr(cupy, name, globals()[name])
    for name in _NUMPY_NAMES:
        setattr(cupy, name, getattr(np, name))
    # not module globals here: sum, max, abs and all would hide Python's
    for name, parameters in FUNCTIONS.items():
        setattr(cupy, name, _operation(name, parameters))
    for name in UFUNCS:
        setattr(cupy, name, _operation(name))
    cupy.matmul = _operation("matmul", "x1, x2, /, out=None", stacked_split_k_matmul)
    cupy.cuda = cuda
    cuda.device = types.ModuleType("cupy.cuda.device")  # where CuPy defines Device
    cuda.device.Device = Device
    found = {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.device": cuda.device}
    for name in ("linalg", "fft"):  # what array-api-compat imports from them: nothing we call
        found[f"cupy.{name}"] = types.ModuleType(f"cupy.{name}")
        setattr(cupy, name, found[f"cupy.{name}"])
    found["cupy.linalg"].lstsq = _operation("lstsq", "a, b, rcond=None", np.linalg.lstsq)
    if cublas:
        found["cupy.cublas"] = types.ModuleType("cupy.cublas")
        found["cupy.cublas"].gemm = _gemm
    _namespace = cupy
    found.update(_compat_modules(found))
    return found


def install(monkeypatch, **options) -> Machine:
    """`import cupy` gives the double (modules(**options)) until the test ends; the machine."""
    for name in [name for name in sys.modules if _replaced(name)]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in modules(**options).items():
        monkeypatch.setitem(sys.modules, name, module)
    return machine


# ---------------------------------------------------------------------- for a whole test session

ENVIRONMENT = "BACKPROP_CUPY_DOUBLE"
_OPTIONS = ("fma", "libm_ulps", "flush_to_zero", "reverse")


def emulation_named(value: str) -> Emulation:
    """The Emulation an ENVIRONMENT value names: "plain", "gpu" (every option at once), or
    options joined by commas, e.g. "fma,flush_to_zero"."""
    names = {"plain": (), "gpu": _OPTIONS}.get(value.strip(), [n.strip() for n in value.split(",")])
    unknown = [n for n in names if n not in _OPTIONS]
    if unknown:
        raise ValueError(f"{ENVIRONMENT}={value!r}: expected plain, gpu or options among {', '.join(_OPTIONS)} "
                         f"joined by commas, got {', '.join(unknown)}")
    return Emulation(**{n: True for n in names})


def install_from_environment() -> Machine | None:
    """Where ENVIRONMENT is set, `import cupy` gives the double for the rest of the process, with
    the emulation it names, and every kernel module is built for the host now, in
    BACKPROP_HOST_KERNELS_DIR where set (a parent process's builds), which the processes this one
    starts then share. The machine, or None where ENVIRONMENT is unset."""
    value = os.environ.get(ENVIRONMENT)
    if not value:
        return None
    emulation = emulation_named(value)
    reason = emulation.unavailable()
    if reason is not None:
        raise RuntimeError(f"{ENVIRONMENT}={value}: {reason}")
    host_kernels._cache_dir = os.environ.get("BACKPROP_HOST_KERNELS_DIR", host_kernels._cache_dir)
    os.environ["BACKPROP_HOST_KERNELS_DIR"] = host_kernels._session_dir()
    from backprop.kernels import loader

    host_kernels.build_all((loader.kernel_source(name) for name in loader.source_names()), emulation)
    sys.modules.update(modules(emulation=emulation))
    return machine
