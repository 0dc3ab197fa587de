"""Loading our CUDA C: sources read as package data, headers inlined, modules compiled lazily by
CuPy, and a launcher that checks every argument against the kernel's C signature.

Why inline headers: CuPy's disk cache keys on the source text it is given, so a header pulled in
with `#include` could change without the key changing; inlined, an edit to a header changes the
text and so the key. Why check arguments: CuPy passes an array's raw pointer whatever its strides,
dtype or device, a one-element host NumPy array by value, a Python int as `long long` and a
Python float as `double`, whatever the kernel declares, and launches a grid of 0 blocks as 1; a
mismatch is silent garbage on the GPU. The launcher refuses anything but a C-contiguous device
array of the pointee's dtype on the kernel's GPU for a pointer, and grids or blocks outside what
the kernel was sized for, and casts each scalar to the exact C type of its parameter.
"""

from __future__ import annotations

import functools
import importlib.resources
import numbers
import re
from dataclasses import dataclass

import numpy as np

PACKAGE = "backprop.kernels"

# What CupyBackend passes to cupy.RawModule. C++17 is CuPy 14's default, spelled out so that the
# NVRTC compile test and the backend compile exactly the same thing.
OPTIONS = ("--std=c++17",)

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')

# C types of kernel parameters and the NumPy type each must arrive as.
SCALAR_TYPES = {
    "float": np.float32,
    "double": np.float64,
    "int": np.int32,
    "unsigned int": np.uint32,
    "long long": np.int64,
}
POINTER_DTYPES = {"float": np.float32, "double": np.float64, "long long": np.int64}


@dataclass(frozen=True)
class Param:
    """One kernel parameter: `ctype` without const or `*` ("float"), and whether it is a pointer."""

    name: str
    ctype: str
    pointer: bool


def source_names() -> list[str]:
    """The .cu files of the package, sorted."""
    files = importlib.resources.files(PACKAGE)
    return sorted(entry.name for entry in files.iterdir() if entry.name.endswith(".cu"))


def _read(name: str) -> str:
    return importlib.resources.files(PACKAGE).joinpath(name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """The text of `name` with every `#include "header"` replaced by the header's own text
    (recursively, each header once), ready for NVRTC, which has no file system to search."""
    seen: set[str] = set()

    def expand(text: str) -> str:
        def inline(match: re.Match) -> str:
            header = match.group(1)
            if header in seen:
                return f"// {header}: inlined above"
            seen.add(header)
            return f"// ---- {header}\n{expand(_read(header))}\n// ---- end of {header}"

        return _INCLUDE.sub(inline, text)

    return expand(_read(name))


def parse_params(text: str) -> tuple[Param, ...]:
    """The parameters of a C parameter list such as `const float* x, long long n`."""
    params = []
    for raw in text.split(","):
        declaration = raw.replace("*", " * ").split()
        if not declaration:
            continue
        name, words = declaration[-1], [w for w in declaration[:-1] if w not in ("const", "__restrict__")]
        pointer = "*" in words
        ctype = " ".join(w for w in words if w != "*")
        table = POINTER_DTYPES if pointer else SCALAR_TYPES
        if ctype not in table:
            raise ValueError(f"kernel parameter {raw.strip()!r}: unsupported type {ctype!r}")
        params.append(Param(name, ctype, pointer))
    return tuple(params)


def kernel_signatures(source: str) -> dict[str, tuple[Param, ...]]:
    """{kernel name: parameters} of every `extern "C" __global__` function in `source`."""
    return {m.group(1): parse_params(m.group(2)) for m in _KERNEL.finditer(source)}


@functools.lru_cache(maxsize=1)
def kernel_index() -> dict[str, tuple[str, tuple[Param, ...]]]:
    """{kernel name: (the .cu file that defines it, its parameters)} over the whole package."""
    index = {}
    for name in source_names():
        for kernel, params in kernel_signatures(kernel_source(name)).items():
            if kernel in index:
                raise ValueError(f"kernel {kernel} is defined in both {index[kernel][0]} and {name}")
            index[kernel] = (name, params)
    return index


def convert_argument(kernel: str, param: Param, value, array_type=np.ndarray, device: int | None = None):
    """`value` as the kernel receives it: an array of `array_type` (cupy.ndarray for a launch)
    checked for C order, dtype and, unless `device` is None, that it lives on GPU `device`; or a
    scalar cast to the NumPy type of the parameter's C type. Raises TypeError/ValueError naming
    the kernel."""
    where = f"{kernel}: argument {param.name!r} ({param.ctype}{'*' if param.pointer else ''})"
    if param.pointer:
        if not isinstance(value, array_type):
            raise TypeError(f"{where} must be a device array ({array_type.__module__}.{array_type.__name__}), got "
                            f"{type(value).__module__}.{type(value).__name__} (CuPy would pass a one-element host "
                            "array by value)")
        if device is not None and value.device.id != device:
            raise ValueError(f"{where} lives on cuda:{value.device.id}, but the kernel runs on cuda:{device}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{where} must be C-contiguous: the kernel indexes it as a flat buffer "
                             f"(shape {value.shape}, strides {value.strides})")
        if value.dtype != POINTER_DTYPES[param.ctype]:
            raise TypeError(f"{where} must hold {np.dtype(POINTER_DTYPES[param.ctype])}, got {value.dtype}")
        return value
    scalar_type = SCALAR_TYPES[param.ctype]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a real number, got {type(value).__name__} {value!r}")
    if np.issubdtype(scalar_type, np.integer):
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        limits = np.iinfo(scalar_type)
        if not limits.min <= int(value) <= limits.max:
            raise ValueError(f"{where} must be in [{limits.min}, {limits.max}], got {value}")
        return scalar_type(int(value))
    return scalar_type(float(value))


MAX_BLOCK = 1024  # threads per block on every GPU CuPy supports


class Launcher:
    """A compiled kernel: `launcher(grid, block, *args)` checks and converts every argument,
    then launches a 1-D grid of 1-D blocks. Arrays must be of `array_type` on GPU `device`.

    A grid of 0 blocks is refused, not launched as CuPy would launch it (as 1 block): a caller
    that sized its outputs for 0 blocks (a reduction's partial sums) would get one written past
    their end."""

    def __init__(self, function, name: str, params: tuple[Param, ...], array_type=np.ndarray,
                 device: int | None = None):
        self.function = function
        self.name = name
        self.params = params
        self.array_type, self.device = array_type, device

    def __call__(self, grid: int, block: int, *args) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        if not (isinstance(grid, numbers.Integral) and grid >= 1):
            raise ValueError(f"{self.name}: the grid must be at least 1 block, got {grid!r}")
        if not (isinstance(block, numbers.Integral) and 1 <= block <= MAX_BLOCK):
            raise ValueError(f"{self.name}: a block must have 1 to {MAX_BLOCK} threads, got {block!r}")
        converted = tuple(convert_argument(self.name, p, a, self.array_type, self.device)
                          for p, a in zip(self.params, args))
        self.function((int(grid),), (int(block),), converted)


class KernelLibrary:
    """Every kernel of the package, compiled on first use through `cupy.RawModule`, one module
    per .cu file (CuPy caches the binaries on disk and per device), for arrays on GPU `device`.
    Look kernels up with that GPU current: CuPy compiles and loads a module on the current one."""

    def __init__(self, cupy, device: int):
        self.cupy, self.device = cupy, device
        self._modules: dict = {}
        self._launchers: dict[str, Launcher] = {}

    def __call__(self, name: str) -> Launcher:
        launcher = self._launchers.get(name)
        if launcher is None:
            index = kernel_index()
            if name not in index:
                raise KeyError(f"no kernel named {name} in {PACKAGE}")
            filename, params = index[name]
            module = self._modules.get(filename)
            if module is None:
                module = self._modules[filename] = self.cupy.RawModule(
                    code=kernel_source(filename), options=OPTIONS)
            launcher = self._launchers[name] = Launcher(module.get_function(name), name, params,
                                                        self.cupy.ndarray, self.device)
        return launcher
