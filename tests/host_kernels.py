"""Our CUDA C, unchanged, compiled for the host by g++ with kernels/host_shim.h and launched through
ctypes: how the kernels run in tests on machines without a GPU.

`HostModule(code).function(name)(grid, block, args)` checks every argument against the kernel's C
signature the way a GPU would need it (arrays: dtype of the pointee; scalars: the C type CuPy
would pass for them must be exactly the declared one, since a host call, like a GPU launch,
would otherwise read the wrong bytes), then launches the host build. Builds are cached for the
test session in a temporary directory, keyed by a hash of everything that goes into them.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import os
import re
import subprocess
import tempfile
import threading

import numpy as np

SHIM = importlib.resources.files("backprop.kernels").joinpath("host_shim.h")
CXXFLAGS = ["-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wall", "-Werror",
            "-fno-fast-math", "-ffp-contract=off"]

# The parser below is deliberately separate from backprop.kernels.loader's: it is the check on it.
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_C_SCALARS = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int,
              "unsigned int": ctypes.c_uint, "long long": ctypes.c_longlong}
_C_POINTEES = {"float": np.float32, "double": np.float64, "long long": np.int64}
# The C type CuPy passes for a scalar argument: NumPy scalars by their dtype, Python int and float
# as long long and double (cupy/_core/_scalar.pyx).
_NUMPY_TO_C = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
               np.dtype(np.int32): "int", np.dtype(np.uint32): "unsigned int",
               np.dtype(np.int64): "long long", np.dtype(np.bool_): "bool"}

_cache_dir = None
_build_lock = threading.Lock()


def c_type_of(value) -> str:
    """The C type a CuPy launch would give this scalar argument."""
    if isinstance(value, np.generic):
        return _NUMPY_TO_C.get(value.dtype, str(value.dtype))
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long long"
    if isinstance(value, float):
        return "double"
    return type(value).__name__


def signatures(code: str) -> dict[str, list[tuple[str, bool]]]:
    """{kernel: [(C type without const and '*', is_pointer), ...]} of every extern "C" kernel."""
    found = {}
    for match in _KERNEL.finditer(code):
        params = []
        for declaration in match.group(2).split(","):
            words = declaration.replace("*", " * ").split()[:-1]
            pointer = "*" in words
            params.append((" ".join(w for w in words if w not in ("const", "*")), pointer))
        found[match.group(1)] = params
    return found


def _session_dir() -> str:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = tempfile.mkdtemp(prefix="backprop-host-kernels-")
    return _cache_dir


def build(code: str) -> str:
    """Path of the shared library built from `code` (once per session per distinct input)."""
    entries = "\n".join(f"BP_HOST_ENTRY({name})" for name in signatures(code))
    text = f"{code}\n\n// host entry points\n{entries}\n"
    shim = SHIM.read_text(encoding="utf-8")
    key = hashlib.sha256("\0".join([text, shim, " ".join(CXXFLAGS)]).encode()).hexdigest()[:24]
    library = os.path.join(_session_dir(), f"{key}.so")
    with _build_lock:
        if not os.path.exists(library):
            source = os.path.join(_session_dir(), f"{key}.cpp")
            with open(source, "w", encoding="utf-8") as f:
                f.write(text)
            partial = library + ".partial"
            with importlib.resources.as_file(SHIM) as shim_path:
                command = ["g++", *CXXFLAGS, "-include", str(shim_path), source, "-o", partial]
                result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"g++ failed on the host build:\n{result.stderr[-6000:]}")
            os.replace(partial, library)
    return library


def build_all(codes) -> None:
    """Builds several sources two at a time (g++ is the slow part of these tests)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(build, codes))


class HostFunction:
    """One kernel of a host build; called like a CuPy kernel: (grid, block, args)."""

    def __init__(self, library: ctypes.CDLL, name: str, params: list[tuple[str, bool]], threaded: set):
        self.name = name
        self.params = params
        self._entry = getattr(library, f"bp_host_{name}")
        self._entry.restype = ctypes.c_int
        self._entry.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        self._threaded = threaded  # kernels found to reach __syncthreads, shared per module

    def _slot(self, index: int, value):
        ctype, pointer = self.params[index]
        where = f"{self.name} argument {index} ({ctype}{'*' if pointer else ''})"
        if pointer:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where}: expected an array, got {type(value).__name__}")
            if value.dtype != _C_POINTEES[ctype]:
                raise TypeError(f"{where}: array of {value.dtype} would be read as {ctype}")
            return ctypes.c_void_p(value.ctypes.data)
        given = c_type_of(value)
        if given != ctype:
            raise TypeError(f"{where}: got {type(value).__name__} {value!r}, which a launch passes "
                            f"as {given}")
        return _C_SCALARS[ctype](value.item() if isinstance(value, np.generic) else value)

    def __call__(self, grid: int, block: int, args) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        if not (isinstance(grid, int) and isinstance(block, int) and grid >= 1 and 1 <= block <= 1024):
            raise ValueError(f"{self.name}: bad launch shape grid={grid!r} block={block!r}")
        slots = [self._slot(i, a) for i, a in enumerate(args)]
        pointers = (ctypes.c_void_p * len(slots))(*[ctypes.addressof(s) for s in slots])
        threaded = self.name in self._threaded
        if self._entry(grid, block, int(threaded), pointers) == 1:
            # it reached __syncthreads with no block barrier: run it one host thread per CUDA thread
            self._threaded.add(self.name)
            self._entry(grid, block, 1, pointers)


class HostModule:
    """The host build of one source text; `function(name)` returns a HostFunction."""

    def __init__(self, code: str):
        self.signatures = signatures(code)
        self._library = ctypes.CDLL(build(code))
        self._threaded: set = set()
        self._functions: dict = {}

    def function(self, name: str) -> HostFunction:
        if name not in self.signatures:
            raise KeyError(f"no kernel named {name} in this module")
        if name not in self._functions:
            self._functions[name] = HostFunction(self._library, name, self.signatures[name], self._threaded)
        return self._functions[name]
