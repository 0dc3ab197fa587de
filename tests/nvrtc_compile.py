"""Compile a kernel source exactly as `cupy.RawModule` compiles it, on a machine without a GPU.

`RawModule(code=..., options=...)` compiles through
`cupy._core.core.compile_with_cache(code, options, prepend_cupy_headers=False, ...)`, which adds
CuPy's options (-std, include paths, -ftz=true, --device-as-default-execution-space), builds the
cache key and runs NVRTC. Of all that, only two steps touch the device (CuPy 14.2):

1. `cupy.cuda.compiler._get_arch_for_options_for_nvrtc(arch)`, memoized per device, so it asks
   the runtime for the current device. We answer what it answers for an architecture NVRTC
   knows: ("-arch=sm_XX", "cubin"), i.e. straight to SASS, as CuPy does.
2. `compiler.function.Module.load(cubin)`, which needs a CUDA context. We keep the cubin instead.

Everything else is CuPy's own code. Both are private names, which is why the test extra pins
cupy-cuda12x==14.2.0. `-Xptxas=-v` is the one option added, so ptxas reports registers and spills
in the program log.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass

from backprop.kernels.loader import OPTIONS, kernel_source

VERBOSE_PTXAS = ("-Xptxas=-v",)


@dataclass
class KernelUsage:
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int


@contextlib.contextmanager
def without_device(cache_dir: str):
    """CuPy's compile path with its two device calls bypassed and a fresh disk cache in
    `cache_dir` (a cache hit compiles nothing and reports nothing)."""
    from cupy.cuda import _compiler_cache, compiler, function

    class CubinOnly(function.Module):
        def load(self, cubin):  # instead of cuModuleLoadData
            self.cubin = cubin

    saved = (compiler._get_arch_for_options_for_nvrtc, compiler.function, compiler._kernel_cache_backend)
    compiler._get_arch_for_options_for_nvrtc = lambda arch=None: (f"-arch=sm_{arch}", "cubin")
    compiler.function = type("function", (), {"Module": CubinOnly})
    compiler._kernel_cache_backend = _compiler_cache.DiskKernelCacheBackend(cache_dir)
    try:
        yield
    finally:
        (compiler._get_arch_for_options_for_nvrtc, compiler.function,
         compiler._kernel_cache_backend) = saved


def compile_for_arch(source: str, arch: str) -> tuple[bytes, str]:
    """(cubin, NVRTC log) of `source` for sm_`arch`; call inside `without_device`. A compile error
    raises CuPy's CompileException carrying NVRTC's log."""
    from cupy._core import core

    log = io.StringIO()
    module = core.compile_with_cache(source, OPTIONS + VERBOSE_PTXAS, arch=arch,
                                     prepend_cupy_headers=False, log_stream=log)
    return module.cubin, log.getvalue()


def compile_job(job: tuple[str, str, str]):
    """(file, arch, cubin size or None, log or error) for job = (file, arch, cache_dir); run in a
    worker process, so it imports and patches CuPy there."""
    from cupy.cuda.compiler import CompileException

    name, arch, cache_dir = job
    with without_device(cache_dir):
        try:
            cubin, log = compile_for_arch(kernel_source(name), arch)
        except CompileException as exc:
            return name, arch, None, str(exc)
    return name, arch, len(cubin), log


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def ptxas_usage(log: str) -> dict[str, KernelUsage]:
    """{kernel: registers, spills and stack} from a -Xptxas=-v log."""
    usage, kernel, frame = {}, None, None
    for line in log.splitlines():
        if (match := _ENTRY.search(line)):
            kernel, frame = match.group(1), None
        elif (match := _FRAME.search(line)) and kernel:
            frame = tuple(int(g) for g in match.groups())
        elif (match := _REGISTERS.search(line)) and kernel and frame:
            usage[kernel] = KernelUsage(int(match.group(1)), frame[1], frame[2], frame[0])
            kernel = None
    return usage
