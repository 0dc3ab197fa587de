"""Our CUDA C, unchanged, compiled for the host by g++ with kernels/host_shim.h and launched through
ctypes: how the kernels run in tests on machines without a GPU.

`HostModule(code, emulation).function(name)(grid, block, args)` checks every argument against the
kernel's C signature the way a GPU would need it (arrays: dtype of the pointee; scalars: the C
type CuPy would pass for them must be exactly the declared one, since a host call, like a GPU
launch, would otherwise read the wrong bytes), then launches the host build.

`Emulation` chooses what of a GPU's behaviour the build and its launches model beyond plain host
arithmetic (see its fields). Builds are cached for the test session in a temporary directory,
keyed by a hash of everything that goes into them; the launcher runtime is built once per
sanitizer setting and shared by every kernel library.

Run as a script (`python host_kernels.py --serve`), this module is the worker process that runs
ThreadSanitizer builds: TSan's runtime must be loaded when a process starts, and it ends the
process at the first data race, so those launches run in a process of their own.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib.resources
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
import threading

import numpy as np

SHIM = importlib.resources.files("backprop.kernels").joinpath("host_shim.h")
CXXFLAGS = ["-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wall", "-Werror", "-fno-fast-math"]

# Gathers every function-local static of a kernel library (that is, every __shared__ array; the
# build puts each variable in a section of its own) into one section, bp_shared, whose bounds the
# launcher uses to poison shared memory between blocks.
SHARED_MEMORY_SCRIPT = """SECTIONS
{
  bp_shared (NOLOAD) : ALIGN(64)
  {
    PROVIDE_HIDDEN(__start_bp_shared = .);
    *(.bss._ZZ*)
    PROVIDE_HIDDEN(__stop_bp_shared = .);
  }
}
INSERT BEFORE .bss;
"""

# Launch flags of kernels/host_shim.h.
THREADED, REVERSE, FLUSH_TO_ZERO = 1, 2, 4


@dataclasses.dataclass(frozen=True)
class Emulation:
    """What of a GPU's behaviour a host build and its launches model, beyond the plain host build
    (IEEE arithmetic rounded at every operation, glibc's libm, blocks and threads in order)."""

    fma: bool = False               # a*b + c contracted into fused multiply-adds, as NVRTC does
    libm_ulps: bool = False         # libm results moved within CUDA's documented ulp bounds
    flush_to_zero: bool = False     # float32 kernels run with subnormals flushed, as -ftz=true
    reverse: bool = False           # blocks, and a sequential block's threads, run last to first
    thread_sanitizer: bool = False  # built with -fsanitize=thread, run in a TSan worker process

    def compile_flags(self) -> list[str]:
        if self.fma:
            flags = ["-ffp-contract=fast", "-fexpensive-optimizations"]  # g++ fuses only with the latter
            if _is_x86():
                flags.append("-mfma")
        else:
            flags = ["-ffp-contract=off"]
        if self.libm_ulps:
            flags.append("-DBP_HOST_LIBM_ULPS")
        return flags + _sanitizer_flags(self.thread_sanitizer)

    def launch_flags(self, kernel: str) -> int:
        flush = self.flush_to_zero and kernel.endswith("_f32")
        return (REVERSE if self.reverse else 0) | (FLUSH_TO_ZERO if flush else 0)

    def unavailable(self) -> str | None:
        """Why this emulation cannot run on this machine, or None when it can."""
        if self.fma and not (platform.machine() == "aarch64" or (_is_x86() and "fma" in _cpu_flags())):
            return "this CPU has no fused multiply-add the build can use"
        if self.flush_to_zero and not _is_x86():
            return "flush-to-zero is emulated through x86's MXCSR only"
        if self.thread_sanitizer and not os.path.isabs(_tsan_runtime()):
            return "g++ has no ThreadSanitizer runtime here"
        return None


PLAIN = Emulation()

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


def _is_x86() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _tsan_runtime() -> str:
    """Path of g++'s ThreadSanitizer runtime (a bare file name when it has none)."""
    return subprocess.run(["g++", "-print-file-name=libtsan.so"], capture_output=True,
                          text=True).stdout.strip()


def _sanitizer_flags(thread_sanitizer: bool) -> list[str]:
    return ["-fsanitize=thread", "-g"] if thread_sanitizer else []


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


def _compile(key: str, flags: list[str], source_text: str | None, libraries: list[str] = ()) -> str:
    """Runs g++ once per key (the caller holds _build_lock) on `source_text` (None: on the shim
    itself) and returns the library's path. "{shim}" in `flags` stands for the shim's path."""
    output = os.path.join(_session_dir(), f"{key}.so")
    if os.path.exists(output):
        return output
    source = "{shim}"
    if source_text is not None:
        source = os.path.join(_session_dir(), f"{key}.cpp")
        with open(source, "w", encoding="utf-8") as f:
            f.write(source_text)
    partial = output + ".partial"
    with importlib.resources.as_file(SHIM) as shim_path:
        command = [str(shim_path) if part == "{shim}" else part for part in ["g++", *flags, source, *libraries]]
        result = subprocess.run([*command, "-o", partial], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"g++ failed on the host build:\n{result.stderr[-6000:]}")
    os.replace(partial, output)
    return output


def _runtime(thread_sanitizer: bool, shim: str) -> str:
    """File name (in the session directory) of the launcher runtime library."""
    flags = CXXFLAGS + _sanitizer_flags(thread_sanitizer)
    key = "runtime-" + hashlib.sha256("\0".join([shim, " ".join(flags)]).encode()).hexdigest()[:24]
    path = _compile(key, [*flags, f"-Wl,-soname,{key}.so", "-DBP_HOST_RUNTIME", "-x", "c++"], None)
    return os.path.basename(path)


def build(code: str, emulation: Emulation = PLAIN) -> str:
    """Path of the shared library built from `code` (once per session per distinct input)."""
    entries = "\n".join(f"BP_HOST_ENTRY({name})" for name in signatures(code))
    text = f"{code}\n\n// host entry points\n{entries}\n"
    shim = SHIM.read_text(encoding="utf-8")
    flags = CXXFLAGS + emulation.compile_flags() + ["-fvisibility=hidden", "-fdata-sections"]
    key = hashlib.sha256("\0".join([text, shim, " ".join(flags), SHARED_MEMORY_SCRIPT]).encode()).hexdigest()[:24]
    with _build_lock:
        runtime = _runtime(emulation.thread_sanitizer, shim)
        script = os.path.join(_session_dir(), "shared-memory.ld")
        if not os.path.exists(script):
            with open(script, "w", encoding="utf-8") as f:
                f.write(SHARED_MEMORY_SCRIPT)
        link = [f"-Wl,-T,{script}", "-L", _session_dir(), f"-l:{runtime}", "-Wl,-rpath,$ORIGIN"]
        return _compile(key, [*flags, "-include", "{shim}"], text, link)


def build_all(codes, emulation: Emulation = PLAIN) -> None:
    """Builds several sources two at a time (g++ is the slow part of these tests)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda code: build(code, emulation), codes))


class _Library:
    """A kernel library loaded into this process."""

    def __init__(self, path: str):
        self._library = ctypes.CDLL(path)
        self._entries: dict = {}

    def launch(self, name: str, grid: int, block: int, flags: int, args: list) -> int:
        """args: arrays, and (C type, value) pairs for scalars."""
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = getattr(self._library, f"bp_host_{name}")
            entry.restype = ctypes.c_int
            entry.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        slots = [ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray) else _C_SCALARS[a[0]](a[1])
                 for a in args]
        pointers = (ctypes.c_void_p * len(slots))(*[ctypes.addressof(s) for s in slots])
        return entry(grid, block, flags, pointers)


class _SanitizedWorker:
    """The process that runs ThreadSanitizer builds: a Python with TSan's runtime preloaded,
    stopping at the first data race (exit status 66), serving launches over pipes."""

    _instance = None

    @classmethod
    def get(cls) -> "_SanitizedWorker":
        if cls._instance is None or cls._instance.process.poll() is not None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        self.log = os.path.join(_session_dir(), f"tsan-worker-{os.getpid()}-{id(self)}.log")
        env = dict(os.environ, LD_PRELOAD=_tsan_runtime(), TSAN_OPTIONS="halt_on_error=1 exitcode=66",
                   OPENBLAS_NUM_THREADS="1")
        with open(self.log, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)

    def launch(self, path: str, name: str, grid: int, block: int, flags: int, args: list) -> int:
        try:
            pickle.dump((path, name, grid, block, flags, args), self.process.stdin)
            self.process.stdin.flush()
            status, arrays = pickle.load(self.process.stdout)
        except (EOFError, BrokenPipeError):
            self.process.wait()
            with open(self.log, encoding="utf-8", errors="replace") as f:
                report = f.read()
            raise RuntimeError(f"{name} stopped under ThreadSanitizer (exit status "
                               f"{self.process.returncode}):\n{report[-8000:]}") from None
        for arg, result in zip([a for a in args if isinstance(a, np.ndarray)], arrays):
            np.copyto(arg, result)
        return status


class _RemoteLibrary:
    """A kernel library that runs in the ThreadSanitizer worker."""

    def __init__(self, path: str):
        self.path = path

    def launch(self, name: str, grid: int, block: int, flags: int, args: list) -> int:
        return _SanitizedWorker.get().launch(self.path, name, grid, block, flags, args)


class HostFunction:
    """One kernel of a host build; called like a CuPy kernel: (grid, block, args)."""

    def __init__(self, module: "HostModule", name: str, params: list[tuple[str, bool]]):
        self.module = module
        self.name = name
        self.params = params

    def _checked(self, index: int, value):
        ctype, pointer = self.params[index]
        where = f"{self.name} argument {index} ({ctype}{'*' if pointer else ''})"
        if pointer:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where}: expected an array, got {type(value).__name__}")
            if value.dtype != _C_POINTEES[ctype]:
                raise TypeError(f"{where}: array of {value.dtype} would be read as {ctype}")
            return value
        given = c_type_of(value)
        if given != ctype:
            raise TypeError(f"{where}: got {type(value).__name__} {value!r}, which a launch passes "
                            f"as {given}")
        return (ctype, value.item() if isinstance(value, np.generic) else value)

    def __call__(self, grid: int, block: int, args) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        if not (isinstance(grid, int) and isinstance(block, int) and grid >= 1 and 1 <= block <= 1024):
            raise ValueError(f"{self.name}: bad launch shape grid={grid!r} block={block!r}")
        checked = [self._checked(i, a) for i, a in enumerate(args)]
        flags = self.module.emulation.launch_flags(self.name)
        threaded = self.module.threaded
        status = self.module.library.launch(self.name, grid, block, flags | (THREADED if self.name in threaded else 0),
                                            checked)
        if status == 1:
            # it reached __syncthreads with no block barrier: run it one host thread per CUDA thread
            threaded.add(self.name)
            status = self.module.library.launch(self.name, grid, block, flags | THREADED, checked)
        if status != 0:
            raise RuntimeError(f"{self.name}: the host launcher cannot run flags {flags} here")


class HostModule:
    """The host build of one source text under one emulation; `function(name)` returns a
    HostFunction."""

    def __init__(self, code: str, emulation: Emulation = PLAIN):
        reason = emulation.unavailable()
        if reason is not None:
            raise RuntimeError(f"cannot emulate {emulation}: {reason}")
        self.signatures = signatures(code)
        self.emulation = emulation
        path = build(code, emulation)
        self.library = _RemoteLibrary(path) if emulation.thread_sanitizer else _Library(path)
        self.threaded: set = set()  # kernels found to reach __syncthreads
        self._functions: dict = {}

    def function(self, name: str) -> HostFunction:
        if name not in self.signatures:
            raise KeyError(f"no kernel named {name} in this module")
        if name not in self._functions:
            self._functions[name] = HostFunction(self, name, self.signatures[name])
        return self._functions[name]


def _serve() -> None:
    """The ThreadSanitizer worker: runs each launch it reads from stdin, answers on stdout."""
    libraries: dict[str, _Library] = {}
    while True:
        try:
            path, name, grid, block, flags, args = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        if path not in libraries:
            libraries[path] = _Library(path)
        status = libraries[path].launch(name, grid, block, flags, args)
        pickle.dump((status, [a for a in args if isinstance(a, np.ndarray)]), sys.stdout.buffer)
        sys.stdout.buffer.flush()


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
