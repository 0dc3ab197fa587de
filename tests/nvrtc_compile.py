"""Compile a kernel source exactly as `cupy.RawModule` compiles it, on a machine without a GPU,
with the NVRTC of a chosen CUDA major version.

`RawModule(code=..., options=...)` compiles through
`cupy._core.core.compile_with_cache(code, options, prepend_cupy_headers=False, ...)`, which adds
CuPy's options (-std, include paths, -ftz=true, --device-as-default-execution-space), builds the
cache key and runs NVRTC. Of all that, only two steps touch the device (CuPy 14.2):

1. `cupy.cuda.compiler._get_arch_for_options_for_nvrtc(arch)`, memoized per device, so it asks
   the runtime for the current device. We answer what it answers for an architecture NVRTC
   knows: ("-arch=sm_XX", "cubin"), i.e. straight to SASS, as CuPy does.
2. `compiler.function.Module.load(cubin)`, which needs a CUDA context. We keep the cubin instead.

Everything else is CuPy's own code. Both are private names, which is why the GPU extras pin
CuPy 14.2.0. `-Xptxas=-v` is the one option added, so ptxas reports registers and spills in the
program log.

Which NVRTC: cupy-cuda12x and cupy-cuda13x cannot be installed together, so each compile runs in
a worker process (`python nvrtc_compile.py`, a job list as JSON on stdin) of the environment of
its CUDA version: the test environment for 12, the cuda13 extra's (tests/cuda_envs.py) for 13.
CuPy finds NVRTC through cuda-pathfinder, which takes an already loaded libnvrtc first and else
prefers libnvrtc.so.13 to .so.12, so cupy-cuda12x would silently compile with NVRTC 13 if both
wheels were installed. The worker therefore loads libnvrtc.so.<major> itself before importing
CuPy, and reports the version CuPy then used; the tests check it is the one claimed.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import re
import site
import sys
from dataclasses import dataclass

VERBOSE_PTXAS = ("-Xptxas=-v",)
# Where each CUDA version's NVRTC wheel puts the library.
NVRTC_WHEEL_DIRS = {12: "nvidia/cuda_nvrtc/lib", 13: "nvidia/cu13/lib"}


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


def compile_for_arch(source: str, arch: str, options: tuple) -> tuple[bytes, str]:
    """(cubin, NVRTC log) of `source` for sm_`arch` with RawModule's `options`; call inside
    `without_device`. A compile error raises CuPy's CompileException carrying NVRTC's log."""
    from cupy._core import core

    log = io.StringIO()
    module = core.compile_with_cache(source, tuple(options) + VERBOSE_PTXAS, arch=arch,
                                     prepend_cupy_headers=False, log_stream=log)
    return module.cubin, log.getvalue()


def load_nvrtc(major: int) -> str:
    """Loads libnvrtc.so.<major> (from its wheel, else the system's) so that CuPy takes it; its path."""
    candidates = [os.path.join(d, NVRTC_WHEEL_DIRS[major], f"libnvrtc.so.{major}") for d in site.getsitepackages()]
    for path in [p for p in candidates if os.path.exists(p)] + [f"libnvrtc.so.{major}"]:
        try:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
        except OSError:
            continue
        return path
    raise OSError(f"libnvrtc.so.{major} is in neither {candidates} nor the system's library path")


def run_jobs(request: dict) -> dict:
    """Compiles request["jobs"] ([file, arch, source] each) with NVRTC request["nvrtc"] (a major
    version) and request["options"] into request["cache_dir"]; what each compile gave, and the
    NVRTC and CuPy that did it."""
    major = request["nvrtc"]
    library = load_nvrtc(major)
    import importlib.metadata

    import cupy
    from cupy.cuda import nvrtc
    from cupy.cuda.compiler import CompileException

    results = []
    with without_device(request["cache_dir"]):
        for name, arch, source in request["jobs"]:
            try:
                cubin, log = compile_for_arch(source, arch, request["options"])
            except CompileException as exc:
                results.append([name, arch, None, str(exc)])
            else:
                results.append([name, arch, len(cubin), log])
    packages = importlib.metadata.packages_distributions()["cupy"]
    return {"nvrtc": list(nvrtc.getVersion()), "library": library, "supported_archs": list(nvrtc.getSupportedArchs()),
            "cupy": f"{' '.join(packages)} {cupy.__version__}", "results": results}


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


if __name__ == "__main__":
    print(json.dumps(run_jobs(json.load(sys.stdin))))
