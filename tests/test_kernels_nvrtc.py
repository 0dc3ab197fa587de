"""Proof 1: every .cu compiles through CuPy's own NVRTC path, with CuPy's options, for every GPU
generation we claim, without spilling registers, with the NVRTC of CUDA 12 and of CUDA 13. Needs
no GPU: CUDA 12's compiles run in this (the test extra's) environment, CUDA 13's in one holding
the cuda13 extra (tests/cuda_envs.py), each in worker processes that load the NVRTC they claim
and report the one CuPy used (tests/nvrtc_compile.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backprop.kernels.loader import OPTIONS, kernel_signatures, kernel_source, source_names
from cuda_envs import environment

cupy = pytest.importorskip("cupy")

from nvrtc_compile import compile_for_arch, ptxas_usage, without_device  # noqa: E402

# Turing, Ampere (A100, RTX 30), Ada, Hopper, Blackwell (B200, RTX 50): what both NVRTCs target
# (CUDA 13 dropped Volta and older).
ARCHS = ("75", "80", "86", "89", "90", "100", "120")
NVRTC = (12, 13)
WORKER = Path(__file__).with_name("nvrtc_compile.py")
WORKER_TIMEOUT_S = 600


def _python(major: int) -> str:
    return sys.executable if major == 12 else str(environment("cuda13"))


def _run_worker(major: int, cache_dir: str) -> dict:
    request = {"nvrtc": major, "cache_dir": cache_dir, "options": list(OPTIONS),
               "jobs": [[name, arch, kernel_source(name)] for arch in ARCHS for name in source_names()]}
    done = subprocess.run([_python(major), str(WORKER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S)
    assert done.returncode == 0, f"the NVRTC {major} worker failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{major: the worker's report}: every file for every arch, compiled by each NVRTC into a
    fresh CuPy cache directory, the two NVRTCs at the same time."""
    caches = {major: str(tmp_path_factory.mktemp(f"cupy-cache-nvrtc{major}")) for major in NVRTC}
    environment("cuda13")  # built (or found) before the workers start
    with ThreadPoolExecutor(len(NVRTC)) as pool:
        reports = dict(zip(NVRTC, pool.map(lambda major: _run_worker(major, caches[major]), NVRTC)))
    for major, report in reports.items():
        report["cache_dir"] = caches[major]
        report["results"] = {(n, a): (size, log) for n, a, size, log in report["results"]}
    return reports


@pytest.mark.parametrize("major", NVRTC)
def test_each_compile_used_the_nvrtc_it_claims(compiled, major):
    report = compiled[major]
    assert report["nvrtc"][0] == major, f"asked for NVRTC {major}, CuPy used {report['nvrtc']} ({report['library']})"
    assert report["cupy"].startswith(f"cupy-cuda{major}x "), report["cupy"]


@pytest.mark.parametrize("major", NVRTC)
def test_each_nvrtc_supports_every_architecture_we_claim(compiled, major):
    assert set(map(int, ARCHS)) <= set(compiled[major]["supported_archs"]), compiled[major]["supported_archs"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("major", NVRTC)
def test_every_kernel_compiles_without_spills(compiled, major, arch, request):
    table = {}
    for name in source_names():
        size, log = compiled[major]["results"][(name, arch)]
        assert size is not None, f"{name} failed to compile for sm_{arch} with NVRTC {major}:\n{log}"
        usage = ptxas_usage(log)
        expected = set(kernel_signatures(kernel_source(name)))
        assert set(usage) == expected, f"{name} sm_{arch} NVRTC {major}: ptxas reported {sorted(usage)}"
        spilled = {k: u for k, u in usage.items() if u.spill_stores or u.spill_loads}
        assert not spilled, f"{name} spills registers on sm_{arch} with NVRTC {major}: {spilled}"
        table.update({k: [u.registers, u.stack_frame] for k, u in usage.items()})
    if getattr(request.config, "cache", None) is not None:  # absent under -p no:cacheprovider
        request.config.cache.set(f"backprop/ptxas/nvrtc{major}/sm_{arch}", table)
    print(f"NVRTC {major} sm_{arch}: {len(table)} kernels, max {max(r for r, _ in table.values())} registers, "
          "no spills")


@pytest.mark.parametrize("major", NVRTC)
def test_fresh_cache_received_every_binary(compiled, major):
    """Each compile ran (and was not a hit from an older cache): one cubin per file and arch."""
    entries = [e for e in Path(compiled[major]["cache_dir"]).iterdir() if e.name.endswith(".cubin")]
    assert len(entries) == len(ARCHS) * len(source_names())


def test_compile_error_comes_back_with_nvrtc_log(tmp_path):
    from cupy.cuda.compiler import CompileException

    broken = kernel_source("elementwise.cu") + '\nextern "C" __global__ void broken_f32(float* x) { x[0] = undeclared_name; }\n'
    with without_device(str(tmp_path)), pytest.raises(CompileException, match="undeclared_name"):
        compile_for_arch(broken, "90", OPTIONS)


def test_a_worker_refuses_to_compile_with_another_nvrtc_than_it_claims(tmp_path):
    """The cuda13 environment has no NVRTC 12: asked for it, the worker stops instead of letting
    CuPy compile with the NVRTC it finds."""
    request = {"nvrtc": 12, "cache_dir": str(tmp_path), "options": list(OPTIONS),
               "jobs": [["elementwise.cu", "90", kernel_source("elementwise.cu")]]}
    done = subprocess.run([_python(13), str(WORKER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S)
    assert done.returncode != 0 and "libnvrtc.so.12 is in neither" in done.stderr, done.stderr[-2000:]
