"""Proof 1: every .cu compiles through CuPy's own NVRTC path, with CuPy's options, for every GPU
generation we claim, without spilling registers. Needs CuPy and the CUDA 12 NVRTC wheel (the test
extra), not a GPU.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from backprop.kernels.loader import kernel_signatures, kernel_source, source_names

cupy = pytest.importorskip("cupy")

from nvrtc_compile import compile_for_arch, compile_job, ptxas_usage, without_device  # noqa: E402

# Turing, Ampere (A100, RTX 30), Ada, Hopper, Blackwell (B200, RTX 50); Volta too, which NVRTC 12
# still accepts (deprecated) and CUDA 13 drops.
ARCHS = ("70", "75", "80", "86", "89", "90", "100", "120")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{(file, arch): (cubin bytes or None, NVRTC log)}: every file for every arch, compiled once,
    two processes at a time, into a fresh CuPy cache directory."""
    cache_dir = str(tmp_path_factory.mktemp("cupy-kernel-cache"))
    jobs = [(name, arch, cache_dir) for arch in ARCHS for name in source_names()]
    # spawn, not fork: earlier tests may have started threads (the host emulator's pool).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1), mp_context=context) as pool:
        results = list(pool.map(compile_job, jobs))
    return {"cache_dir": cache_dir, "results": {(n, a): (size, log) for n, a, size, log in results}}


def test_nvrtc_is_cuda_12():
    # A CUDA 13 NVRTC wheel, if installed, is picked up silently and cannot target sm_70.
    from cupy.cuda import nvrtc

    assert nvrtc.getVersion()[0] == 12


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_without_spills(compiled, arch, request):
    table = {}
    for name in source_names():
        size, log = compiled["results"][(name, arch)]
        assert size is not None, f"{name} failed to compile for sm_{arch}:\n{log}"
        usage = ptxas_usage(log)
        expected = set(kernel_signatures(kernel_source(name)))
        assert set(usage) == expected, f"{name} sm_{arch}: ptxas reported {sorted(usage)}"
        spilled = {k: u for k, u in usage.items() if u.spill_stores or u.spill_loads}
        assert not spilled, f"{name} spills registers on sm_{arch}: {spilled}"
        table.update({k: [u.registers, u.stack_frame] for k, u in usage.items()})
    if getattr(request.config, "cache", None) is not None:  # absent under -p no:cacheprovider
        request.config.cache.set(f"backprop/ptxas/sm_{arch}", table)
    print(f"sm_{arch}: {len(table)} kernels, max {max(r for r, _ in table.values())} registers, no spills")


def test_fresh_cache_received_every_binary(compiled):
    """Each compile ran (and was not a hit from an older cache): one cubin per file and arch."""
    entries = [e for e in os.listdir(compiled["cache_dir"]) if e.endswith(".cubin")]
    assert len(entries) == len(ARCHS) * len(source_names())


def test_compile_error_comes_back_with_nvrtc_log(tmp_path):
    from cupy.cuda.compiler import CompileException

    broken = kernel_source("elementwise.cu") + '\nextern "C" __global__ void broken_f32(float* x) { x[0] = undeclared_name; }\n'
    with without_device(str(tmp_path)), pytest.raises(CompileException, match="undeclared_name"):
        compile_for_arch(broken, "90")
